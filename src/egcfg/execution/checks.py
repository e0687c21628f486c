"""Everything that runs a task's tests, in one place: the three ways egcfg executes model-written
code on a task, each building typed sandbox jobs (``sandbox.Job``).

* ``TracedRuns``: candidate programs run traced on the *visible* tests, for the signal; a cache
  shared by every line and attempt of a solve, so a program+test pair runs once.
* ``check_visible``: a final program run untraced on the visible tests: does the attempt pass?
* ``score_hidden``: a final program run on the *hidden* tests, for scoring only (benchmarks); the
  engine never calls it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..results import Stats
from ..task import Task
from . import program as prog
from .sandbox import Job, RunResult, Sandbox

HIDDEN_TIMEOUT = 10.0  # seconds for all of a task's hidden asserts in one run


@dataclass(frozen=True)
class CandidateRuns:
    """One candidate program and its runs, one per visible test: (label, result)."""

    program: str
    runs: tuple[tuple[str, RunResult], ...]

    @property
    def traced(self) -> bool:
        return any(result.status != "error" for _, result in self.runs)


def io_output_matches(actual: str, expected: str) -> bool:
    """stdin/stdout tests: the same lines, trailing whitespace and blank ends ignored."""
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]  # noqa: E731
    return norm(actual) == norm(expected)


class TracedRuns:
    """Runs (program, visible test) pairs traced in the sandbox, with a cache shared by all lines of a solve."""

    def __init__(self, sandbox: Sandbox, task: Task, stats: Stats):
        self.sandbox = sandbox
        self.task = task
        self.stats = stats
        self.cache: dict[Job, RunResult] = {}

    def jobs(self, program: str) -> list[tuple[str, Job]]:
        """(label, sandbox job) for each visible test of the task."""
        task = self.task
        if task.is_io:
            return [(f"Input:\n{t.input.rstrip()[:300]}", Job(program, stdin=t.input, prelude=task.prelude))
                    for t in task.io_tests]
        setup = task.test_setup.strip()
        full = program if not setup else program.rstrip() + "\n\n" + setup + "\n"
        out = []
        for test in task.tests:
            call = prog.invocation_from_assert(test, task.entry_point)
            out.append((f"Invocation: {call}", Job(full, invocation=call, prelude=task.prelude)))
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
        results = sandbox.run_many([Job(code, stdin=c.input, trace=False, prelude=task.prelude) for c in cases])
        out = [{"test": c.input[:200], "passed": r.ok and io_output_matches(r.stdout, c.output),
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


def score_hidden(code: str, task: Task, sandbox: Sandbox, timeout: float = HIDDEN_TIMEOUT) -> dict:
    """Run ``code`` on the hidden tests (all asserts in one run; stdin tasks one run per case).
    Returns {"passed": bool, "status": str, "detail": str}."""
    if not code.strip():
        return {"passed": False, "status": "no code", "detail": ""}
    if task.is_io:
        cases = task.hidden_io_tests or task.io_tests
        results = sandbox.run_many([Job(code, stdin=c.input, trace=False, timeout=timeout, prelude=task.prelude)
                                    for c in cases])
        failed = [(c, r) for c, r in zip(cases, results) if not (r.ok and io_output_matches(r.stdout, c.output))]
        if not failed:
            return {"passed": True, "status": "completed", "detail": ""}
        c, r = failed[0]
        return {"passed": False, "status": r.status, "detail": (r.exception or r.stdout)[:300]}
    tests = "\n".join(task.hidden_tests)
    result = sandbox.run_job(Job(prog.program_with_test(code, tests, task.test_setup), trace=False, timeout=timeout,
                                 prelude=task.prelude))
    return {"passed": result.status == "completed", "status": result.status, "detail": (result.exception or "")[:300]}
