"""The dynamic signal: execution traces of sampled candidates, as text for the conditional prompt.

Layout (deterministic: candidates sorted by program text, tests in task order):

    ### Runtime Behavior for Candidate Continuations
    <one sentence explaining what follows>

    # Candidate 1
    ```python
    <program>
    ```
    Invocation: f(3, [1, 2])
    Trace:
    ...
    Result: returned 7

We show each candidate's code once and then one trace per visible test (the paper shows the code
per (candidate, test) pair; grouping keeps the same information in fewer tokens).
The whole text respects a token budget: a block that does not fit is first shortened (fewer trace
events), then dropped, and the signal says how many candidates were left out.
"""

from __future__ import annotations

import re
from typing import Callable

from .execution.checks import CandidateRuns
from .execution.render import render_run

HEADER = "### Runtime Behavior for Candidate Continuations"
INTRO = (
    "Below are possible continuations of the code written so far (they may be partial or wrong), "
    "each executed on the visible tests with a line-by-line trace. Use what they reveal to write "
    "the next line of a correct solution."
)
# Marker lines of the signal; the engine stops if the model starts copying them into its code.
MARKERS = (HEADER, "# Candidate ", "Invocation:", "Trace:", "Result: ")
SHORT_TRACE = (8, 4)


def _block(index: int, cand: CandidateRuns, limit: tuple[int, int] | None) -> str:
    parts = [f"# Candidate {index}", "```python", cand.program.rstrip("\n"), "```"]
    for label, result in cand.runs:
        parts.append(render_run(cand.program, result, label, limit=limit))
    return "\n".join(parts)


def build_signal(candidates: list[CandidateRuns], count_tokens: Callable[[str], int], budget: int) -> str | None:
    """Signal text within ``budget`` tokens, or None when no candidate produced a trace."""
    usable = sorted((c for c in candidates if c.traced and c.runs), key=lambda c: c.program)
    if not usable:
        return None
    head = f"{HEADER}\n{INTRO}"
    used = count_tokens(head)
    blocks: list[str] = []
    for cand in usable:
        for limit in (None, SHORT_TRACE):
            block = "\n\n" + _block(len(blocks) + 1, cand, limit)
            cost = count_tokens(block)
            if used + cost <= budget:
                blocks.append(block)
                used += cost
                break
        else:
            break

    def compose(n: int) -> str:
        note = f"\n\n({len(usable) - n} more candidates omitted to fit the budget)" if n < len(usable) else ""
        return head + "".join(blocks[:n]) + note

    # Blocks were counted one by one; the text is counted whole, omission note included, and the
    # last blocks go until it fits: the budget is a bound on what p_dyn carries.
    shown = len(blocks)
    while shown and count_tokens(compose(shown)) > budget:
        shown -= 1
    return compose(shown) if shown else None


_TRACE_LINE = re.compile(r"^\s*(L\d+\s{2,}\S.*\|)|^\s*call [A-Za-z_]\w*\(|^\s*exit [A-Za-z_]\w* \(exception")


def imitates_signal(line: str) -> bool:
    """True when a generated line copies the signal's format instead of writing code.

    The patterns are not valid Python (``call f(n=3)``, ``L5  x = 1  | x=1``) or are our own
    headings, so real code never matches them.
    """
    stripped = line.strip()
    return any(stripped.startswith(m) for m in MARKERS) or bool(_TRACE_LINE.match(line))
