"""The line-by-line EG-CFG loop for one task, one agent configuration and one gamma.

Sequences in the backend session:
  SOL (0)  p_sol = prompt + code so far                  (unconditional branch)
  DYN (1)  p_dyn = prompt + signal + code so far         (conditional branch)
  2..      candidate forks of SOL, alive only while sampling

Per line (once guidance is active, i.e. from the ``def <entry_point>(`` line on):
  1. fork SOL s times and sample continuations to the horizon  (candidates.py)
  2. make them executable, run them on the visible tests traced (execution/)
  3. build the signal text                                       (signal.py)
  4. re-sync DYN: the backend keeps the prompt prefix and rewrites only from the signal on
  5. decode the line token by token with the guidance rule       (guidance.py)
The signal is fixed within a line. A line without any trace is decoded unguided.

A line boundary is the end of a decoded token whose text holds a newline. Most vocabularies end such
tokens with the newline; some merge it with the next line's indentation ("\n    "). Then the next line
begins inside that token: the refresh happens right after it, and the candidates, the signal's code
and the committed code all carry the partial line (its indentation) forward. Nothing is rewound: the
model keeps the tokens it chose.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import prompts
from .candidates import sample_continuations
from .config import Config
from .execution import program as prog
from .execution.sandbox import RunResult, Sandbox
from .guidance import guided_argmax
from .lm.base import LanguageModel
from .signal import CandidateRuns, build_signal, imitates_signal
from .task import Task

log = logging.getLogger(__name__)

SOL, DYN, FIRST_CANDIDATE = 0, 1, 2
_BLOCK_START = ("def ", "async def ", "class ", "import ", "from ", "@", "#", '"""', "'''")


@dataclass
class Stats:
    executions: int = 0
    refreshes: int = 0
    guided_lines: int = 0
    tokens_decoded: int = 0
    tokens_prefilled: int = 0
    candidate_tokens: int = 0
    seconds_prefill: float = 0.0
    seconds_sampling: float = 0.0
    seconds_execution: float = 0.0
    seconds_guided: float = 0.0
    seconds_total: float = 0.0

    def add(self, other: "Stats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class LineRecord:
    """What --explain shows for one line: candidates, their traces (as the model saw them), the choice."""

    line: int
    candidates: list[str]
    signal: str | None
    chosen: str = ""
    guided: bool = False


@dataclass
class Attempt:
    gamma: float
    code: str
    passed: bool
    tests_passed: int
    tests_total: int
    stop_reason: str
    stats: Stats
    lines: list[LineRecord] = field(default_factory=list)
    test_results: list[dict] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # every token the attempt chose, in order


class _Trace:
    """Runs (program, test) pairs in the sandbox, with a cache shared by all lines of a solve."""

    def __init__(self, sandbox: Sandbox, task: Task, stats: Stats):
        self.sandbox = sandbox
        self.task = task
        self.stats = stats
        self.cache: dict[tuple, RunResult] = {}

    def jobs(self, program: str) -> list[tuple[str, dict]]:
        """(label, sandbox job) for each visible test of the task."""
        task = self.task
        if task.is_io:
            return [(f"Input:\n{t.input.rstrip()[:300]}", {"program": program, "stdin": t.input, "prelude": task.prelude})
                    for t in task.io_tests]
        setup = task.test_setup.strip()
        full = program if not setup else program.rstrip() + "\n\n" + setup + "\n"
        out = []
        for test in task.tests:
            call = prog.invocation_from_assert(test, task.entry_point)
            out.append((f"Invocation: {call}", {"program": full, "invocation": call, "prelude": task.prelude}))
        return out

    @staticmethod
    def key(job: dict) -> tuple:
        return (job["program"], job.get("invocation"), job.get("stdin", ""), job.get("prelude", ""))

    def run(self, programs: list[str]) -> list[CandidateRuns]:
        planned = [(p, self.jobs(p)) for p in programs]
        todo = {}
        for _, jobs in planned:
            for _, job in jobs:
                key = self.key(job)
                if key not in self.cache and key not in todo:
                    todo[key] = job
        if todo:
            start = time.perf_counter()
            results = self.sandbox.run_many(list(todo.values()))
            self.stats.seconds_execution += time.perf_counter() - start
            self.stats.executions += len(results)
            self.cache.update(zip(todo.keys(), results))
        return [
            CandidateRuns(program=p, runs=tuple((label, self.cache[self.key(job)]) for label, job in jobs))
            for p, jobs in planned
        ]


def _io_output_matches(actual: str, expected: str) -> bool:
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]  # noqa: E731
    return norm(actual) == norm(expected)


