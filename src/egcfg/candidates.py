"""Candidate continuations: s samples from a forked prefix, each stopping at its own horizon.

At a line boundary the p_sol sequence is forked ``s`` times (the backend shares the cached prefix,
nothing is re-prefilled); all forks advance together, one batched forward pass per token, and each
stops on its own when it has written the current line plus ``d`` more lines, reached the end of the
code block, or used its token budget.
"""

from __future__ import annotations

import numpy as np

from .lm.base import LanguageModel, Sampled, Session

def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Temperature + nucleus sampling. Only tokens within 25 nats of the best can matter (each
    weighs < 1.4e-11 of it), so those are sorted; the full sort is the fallback when they hold
    less than ``top_p`` of the mass. float32 exp over the vocabulary, float64 sums."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = np.divide(logits, temperature, dtype=np.float32)
    best = z.max()
    if not np.isfinite(best):  # NaN or +inf logits: no distribution to sample from
        return int(np.nanargmax(np.where(np.isnan(z), -np.inf, z)))
    z -= best
    p = np.exp(z)
    total = p.sum(dtype=np.float64)
    if top_p >= 1.0:  # no nucleus: the whole distribution
        return int(rng.choice(p.size, p=p / total))
    top = np.flatnonzero(z > -25.0)
    order = top[np.argsort(-p[top], kind="stable")]
    cum = np.cumsum(p[order], dtype=np.float64) / total
    if cum[-1] < top_p:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order], dtype=np.float64) / total
    cut = min(int(np.searchsorted(cum, top_p)) + 1, len(order))
    keep = order[:cut]
    q = p[keep].astype(np.float64)
    return int(keep[rng.choice(len(keep), p=q / q.sum())])


def sample_continuations(model: LanguageModel, session: Session, base_seq: int, seqs: list[int],
                         temperature: float, top_p: float, horizon: int, max_tokens: int,
                         rng: np.random.Generator, base_logits: np.ndarray) -> Sampled:
    """Sample ``len(seqs)`` continuations of ``base_seq``; stop each after ``horizon + 1`` newlines."""
    if model.capabilities.samples:  # a server samples for us (lm/openai_api.py): no logits to sample from here
        return session.sample_continuations(base_seq, len(seqs), temperature, top_p, horizon, max_tokens, rng)
    for seq in seqs:
        session.fork(base_seq, seq)
    texts = {seq: bytearray() for seq in seqs}
    newlines = {seq: 0 for seq in seqs}
    active = {seq: sample_token(base_logits, temperature, top_p, rng) for seq in seqs}
    total = 0
    steps = 0
    try:
        while active:
            feeds = {}
            for seq, tok in active.items():
                total += 1
                if model.is_eog(tok):
                    continue
                piece = model.piece(tok)
                texts[seq] += piece
                newlines[seq] += piece.count(b"\n")
                if newlines[seq] > horizon or b"```" in texts[seq] or steps + 1 >= max_tokens:
                    continue
                feeds[seq] = tok
            if not feeds:
                break
            logits = session.step(feeds)
            steps += 1
            active = {seq: sample_token(logits[seq], temperature, top_p, rng) for seq in feeds}
    finally:
        for seq in seqs:
            session.drop(seq)
    return Sampled(texts=[texts[s].decode("utf-8", "replace") for s in seqs], tokens=total)
