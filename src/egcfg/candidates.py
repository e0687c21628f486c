"""Candidate continuations: s samples from a forked prefix, each stopping at its own horizon.

At a line boundary the p_sol sequence is forked ``s`` times (the backend shares the cached prefix,
nothing is re-prefilled); all forks advance together, one batched forward pass per token, and each
stops on its own when it has written the current line plus ``d`` more lines, reached the end of the
code block, or used its token budget.
"""

from __future__ import annotations

import numpy as np

from .choice import Pick
from .lm.base import LanguageModel, Sampled, Session


def sample_continuations(model: LanguageModel, session: Session, base_seq: int, seqs: list[int],
                         temperature: float, top_p: float, horizon: int, max_tokens: int,
                         rng: np.random.Generator) -> Sampled:
    """Sample ``len(seqs)`` continuations of ``base_seq``; stop each after ``horizon + 1`` newlines.
    Each token is picked by the session (choice.py) at a uniform draw from ``rng``, one per token,
    in sequence order: a device backend samples on its device, following the same seed."""
    if model.capabilities.samples:  # a server samples for us (lm/openai_api.py): no logits to sample from here
        return session.sample_continuations(base_seq, len(seqs), temperature, top_p, horizon, max_tokens, rng)
    for seq in seqs:
        session.fork(base_seq, seq)
    texts = {seq: bytearray() for seq in seqs}
    newlines = {seq: 0 for seq in seqs}

    def rules(order: list[int]) -> list[Pick]:
        return [Pick(seq, temperature=temperature, top_p=top_p, u=float(rng.random()) if temperature > 0 else 0.0)
                for seq in order]

    active = dict(zip(seqs, session.pick(rules(seqs))))
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
            order = list(feeds)
            active = dict(zip(order, session.step_pick(feeds, rules(order))))
            steps += 1
    finally:
        for seq in seqs:
            session.drop(seq)
    return Sampled(texts=[texts[s].decode("utf-8", "replace") for s in seqs], tokens=total)