def verify(code: str, task: Task, sandbox: Sandbox, stats: Stats) -> list[dict]:
    """Run ``code`` on the task's visible tests, untraced. One dict per test.
    (Hidden tests are never run here: scoring lives in bench/protocol.py.)"""
    start = time.perf_counter()
    if task.is_io:
        cases = task.io_tests
        results = sandbox.run_many([{"program": code, "stdin": c.input, "trace": False, "prelude": task.prelude} for c in cases])
        out = [{"test": c.input[:200], "passed": r.ok and _io_output_matches(r.stdout, c.output),
                "status": r.status, "detail": (r.exception or r.stdout[:200])} for c, r in zip(cases, results)]
    else:
        cases = task.tests
        results = sandbox.run_many([{"program": prog.program_with_test(code, t, task.test_setup), "trace": False,
                                     "prelude": task.prelude} for t in cases])
        out = [{"test": t, "passed": r.status == "completed", "status": r.status, "detail": r.exception or ""}
               for t, r in zip(cases, results)]
    stats.executions += len(results)
    stats.seconds_execution += time.perf_counter() - start
    return out


class Generator:
    """One EG-CFG attempt: decode a program for ``task`` at guidance strength ``gamma``."""

    def __init__(self, model: LanguageModel, task: Task, config: Config, sandbox: Sandbox, explain: bool = False):
        self.model = model
        self.task = task
        self.config = config
        self.sandbox = sandbox
        self.explain = explain
        rendered = model.render_chat(prompts.messages(task, config.prompt_style))
        self.start = task.answer_start
        self.parts = prompts.split_prompt(rendered, self.start)
        self.prefix = model.tokenize(self.parts.prefix, special=True, bos=True)
        self.suffix = model.tokenize(self.parts.suffix, special=True)
        self._session = None
        self._def = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(task.entry_point)}\s*\(") if task.entry_point else None

    def session(self):
        """The backend session, kept across the attempts of a solve (same prompt, warm caches)."""
        if self._session is None:
            self._session = self.model.session(FIRST_CANDIDATE + self.config.candidates)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text))

    def run(self, gamma: float, traces: _Trace | None = None, stats: Stats | None = None,
            cancelled: Callable[[], bool] | None = None) -> Attempt:
        """Decode one program at guidance strength ``gamma``. ``cancelled`` is polled at each line
        boundary (another agent already solved the task): the attempt then ends with stop reason
        "cancelled" and is not verified."""
        cfg = self.config
        stats = stats or Stats()
        traces = traces or _Trace(self.sandbox, self.task, stats)
        traces.stats = stats
        self._traces = traces
        has_tests = bool(self.task.tests or self.task.io_tests)
        guide = has_tests and (gamma != 0.0 or cfg.always_refresh)  # nothing to execute: nothing to guide with
        # Seeded per attempt, not per gamma: every attempt reaches its first guided line in the same
        # state (the lines before are greedy), so it samples the same candidates, whose traces are
        # cached and whose signal is already in DYN's cache.
        rng = np.random.default_rng(cfg.seed)
        t_start = time.perf_counter()
        session = self.session()
        # For 0 <= gamma <= 1 the guided score is a convex mix of the two log-probs, so where both
        # branches' argmax agree the rule picks that token: a backend that pays for distributions
        # (a server's top-k) is asked for argmaxes only, and for distributions where they differ.
        session.full_logits = not 0.0 <= gamma <= 1.0
        refine = getattr(session, "refine", None) if 0.0 < gamma < 1.0 else None
        prefilled_before = session.stats.prefilled
        lines: list[LineRecord] = []
        try:
            t0 = time.perf_counter()
            sol_logits = session.sync(SOL, self.prefix + self.suffix)  # reuses the prompt of an earlier attempt
            stats.seconds_prefill += time.perf_counter() - t0
            generated: list[int] = []
            text = bytearray()          # decoded bytes of `generated`
            line_start = 0              # byte offset where the current line starts
            boundary = 0                # byte offset of the last line boundary (end of the token that held a newline)
            # Guidance is on from the def line (stdin programs: from the start; a given signature: at once).
            active = self.task.is_io or bool(self._def and any(self._def.match(l) for l in self.start.split("\n")))
            seen_body = False
            dyn_logits = None           # set while the current line has a signal
            record: LineRecord | None = None
            line_tokens = 0
            stop_reason = "max_tokens"
            cut = None                  # byte offset where the final code ends, if a stop line is dropped
            sol_stale = False           # SOL lags behind `generated` (skipped while gamma == 1)
            while len(generated) < cfg.max_tokens:
                at_boundary = boundary == len(text)
                if at_boundary and cancelled is not None and cancelled():
                    stop_reason = "cancelled"
                    break
                if at_boundary and active and guide and dyn_logits is None:
                    if sol_stale:  # candidates fork from SOL: bring it up to date in one prefill
                        sol_logits, sol_stale = self._catch_up(session, generated, stats), False
                    dyn_logits, record = self._refresh(session, sol_logits, generated, bytes(text), rng, stats, len(lines) + 1)
                    if record is not None:
                        lines.append(record)
                t0 = time.perf_counter()
                dyn_only = dyn_logits is not None and gamma == 1.0
                if sol_stale and not dyn_only:
                    sol_logits, sol_stale = self._catch_up(session, generated, stats), False
                if dyn_only:
                    token = int(np.argmax(dyn_logits))  # gamma 1: the rule reduces to p_dyn alone
                elif dyn_logits is not None:
                    if refine is not None and np.argmax(sol_logits) != np.argmax(dyn_logits):
                        better = refine([SOL, DYN])
                        sol_logits, dyn_logits = better[SOL], better[DYN]
                    token = guided_argmax(sol_logits, dyn_logits, gamma, topk=not self.model.capabilities.full_vocab)
                else:
                    token = int(np.argmax(sol_logits))
                if self.model.is_eog(token):
                    stop_reason = "eos"
                    break
                piece = self.model.piece(token)
                generated.append(token)
                text += piece
                line_tokens += 1
                stop = None
                if b"\n" in piece:
                    active, seen_body, stop, cut = self._completed_lines(text, line_start, active, seen_body)
                    line_start = text.rindex(b"\n") + 1
                    boundary = len(text)  # with a "\n    " token the next line already holds its indentation
                    line_tokens = 0 if line_start == len(text) else 1
                    if record is not None:
                        record.chosen = bytes(text[:line_start]).decode("utf-8", "replace").rstrip("\n").split("\n")[-1]
                        record.guided = dyn_logits is not None
                        if record.guided:
                            stats.guided_lines += 1
                        record = None
                    if stop is None and bytes(text[line_start:]).decode("utf-8", "replace").lstrip().startswith("```"):
                        stop, cut = "fence", line_start  # the token also began the next line, with a fence
                    if stop is None:
                        dyn_logits = None  # the signal is refreshed at the next line boundary
                else:
                    partial = bytes(text[line_start:]).decode("utf-8", "replace")
                    if partial.lstrip().startswith("```"):
                        stop, cut = "fence", line_start
                    elif line_tokens > cfg.max_line_tokens:
                        stop, cut = "line_too_long", line_start
                if stop:
                    stop_reason = stop
                    break
                # At gamma 1 the unconditional branch does not influence the choice: leave SOL behind
                # and catch it up with one batched prefill at the line boundary (cheaper per token).
                feeds = {} if dyn_only else {SOL: token}
                if dyn_logits is not None:
                    feeds[DYN] = token
                out = session.step(feeds) if feeds else {}
                if SOL in out:
                    sol_logits = out[SOL]
                else:
                    sol_stale = True
                if dyn_logits is not None:
                    dyn_logits = out[DYN]
                stats.tokens_decoded += len(feeds)
                stats.seconds_guided += time.perf_counter() - t0
        finally:
            stats.tokens_prefilled += session.stats.prefilled - prefilled_before
        body = bytes(text if cut is None else text[:cut]).decode("utf-8", "replace")
        code = self._final_code(self.start + body)
        tests = verify(code, self.task, self.sandbox, stats) if code.strip() and stop_reason != "cancelled" else []
        n_pass = sum(t["passed"] for t in tests)
        stats.seconds_total += time.perf_counter() - t_start
        # Passing = every visible test passes (vacuously true for a task that shows none).
        passed = (bool(code.strip()) and stop_reason != "cancelled" and n_pass == len(tests)
                  and (bool(tests) or not has_tests))
        return Attempt(gamma=gamma, code=code, passed=passed, tests_passed=n_pass,
                       tests_total=len(tests) or len(self.task.tests) or len(self.task.io_tests),
                       stop_reason=stop_reason, stats=stats, lines=lines if self.explain else [], test_results=tests,
                       tokens=generated)

    def _catch_up(self, session, generated: list[int], stats: Stats) -> np.ndarray:
        t0 = time.perf_counter()
        logits = session.sync(SOL, self.prefix + self.suffix + generated)
        stats.seconds_guided += time.perf_counter() - t0
        return logits

    def _completed_lines(self, text: bytearray, line_start: int, active: bool, seen_body: bool):
        """Scan the line(s) a newline token just completed: guidance switches on at the def line,
        and a line may end the code. Returns (active, seen_body, stop reason or None, cut offset)."""
        offset = line_start
        for line in bytes(text[line_start:text.rindex(b"\n")]).decode("utf-8", "replace").split("\n"):
            if self._def is not None and not active and self._def.match(line):
                active = True
            elif active and not self.task.is_io and line.startswith((" ", "\t")) and line.strip():
                seen_body = True
            reason = self._ends_code(line, active, seen_body)
            if reason:
                return active, seen_body, reason, offset
            offset += len(line.encode("utf-8")) + 1
        return active, seen_body, None, None

    def _ends_code(self, line: str, active: bool, seen_body: bool) -> str | None:
        """Why a completed line ends the program, or None."""
        stripped = line.strip()
        if stripped.startswith("```"):
            return "fence"
        if imitates_signal(line):
            return "imitation"
        if (active and seen_body and not self.task.is_io and stripped
                and not line.startswith((" ", "\t")) and not stripped.startswith(_BLOCK_START)):
            return "function_end"  # a dedent to column 0 that is not another def/import: tests, prints
        return None

    def _final_code(self, body: str) -> str:
        code = prog.strip_fences(body).rstrip() + "\n"
        if prog.parses(code):
            return code
        repaired = prog.repair(code)
        return repaired if repaired is not None else code

    def _refresh(self, session, sol_logits, generated, text: bytes, rng, stats: Stats, line_no: int):
        """Sample candidates, trace them, build the signal and sync DYN. Returns (dyn logits|None, record)."""
        cfg = self.config
        stats.refreshes += 1
        code_so_far = self.start + text.decode("utf-8", "replace")
        t0 = time.perf_counter()
        sampled = sample_continuations(
            self.model, session, SOL, list(range(FIRST_CANDIDATE, FIRST_CANDIDATE + cfg.candidates)),
            cfg.temperature, cfg.top_p, cfg.horizon, cfg.max_line_tokens * (cfg.horizon + 1), rng, sol_logits)
        stats.seconds_sampling += time.perf_counter() - t0
        stats.candidate_tokens += sampled.tokens
        programs = sorted({p for p in (prog.make_candidate(code_so_far, c) for c in sampled.texts) if p})
        runs = self._traces.run(programs) if programs else []
        signal = build_signal(runs, self.count_tokens, cfg.signal_budget)
        record = LineRecord(line=line_no, candidates=programs, signal=signal)
        if signal is None:
            return None, record
        t0 = time.perf_counter()
        dyn = self.prefix + self.model.tokenize(self.parts.signal_segment(signal)) + self.suffix + generated
        before = session.stats.prefilled
        if not session.tokens(DYN):
            session.fork(SOL, DYN)  # share the prompt prefix: DYN prefills only signal + suffix + code
        logits = session.sync(DYN, dyn)
        stats.seconds_guided += time.perf_counter() - t0
        log.debug("line %d: signal of %d tokens, DYN re-prefilled %d tokens", line_no, len(dyn), session.stats.prefilled - before)
        return logits, record
