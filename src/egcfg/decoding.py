"""The decoding of one line: which branches each chosen token is fed to, and how the next is picked.

Within a line the rule is fixed (the signal changes only at line boundaries), so a line is a loop
of the same two moves: pick a token; feed it to the branches that need it and pick the next (one
batched step). ``Rule`` says what each move does in the attempt's current state:

* no signal: greedy on SOL (p_sol);
* a signal: the guidance rule over SOL and DYN; at gamma 1 the rule is DYN alone, so SOL is left
  behind (``stale``) and caught up in one prefill when it is needed again;
* the sampling control: every token sampled from SOL at the agent's temperature and top-p, by one
  uniform draw per pick from the attempt's generator.

A token that completes a line ends the signal: the step after it feeds SOL only and picks greedily
(the next line's refresh may replace that pick).

``Line`` is that loop for one line as a state machine (tokens taken, steps to make), so that it runs
the same wherever it is driven: by ``decode_on_host`` here, one round trip to the session per token;
or inside the transformers backend's batcher (``HFSession.decode_line``), which steps every
session's lines itself and answers once per line. The engine then reads the line's tokens one by one
(lines.py), exactly as if it had chosen them itself; a stop rule that fires inside the line drops
the rest (at most one line of tokens decoded in vain, at the end of an attempt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .choice import Pick
from .errors import ContextFull

SOL, DYN = 0, 1  # the engine's sequences (engine.py)


@dataclass
class Rule:
    """The state of the two branches that decides each move (see the module doc)."""

    gamma: float
    guided: bool = False   # DYN holds the current line's signal
    stale: bool = False    # SOL lags behind the decoded tokens (gamma 1)
    temperature: float = 0.0  # > 0: the sampling control (with ``top_p`` and draws from ``rng``)
    top_p: float = 1.0
    rng: np.random.Generator | None = None

    def needs_sol(self) -> bool:
        """The next pick reads SOL, which lags behind: catch it up first."""
        return self.stale and self.temperature <= 0 and not (self.guided and self.gamma == 1.0)

    def pick(self) -> Pick | None:
        """How the next token is picked (None: SOL lags and nothing else decides). A sampled pick
        takes its uniform draw from ``rng`` now."""
        if self.temperature > 0:
            return Pick(SOL, temperature=self.temperature, top_p=self.top_p, u=float(self.rng.random()))
        if self.guided and self.gamma == 1.0:
            return Pick(DYN)
        if self.stale:
            return None
        return Pick(SOL, dyn=DYN, gamma=self.gamma) if self.guided else Pick(SOL)

    def advance(self, newline: bool) -> tuple[list[int], Pick | None]:
        """After a chosen token (``newline``: it completed a line, which ends the signal): the
        sequences it is fed to, and the pick after that step."""
        if newline:
            self.guided = False
        if self.guided and self.gamma == 1.0:
            self.stale = True  # SOL does not influence the choice: it catches up later, all at once
        feeds = ([] if self.stale else [SOL]) + ([DYN] if self.guided else [])
        return feeds, self.pick()

    def take_state(self, other: "Rule") -> None:
        """Adopt the state a driver elsewhere (the model server) ended with."""
        self.guided, self.stale = other.guided, other.stale
        if self.rng is not None and other.rng is not None:
            self.rng.bit_generator.state = other.rng.bit_generator.state


class Line:
    """One line: from its first token (``first``, picked by the previous step, or picked by
    ``rule.pick()``) to the token that completes the line, which is followed by its advance (fed,
    next picked: ``next``, the next line's first token). Tokens inside the line are followed by
    theirs. The line also ends, with no advance after, where the attempt ends for sure: at an
    end-of-generation token, at a line that opens a Markdown fence (``start``: the line's bytes
    decoded before this line began, its indentation), and after ``limit`` tokens (the engine
    sets it where the attempt's token budget or the line's ends)."""

    def __init__(self, model, rule: Rule, first: int | None, limit: int, start: bytes = b""):
        self.model, self.rule, self.first, self.limit = model, rule, first, limit
        self.text = bytearray(start)  # the line so far
        self.tokens: list[int] = []
        self.fed = {SOL: 0, DYN: 0}   # tokens fed to each branch (each branch gets a prefix of ``tokens``)
        self.steps = 0                 # advances made
        self.next: int | None = None
        self.over = False
        # The line's last step was refused (the sequence is at the model's context): its token is
        # not fed. Harmless where the code ends with this line; the engine raises it otherwise.
        self.unfed: Exception | None = None

    def first_pick(self) -> Pick | None:
        """The pick of the first token, or None when it is known already."""
        if self.first is not None:
            return None
        pick = self.rule.pick()
        if pick is None:
            raise ValueError("the line's first pick reads a stale SOL (catch it up first)")
        return pick

    def take(self, token: int) -> tuple[list[int], Pick | None] | None:
        """A token of the line, chosen. Returns its advance (the sequences to feed it to and the
        pick after), or None when the line ended without one."""
        self.tokens.append(token)
        if self.model.is_eog(token):
            self.over = True
            return None
        piece = self.model.piece(token)
        newline = b"\n" in piece
        if not newline:
            self.text += piece
            # (the fence test of lines.py, on text: str.lstrip also strips non-ASCII spaces)
            if len(self.tokens) >= self.limit or self.text.decode("utf-8", "replace").lstrip().startswith("```"):
                self.over = True  # (lines.py stops the code here: no step after)
                return None
        self.over = newline
        feeds, pick = self.rule.advance(newline)
        if pick is None and not self.over:
            raise ValueError("a step inside a line has nothing to pick")
        for seq in feeds:
            self.fed[seq] += 1
        self.steps += 1
        return feeds, pick

    def refused(self, error: Exception, feeds: list[int]) -> None:
        """The step after the line's last token could not be made (``error``: the context is
        full); the line ends with that token unfed and no next token."""
        for seq in feeds:
            self.fed[seq] -= 1
        self.steps -= 1
        self.next, self.unfed = None, error

    def stepped(self, picked: int | None) -> int | None:
        """The pick after an advance came back: the token to take next (None: the line is over,
        and ``picked`` is the next line's first token)."""
        if self.over:
            self.next = picked
            return None
        return picked


def decode_on_host(session, line: Line) -> None:
    """Drive ``line`` through the session: one ``pick``/``step_pick`` round trip per token."""
    pick = line.first_pick()
    token = line.first if pick is None else session.pick([pick])[0]
    while token is not None:
        move = line.take(token)
        if move is None:
            return
        feeds, pick = move
        try:
            picked = session.step_pick({seq: token for seq in feeds}, [pick] if pick is not None else [])
        except ContextFull as exc:
            if not line.over:
                raise
            line.refused(exc, feeds)  # (the code may end with this line: the engine decides)
            return
        token = line.stepped(picked[0] if picked else None)
