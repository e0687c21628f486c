"""Render a sandboxed run as the trace text the model reads (and `egcfg trace` prints).

The format is compact and the same every time:

    call f(n=3)
      L2  total = 0                     | total=0
      L3  for i in range(n):            | i=0
      ... 12 events skipped ...
    return 3
    Result: returned 3
"""

from __future__ import annotations

from .sandbox import RunResult
from .tracer import without_addresses

SOURCE_WIDTH = 36
MAX_DEPTH_INDENT = 4


def _source_lines(program: str) -> list[str]:
    return program.split("\n")


def _src(lines: list[str], lineno: int) -> str:
    text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else "?"
    return text if len(text) <= SOURCE_WIDTH else text[: SOURCE_WIDTH - 3] + "..."


def render_events(program: str, events: list, limit: tuple[int, int] | None = None) -> list[str]:
    """Trace lines; ``limit=(head, tail)`` shortens the event list further (for the signal budget)."""
    lines = _source_lines(program)
    if limit is not None:
        head, tail = limit
        real = [e for e in events if e != "skip"]
        skipped_before = sum(1 for e in events if e == "skip")
        if len(real) > head + tail:
            events = real[:head] + ["skip"] + real[len(real) - tail:]
        elif skipped_before:
            events = list(events)
    out = []
    for event in events:
        if event == "skip":
            out.append("  ... events skipped ...")
            continue
        kind, a, b, depth = event
        pad = "  " * min(max(depth - 1, 0), MAX_DEPTH_INDENT)
        if kind == "call":
            out.append(f"{pad}call {a}({b})")
        elif kind == "line":
            src = _src(lines, a)
            out.append(f"{pad}  L{a:<3} {src:<{SOURCE_WIDTH}} | {b}" if b else f"{pad}  L{a:<3} {src}")
        elif kind == "return":
            out.append(f"{pad}return {b}")
        elif kind == "exception":
            out.append(f"{pad}  L{a:<3} {_src(lines, a)}  -> raised {b}")
        elif kind == "unwind":
            out.append(f"{pad}exit {a} (exception propagates)")
    return out


def outcome(result: RunResult) -> str:
    """One line that says how the run ended."""
    status = result.status
    if status == "returned":
        return f"Result: returned {result.value}"
    if status == "completed":
        return "Result: finished"
    if status == "raised":
        return f"Result: raised {result.exception}"
    if status == "timeout":
        return "Result: timed out (possible infinite loop)"
    if status == "exited":
        return f"Result: exited early ({result.exception})"
    if status == "crashed":
        return f"Result: crashed ({result.exception})"
    return f"Result: could not run ({result.exception})"


def render_run(program: str, result: RunResult, label: str, limit: tuple[int, int] | None = None,
               max_output: int = 400) -> str:
    """The trace block for one (program, invocation) run."""
    parts = [label, "Trace:"]
    parts += render_events(program, result.events, limit) or ["  (no traced lines)"]
    parts.append(outcome(result))
    # The output as the signal shows it: without memory addresses a printed object may hold (they
    # change with every process). The run's own stdout, which stdin tests compare, is untouched.
    out = without_addresses(result.stdout.strip("\n"))
    if out:
        if len(out) > max_output:
            out = out[:max_output] + f"... [{len(out) - max_output} more characters]"
        parts.append("Output:\n" + out)
    return "\n".join(parts)
