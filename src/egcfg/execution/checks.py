"""Everything that runs a task's tests, in one place: the three ways egcfg executes model-written
code on a task, each building typed sandbox jobs (``sandbox.Job``).

* ``TracedRuns``: candidate programs run traced on the *visible* tests, for the signal; a cache
  shared by every line and attempt of a solve, so a program+test pair runs once.
* ``check_visible``: a final program run untraced on the visible tests: does the attempt pass?
* ``score_hidden``: a final program run on the *hidden* tests, for scoring only (benchmarks); the
  engine never calls it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..results import Stats
from ..task import Task
from . import program as prog
from .sandbox import Job, RunResult, Sandbox

HIDDEN_TIMEOUT = 10.0  # seconds for all of a task's hidden asserts in one run
# Characters of a stdin/stdout program's output kept when it is judged (traced runs keep the sandbox's
# few thousand: they only feed the signal). Contest answers run to 140,000 characters.
IO_MAX_STDOUT = 1 << 20


@dataclass(frozen=True)
class CandidateRuns:
    """One candidate program and its runs, one per visible test: (label, result)."""

    program: str
    runs: tuple[tuple[str, RunResult], ...]

    @property
    def traced(self) -> bool:
        return any(result.status != "error" for _, result in self.runs)


def io_output_matches(actual: str, expected: str, checker: str = "lines") -> bool:
    """Does a stdin/stdout program's output answer the test? ``checker`` (a Task's):

    * ``lines``: the same lines, trailing whitespace and blank ends ignored;
    * ``tokens``: the same whitespace-separated tokens (Codeforces' default checker, testlib's wcmp:
      line breaks and runs of spaces are not part of an answer);
    * ``float:EPS``: the same number of tokens, each equal or, where both read as numbers, within
      absolute or relative error EPS (testlib's doubleCompare, behind Codeforces' rcmp checkers).
    """
    if checker == "lines":
        norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]  # noqa: E731
        return norm(actual) == norm(expected)
    got, want = actual.split(), expected.split()
    if checker == "tokens" or got == want:
        return got == want
    eps = float(checker.split(":", 1)[1])
    return len(got) == len(want) and all(g == w or _close(g, w, eps) for g, w in zip(got, want))


def _close(token: str, expected: str, eps: float) -> bool:
    """testlib's doubleCompare(expected, result, eps): absolute or relative error at most eps."""
    try:
        result, exp = float(token), float(expected)
    except ValueError:
        return False
    if math.isnan(exp):
        return math.isnan(result)
    if math.isinf(exp):
        return result == exp
    if math.isnan(result) or math.isinf(result):
        return False
    if abs(exp - result) <= eps + 1e-15:
        return True
    low, high = sorted((exp * (1.0 - eps), exp * (1.0 + eps)))
    return result + 1e-15 >= low and result <= high + 1e-15


def io_finished(result: RunResult) -> bool:
    """A stdin/stdout program ended normally: it ran to its end or exited with status 0 (sys.exit(),
    exit(0): how contest solutions often stop; exit code 0 is a judge's normal end). A function task
    that exits has not run its tests, so there it stays a failure (``RunResult.ok``)."""
    return result.ok or (result.status == "exited" and result.exception in
                         ("SystemExit: None", "SystemExit: 0", "SystemExit: False"))


