"""Evaluation protocols. Every stored and printed number says which one produced it.

* ``honest`` (default): generation and selection only ever execute the visible tests; exactly one
  final program per task is scored on the hidden tests.
* ``paper``: what the reference implementation does, for reproduction only: attempts are judged
  on the hidden tests while the agents run (a leak on HumanEval, where visible != hidden), and a
  task counts as solved if any attempt passes them.

Scoring on the hidden tests is ``execution.checks.score_hidden``.
"""

from __future__ import annotations

PROTOCOLS = ("honest", "paper")


def rsr(accuracy: float, baseline: float) -> float | None:
    """Relative solve rate: the share of the baseline's failures that the method solves (percent)."""
    if baseline >= 100.0:
        return None
    return 100.0 * (accuracy - baseline) / (100.0 - baseline)
