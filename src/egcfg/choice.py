"""How the next token is chosen: greedy, the guidance rule, or a sample; asked of the session.

The engine never looks at next-token arrays itself. It asks the backend session to ``pick`` tokens
(``Session.pick`` / ``Session.step_pick``) by one of three rules:

* ``Pick(seq)``: the argmax of ``seq``'s next-token scores (greedy decoding);
* ``Pick(SOL, dyn=DYN, gamma=g)``: the argmax of the EG-CFG rule over the two branches (guidance.py);
* ``Pick(seq, temperature=t, top_p=p, u=u)``: temperature + nucleus sampling, by inverse CDF at the
  uniform draw ``u`` that the caller took from the attempt's random generator.

Why the rules travel to the backend: on a GPU, next-token arrays are (rows x 150k) floats per step;
a backend that picks on its device (lm/hf.py) sends back only token ids, once per step for every
sequence of every task. Backends whose arrays are on the host anyway (llama.cpp, servers, the test
fakes) use ``pick_on_host``, the reference implementation of the same rules. Sampling by a draw
``u`` taken outside makes a device sampler follow the attempt's seed like the host one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .guidance import guided_argmax


@dataclass(frozen=True)
class Pick:
    """One next token to choose, from the current next-token scores of ``seq`` (and ``dyn``)."""

    seq: int
    dyn: int | None = None       # guided: the conditional branch (``seq`` is the unconditional one)
    gamma: float = 0.0
    temperature: float = 0.0     # > 0: sample (with ``top_p`` and the draw ``u``)
    top_p: float = 1.0
    u: float = 0.0

    @property
    def kind(self) -> str:
        if self.dyn is not None:
            return "guided"
        return "sample" if self.temperature > 0 else "greedy"


def sample_token(logits: np.ndarray, temperature: float, top_p: float, u: float) -> int:
    """Temperature + nucleus sampling at the uniform draw ``u`` (inverse CDF, exactly as numpy's
    ``Generator.choice`` turns its own draw into an index). Only tokens within 25 nats of the best
    can matter (each weighs < 1.4e-11 of it), so those are sorted; the full sort is the fallback
    when they hold less than ``top_p`` of the mass. float32 exp over the vocabulary, float64 sums."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = np.divide(logits, temperature, dtype=np.float32)
    best = z.max()
    if not np.isfinite(best):  # NaN or +inf logits: no distribution to sample from
        return int(np.nanargmax(np.where(np.isnan(z), -np.inf, z)))
    z -= best
    p = np.exp(z)
    total = p.sum(dtype=np.float64)
    if top_p >= 1.0:  # no nucleus: the whole distribution, in token order
        return _inverse_cdf(p.astype(np.float64) / total, u)
    top = np.flatnonzero(z > -25.0)
    order = top[np.argsort(-p[top], kind="stable")]
    cum = np.cumsum(p[order], dtype=np.float64) / total
    if cum[-1] < top_p:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order], dtype=np.float64) / total
    cut = min(int(np.searchsorted(cum, top_p)) + 1, len(order))
    keep = order[:cut]
    q = p[keep].astype(np.float64)
    return int(keep[_inverse_cdf(q / q.sum(), u)])


def _inverse_cdf(p: np.ndarray, u: float) -> int:
    cdf = p.cumsum()
    cdf /= cdf[-1]
    return min(int(cdf.searchsorted(u, side="right")), len(p) - 1)


def pick_on_host(logits: dict[int, np.ndarray], pick: Pick, topk: bool = False, refine=None) -> int:
    """``pick`` over host arrays (``logits[seq]``). ``topk``: the arrays are a server's top-k lists
    (guidance.topk_guided_argmax); ``refine(seqs)`` upgrades argmax-only arrays to distributions,
    asked only where the two branches' argmaxes differ (otherwise a convex mix keeps that token)."""
    kind = pick.kind
    if kind == "greedy":
        return int(np.argmax(logits[pick.seq]))
    if kind == "sample":
        return sample_token(logits[pick.seq], pick.temperature, pick.top_p, pick.u)
    sol, dyn = logits[pick.seq], logits[pick.dyn]
    if pick.gamma == 0.0:
        return int(np.argmax(sol))
    if pick.gamma == 1.0:
        return int(np.argmax(dyn))
    if refine is not None and 0.0 < pick.gamma < 1.0 and np.argmax(sol) != np.argmax(dyn):
        better = refine([pick.seq, pick.dyn])
        sol, dyn = better[pick.seq], better[pick.dyn]
    return guided_argmax(sol, dyn, pick.gamma, topk=topk)


class HostPicks:
    """``pick`` and ``step_pick`` for sessions whose next-token arrays live on the host: the last
    array of each sequence is in ``self._logits`` (TrackedSession keeps it). ``_topk`` and
    ``_refine`` say how a server's top-k arrays are handled (lm/openai_api.py sets them)."""

    _topk = False
    _logits: dict

    def _refine_hook(self):
        return None

    def pick(self, picks: list[Pick]) -> list[int]:
        refine = self._refine_hook()
        return [pick_on_host(self._logits, p, self._topk, refine) for p in picks]

    def step_pick(self, feeds: dict[int, int], picks: list[Pick]) -> list[int]:
        """Append one token to each fed sequence (one batched step), then pick ``picks``."""
        if feeds:
            self.step(feeds)
        return self.pick(picks) if picks else []


__all__ = ["HostPicks", "Pick", "pick_on_host", "sample_token"]
