"""Untrusted text on its way to a terminal.

Programs, their outputs, exception messages and traces are written by the model (or by a task file),
and a terminal obeys the control sequences in what it prints: window titles (``ESC ] 0 ; ... BEL``),
colours, cursor moves that hide lines, and, in some terminals, worse. Everything egcfg prints as text
passes through ``safe``, which writes every control character but newline and tab as a visible
escape (``\\x1b``, ``\\r``, ``\\x9b``), and the bidirectional overrides that reorder how source reads
("Trojan Source") as ``\\u202e``. JSON output needs none of this: ``json.dumps`` escapes control
characters itself.
"""

from __future__ import annotations

import re

# C0 controls but \t and \n, DEL, C1 controls, and the bidi embedding/override/isolate characters.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if code == 0x0D:
        return "\\r"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """``text`` with its control characters written out (see the module doc)."""
    return _UNSAFE.sub(_escape, str(text))
