"""Evaluation protocols. Every stored and printed number says which one produced it.

* ``honest`` (default): generation and selection only ever execute the visible tests; exactly one
  final program per task is scored on the hidden tests.
* ``paper``: what the reference implementation does, for reproduction only: attempts are judged
  on the hidden tests while the agents run (a leak on HumanEval, where visible != hidden), and a
  task counts as solved if any attempt passes them.

Scoring runs all hidden tests of a task in one sandboxed program with a longer timeout.
"""

from __future__ import annotations

from ..engine import _io_output_matches
from ..execution.program import program_with_test
from ..execution.sandbox import Sandbox
from ..task import Task

PROTOCOLS = ("honest", "paper")
HIDDEN_TIMEOUT = 10.0


def score(code: str, task: Task, sandbox: Sandbox, timeout: float = HIDDEN_TIMEOUT) -> dict:
    """Run ``code`` on the hidden tests. Returns {"passed": bool, "status": str, "detail": str}."""
    if not code.strip():
        return {"passed": False, "status": "no code", "detail": ""}
    if task.is_io:
        cases = task.hidden_io_tests or task.io_tests
        results = sandbox.run_many([{"program": code, "stdin": c.input, "trace": False, "timeout": timeout,
                                     "prelude": task.prelude} for c in cases])
        failed = [(c, r) for c, r in zip(cases, results) if not (r.ok and _io_output_matches(r.stdout, c.output))]
        if not failed:
            return {"passed": True, "status": "completed", "detail": ""}
        c, r = failed[0]
        return {"passed": False, "status": r.status, "detail": (r.exception or r.stdout)[:300]}
    tests = "\n".join(task.hidden_tests)
    result = sandbox.run(program_with_test(code, tests, task.test_setup), trace=False, timeout=timeout,
                         prelude=task.prelude)
    return {"passed": result.status == "completed", "status": result.status, "detail": (result.exception or "")[:300]}


def rsr(accuracy: float, baseline: float) -> float | None:
    """Relative solve rate: the share of the baseline's failures that the method solves (percent)."""
    if baseline >= 100.0:
        return None
    return 100.0 * (accuracy - baseline) / (100.0 - baseline)