class TracedRuns:
    """Runs (program, visible test) pairs traced in the sandbox, with a cache shared by all lines of a solve."""

    def __init__(self, sandbox: Sandbox, task: Task, stats: Stats, timeout: float | None = None):
        self.sandbox = sandbox
        self.task = task
        self.stats = stats
        self.timeout = timeout  # seconds per traced run (None: the sandbox's); part of each job's cache key
        self.cache: dict[Job, RunResult] = {}

    def jobs(self, program: str) -> list[tuple[str, Job]]:
        """(label, sandbox job) for each visible test of the task."""
        task = self.task
        if task.is_io:
            return [(f"Input:\n{t.input.rstrip()[:300]}", Job(program, stdin=t.input, prelude=task.prelude,
                                                               timeout=self.timeout))
                    for t in task.io_tests]
        setup = task.test_setup.strip()
        full = program if not setup else program.rstrip() + "\n\n" + setup + "\n"
        out = []
        for test in task.tests:
            call = prog.invocation_from_assert(test, task.entry_point)
            out.append((f"Invocation: {call}", Job(full, invocation=call, prelude=task.prelude, timeout=self.timeout)))
        return out

    def run(self, programs: list[str]) -> list[CandidateRuns]:
        planned = [(p, self.jobs(p)) for p in programs]
        todo = {}
        for _, jobs in planned:
            for _, job in jobs:
                if job not in self.cache and job not in todo:
                    todo[job] = job
        if todo:
            start = time.perf_counter()
            results = self.sandbox.run_many(list(todo))
            self.stats.seconds_execution += time.perf_counter() - start
            self.stats.executions += len(results)
            self.cache.update(zip(todo, results))
        return [CandidateRuns(program=p, runs=tuple((label, self.cache[job]) for label, job in jobs))
                for p, jobs in planned]


def check_visible(code: str, task: Task, sandbox: Sandbox, stats: Stats) -> list[dict]:
    """Run ``code`` on the task's visible tests, untraced. One dict per test."""
    start = time.perf_counter()
    if task.is_io:
        cases = task.io_tests
        results = sandbox.run_many([Job(code, stdin=c.input, trace=False, prelude=task.prelude,
                                        max_stdout=IO_MAX_STDOUT) for c in cases])
        out = [{"test": c.input[:200], "passed": io_finished(r) and io_output_matches(r.stdout, c.output, task.checker),
                "status": r.status, "detail": (r.exception or r.stdout[:200])} for c, r in zip(cases, results)]
    else:
        cases = task.tests
        results = sandbox.run_many([Job(prog.program_with_test(code, t, task.test_setup), trace=False,
                                        prelude=task.prelude) for t in cases])
        out = [{"test": t, "passed": r.status == "completed", "status": r.status, "detail": r.exception or ""}
               for t, r in zip(cases, results)]
    stats.executions += len(results)
    stats.seconds_execution += time.perf_counter() - start
    return out


def score_hidden(code: str, task: Task, sandbox: Sandbox, timeout: float | None = None) -> dict:
    """Run ``code`` on the hidden tests (all asserts in one run; stdin tasks one run per case), with
    ``timeout`` seconds per run (default: the task's ``hidden_timeout``, else HIDDEN_TIMEOUT).
    Returns {"passed": bool, "status": str, "detail": str}."""
    if not code.strip():
        return {"passed": False, "status": "no code", "detail": ""}
    timeout = timeout or task.hidden_timeout or HIDDEN_TIMEOUT
    if task.is_io:
        cases = task.hidden_io_tests or task.io_tests
        results = sandbox.run_many([Job(code, stdin=c.input, trace=False, timeout=timeout, prelude=task.prelude,
                                        memory_mb=task.hidden_memory_mb, max_stdout=IO_MAX_STDOUT) for c in cases])
        failed = [(c, r) for c, r in zip(cases, results)
                  if not (io_finished(r) and io_output_matches(r.stdout, c.output, task.checker))]
        if not failed:
            return {"passed": True, "status": "completed", "detail": ""}
        c, r = failed[0]
        if io_finished(r):
            return {"passed": False, "status": "wrong answer", "detail": f"{len(failed)} of {len(cases)} tests; "
                    f"first on input {c.input[:80]!r}: expected {c.output[:80]!r}, got {r.stdout[:80]!r}"}
        return {"passed": False, "status": r.status, "detail": (r.exception or r.stdout)[:300]}
    tests = "\n".join(task.hidden_tests)
    result = sandbox.run_job(Job(prog.program_with_test(code, tests, task.test_setup), trace=False, timeout=timeout,
                                 prelude=task.prelude, memory_mb=task.hidden_memory_mb))
    return {"passed": result.status == "completed", "status": result.status, "detail": (result.exception or "")[:300]}
