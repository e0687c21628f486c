"""The classifier-free guidance rule of EG-CFG, on full-vocabulary log-probabilities.

    logp = log_softmax(z_sol) + gamma * (log_softmax(z_dyn) - log_softmax(z_sol))

``z_sol`` are the logits given the plain prompt (unconditional), ``z_dyn`` those given the prompt
with the execution traces (conditional). gamma = 0 is plain greedy decoding, gamma = 1 decodes from
the conditional prompt alone, gamma > 1 extrapolates away from the unconditional distribution.
The next token is the argmax of the guided scores (greedy selection, as in the paper).

>>> import numpy as np
>>> z_sol = np.array([2.0, 1.0, 0.0]); z_dyn = np.array([0.0, 1.0, 3.0])
>>> int(guided_argmax(z_sol, z_dyn, 0.0)), int(guided_argmax(z_sol, z_dyn, 1.0))
(0, 2)
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax in float64 (the vocabulary is ~150k, float32 sums drift)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max()
    return shifted - np.log(np.exp(shifted).sum())


def guided_logprobs(z_sol: np.ndarray, z_dyn: np.ndarray, gamma: float) -> np.ndarray:
    """Guided scores for every token of the vocabulary."""
    lp_sol = log_softmax(z_sol)
    if gamma == 0.0:
        return lp_sol
    lp_dyn = log_softmax(z_dyn)
    if gamma == 1.0:
        return lp_dyn
    return lp_sol + gamma * (lp_dyn - lp_sol)


def guided_argmax(z_sol: np.ndarray, z_dyn: np.ndarray, gamma: float) -> int:
    """The token greedy guided decoding picks. Ties go to the lowest token id (numpy's argmax).

    The log-softmax normalizers are constants over the vocabulary, so the argmax of the rule is
    the argmax of ``(1 - gamma) * z_sol + gamma * z_dyn``: one fused pass over the raw logits
    instead of two log-softmaxes (this runs once per token per task; ~20x cheaper). gamma 0 and 1
    are exactly the argmax of ``z_sol`` and ``z_dyn``."""
    if gamma == 0.0:
        return int(np.argmax(z_sol))
    if gamma == 1.0:
        return int(np.argmax(z_dyn))
    scores = np.multiply(z_dyn, gamma, dtype=np.float32)
    scores += np.multiply(z_sol, 1.0 - gamma, dtype=np.float32)
    return int(np.argmax(scores))
