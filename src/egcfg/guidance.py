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

# The value a server-backed session gives every token its top-k list leaves out (lm/base.py re-exports it).
UNLISTED = -1.0e4
_LISTED = UNLISTED / 2


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


def guided_argmax(z_sol: np.ndarray, z_dyn: np.ndarray, gamma: float, topk: bool = False) -> int:
    """The token greedy guided decoding picks. Ties go to the lowest token id (numpy's argmax).

    The log-softmax normalizers are constants over the vocabulary, so the argmax of the rule is
    the argmax of ``(1 - gamma) * z_sol + gamma * z_dyn``: one fused pass over the raw logits
    instead of two log-softmaxes (this runs once per token per task; ~20x cheaper). gamma 0 and 1
    are exactly the argmax of ``z_sol`` and ``z_dyn``. ``topk``: the arrays hold top-k log-probs and
    ``UNLISTED`` elsewhere (``topk_guided_argmax``)."""
    if gamma == 0.0:
        return int(np.argmax(z_sol))
    if gamma == 1.0:
        return int(np.argmax(z_dyn))
    if topk:  # each branch known by its top-k only (a server's log-probs): the union rule below
        return topk_guided_argmax(z_sol, z_dyn, gamma)
    scores = np.multiply(z_dyn, gamma, dtype=np.float32)
    scores += np.multiply(z_sol, 1.0 - gamma, dtype=np.float32)
    return int(np.argmax(scores))


def _floor(listed: np.ndarray) -> float:
    """The log-probability a top-k list implies for a token it does not list: at most the smallest
    listed one, and at most all the mass the list leaves over. We take that upper bound. It is the
    cautious side where the entry is subtracted (p_sol with gamma > 1: guessing it low would reward
    exactly the tokens we know least about); elsewhere it keeps a token one list misses eligible
    at its most likely value, instead of deleting it."""
    rest = 1.0 - float(np.exp(listed.astype(np.float64)).sum())
    return float(min(listed.min(), np.log(max(rest, 1e-12))))


def topk_guided_argmax(z_sol: np.ndarray, z_dyn: np.ndarray, gamma: float) -> int:
    """The guidance rule when each branch is known only by its top-k log-probs (UNLISTED elsewhere).

    Eligible tokens are the union of the two lists; a token missing from one list gets that list's
    floor (``_floor``). The rule is then applied as usual over the union. (The paper's reference code
    keeps only tokens present in both lists, which deletes candidates, and with gamma > 1 can pick the
    least likely one.) Normalising each list over the union would shift all its entries by one
    constant, which changes no argmax, so it is left out."""
    in_sol, in_dyn = z_sol > _LISTED, z_dyn > _LISTED
    union = np.flatnonzero(in_sol | in_dyn)
    if union.size == 0:
        return int(np.argmax(z_sol))
    sol = np.where(in_sol[union], z_sol[union], _floor(z_sol[in_sol]) if in_sol.any() else 0.0)
    dyn = np.where(in_dyn[union], z_dyn[union], _floor(z_dyn[in_dyn]) if in_dyn.any() else 0.0)
    scores = (1.0 - gamma) * sol.astype(np.float64) + gamma * dyn.astype(np.float64)
    return int(union[np.argmax(scores)])
