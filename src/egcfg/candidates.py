"""Candidate continuations: s samples from a forked prefix, each stopping at its own horizon.

At a line boundary the p_sol sequence is forked ``s`` times (the backend shares the cached prefix,
nothing is re-prefilled); all forks advance together, one batched forward pass per token, and each
stops on its own when it has written the current line plus ``d`` more lines, reached the end of the
code block, or used its token budget.

``Sampling`` is that loop as a state machine (picks to make, tokens taken), so that it runs the
same wherever it is driven: here, one round trip to the session per token; or inside the
transformers backend's batcher (``HFSession.sample_forks``), which steps every session's candidates
itself and answers once per refresh. Same draws from the same generator, same stop rule, same text.
"""

from __future__ import annotations

import numpy as np

from .choice import Pick
from .lm.base import LanguageModel, Sampled, Session


class Sampling:
    """The candidates of one refresh: ``seqs`` (any ids: a session's sequences, or a backend's KV
    slots) sampled at ``temperature``/``top_p``, each stopping after ``horizon + 1`` newlines, at
    the end of the code block, at the end of generation or after ``max_tokens`` steps. One uniform
    draw from ``rng`` per picked token, in sequence order."""

    def __init__(self, model, seqs: list[int], temperature: float, top_p: float, horizon: int, max_tokens: int,
                 rng: np.random.Generator):
        self.model, self.seqs = model, list(seqs)
        self.temperature, self.top_p, self.horizon, self.max_tokens = temperature, top_p, horizon, max_tokens
        self.rng = rng
        self.texts = {seq: bytearray() for seq in seqs}
        self.newlines = {seq: 0 for seq in seqs}
        self.total = 0  # tokens sampled, over all candidates
        self.steps = 0  # forwards fed (each advances every live candidate by one token)

    def picks(self, order: list[int]) -> list[Pick]:
        """The picks for ``order`` (every seq first, then the ones fed), drawing their uniforms."""
        t = self.temperature
        return [Pick(seq, temperature=t, top_p=self.top_p, u=float(self.rng.random()) if t > 0 else 0.0)
                for seq in order]

    def rows(self, order: list[int], slot_of) -> list[tuple]:
        """``picks(order)`` as ``torch_picks`` rows (seqs mapped to slots by ``slot_of``), the draws
        taken in one call: the same uniforms in the same order (numpy's ``random(n)`` is ``n``
        calls of ``random()``), without a Pick per row, for the batcher thread, which makes one
        row per live candidate per step."""
        t, top_p = float(self.temperature), float(self.top_p)
        if t > 0:
            return [("sample", slot_of(seq), -1, 0.0, t, top_p, u)
                    for seq, u in zip(order, self.rng.random(len(order)).tolist())]
        return [("greedy", slot_of(seq), -1, 0.0, t, top_p, 0.0) for seq in order]

    def took(self, order: list[int], tokens: list[int], stepped: bool) -> dict[int, int]:
        """The picked ``tokens`` of ``order``; ``stepped``: they were picked after a step (not the
        first picks from the fork). Returns the feeds of the next step: {seq: token} of the
        candidates that go on (none: sampling is over)."""
        if stepped:
            self.steps += 1
        feeds = {}
        for seq, tok in zip(order, tokens):
            self.total += 1
            if self.model.is_eog(tok):
                continue
            piece = self.model.piece(tok)
            self.texts[seq] += piece
            self.newlines[seq] += piece.count(b"\n")
            if self.newlines[seq] > self.horizon or b"```" in self.texts[seq] or self.steps + 1 >= self.max_tokens:
                continue
            feeds[seq] = tok
        return feeds

    def result(self) -> Sampled:
        return Sampled(texts=[self.texts[s].decode("utf-8", "replace") for s in self.seqs], tokens=self.total)


def sample_continuations(model: LanguageModel, session: Session, base_seq: int, seqs: list[int],
                         temperature: float, top_p: float, horizon: int, max_tokens: int,
                         rng: np.random.Generator) -> Sampled:
    """Sample ``len(seqs)`` continuations of ``base_seq``; stop each after ``horizon + 1`` newlines.
    Each token is picked by the session (choice.py) at a uniform draw from ``rng``, one per token,
    in sequence order: a device backend samples on its device, following the same seed."""
    if model.capabilities.samples:  # a server samples for us (lm/openai_api.py): no logits to sample from here
        return session.sample_continuations(base_seq, len(seqs), temperature, top_p, horizon, max_tokens, rng)
    forks = getattr(session, "sample_forks", None)
    if forks is not None:  # the backend drives the loop itself (lm/hf.py: in its batcher)
        return forks(base_seq, seqs, temperature, top_p, horizon, max_tokens, rng)
    return sample_on_host(model, session, base_seq, seqs, temperature, top_p, horizon, max_tokens, rng)


def sample_on_host(model, session: Session, base_seq: int, seqs: list[int], temperature: float, top_p: float,
                   horizon: int, max_tokens: int, rng: np.random.Generator) -> Sampled:
    """The loop driven from here: one pick per token, asked of the session."""
    job = Sampling(model, seqs, temperature, top_p, horizon, max_tokens, rng)
    for seq in seqs:
        session.fork(base_seq, seq)
    try:
        feeds = job.took(seqs, session.pick(job.picks(seqs)), stepped=False)
        while feeds:
            order = list(feeds)
            feeds = job.took(order, session.step_pick(feeds, job.picks(order)), stepped=True)
    finally:
        for seq in seqs:
            session.drop(seq)
    return job.result()
