"""Where lines begin and end in the decoded code, when guidance is on, and when the code is over.

A pure piece of the decoding loop (no model, no sandbox): the engine feeds it each chosen token's
bytes and asks it three things: is this a line boundary (refresh the signal here), is guidance
active yet (from the ``def <entry_point>(`` line on; stdin programs at once), and has the code
ended (the stop rules below). ``tests/test_lines.py`` tests it on its own.

A line boundary is the end of a token whose text holds a newline. Most vocabularies end such tokens
with the newline; some merge it with the next line's indentation ("\\n    "): then the next line
begins inside that token, and the boundary is right after it.

Stop rules, each with its reason:
  fence           a line (or the start of one) that opens a Markdown fence (```)
  imitation       a line that imitates the signal's trace format (the model copying its input)
  function_end    after the function's body, a dedent to column 0 that is not a def, class,
                  import, decorator, comment or docstring (tests, prints, examples)
  line_too_long   more than ``max_line_tokens`` tokens without a newline
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .signal import imitates_signal

_BLOCK_START = ("def ", "async def ", "class ", "import ", "from ", "@", "#", '"""', "'''")


@dataclass(frozen=True)
class Stop:
    reason: str
    cut: int  # byte offset where the final code ends (the stopping line is dropped)


class LineTracker:
    """The decoded bytes of one attempt and the line state the engine's decisions depend on."""

    def __init__(self, entry_point: str | None, is_io: bool, answer_start: str, max_line_tokens: int):
        self.is_io = is_io
        self.max_line_tokens = max_line_tokens
        self._def = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(") if entry_point else None
        self.text = bytearray()   # decoded bytes so far
        self.line_start = 0       # byte offset where the current line starts
        self.boundary = 0         # byte offset of the last line boundary
        self.line_tokens = 0      # tokens of the current line so far
        self.seen_body = False    # an indented line of the function was completed
        # Guidance is on from the def line: stdin programs from the start, a given signature at once.
        self.active = is_io or bool(self._def and any(self._def.match(line) for line in answer_start.split("\n")))

    @property
    def at_boundary(self) -> bool:
        """Nothing was decoded since the last line boundary (or since the start)."""
        return self.boundary == len(self.text)

    def last_completed_line(self) -> str:
        return bytes(self.text[:self.line_start]).decode("utf-8", "replace").rstrip("\n").split("\n")[-1]

    def feed(self, piece: bytes) -> tuple[bool, Stop | None]:
        """Add one token's bytes. Returns (whether it completed a line, the stop if the code ended)."""
        self.text += piece
        self.line_tokens += 1
        if b"\n" in piece:
            stop = self._completed_lines()
            self.line_start = self.text.rindex(b"\n") + 1
            self.boundary = len(self.text)  # with a "\n    " token the next line already holds its indentation
            self.line_tokens = 0 if self.line_start == len(self.text) else 1
            if stop is None and self._current_line().lstrip().startswith("```"):
                stop = Stop("fence", self.line_start)  # the token also began the next line, with a fence
            return True, stop
        if self._current_line().lstrip().startswith("```"):
            return False, Stop("fence", self.line_start)
        if self.line_tokens > self.max_line_tokens:
            return False, Stop("line_too_long", self.line_start)
        return False, None

    def _current_line(self) -> str:
        return bytes(self.text[self.line_start:]).decode("utf-8", "replace")

    def _completed_lines(self) -> Stop | None:
        """Scan the line(s) a newline token just completed: guidance switches on at the def line,
        and a line may end the code."""
        offset = self.line_start
        for line in bytes(self.text[self.line_start:self.text.rindex(b"\n")]).decode("utf-8", "replace").split("\n"):
            if self._def is not None and not self.active and self._def.match(line):
                self.active = True
            elif self.active and not self.is_io and line.startswith((" ", "\t")) and line.strip():
                self.seen_body = True
            reason = self._ends_code(line)
            if reason:
                return Stop(reason, offset)
            offset += len(line.encode("utf-8")) + 1
        return None

    def _ends_code(self, line: str) -> str | None:
        """Why a completed line ends the program, or None."""
        stripped = line.strip()
        if stripped.startswith("```"):
            return "fence"
        if imitates_signal(line):
            return "imitation"
        if (self.active and self.seen_body and not self.is_io and stripped
                and not line.startswith((" ", "\t")) and not stripped.startswith(_BLOCK_START)):
            return "function_end"  # a dedent to column 0 that is not another def/import: tests, prints
        return None
