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
  5. decode the line with the guidance rule                       (decoding.py, guidance.py)
The signal is fixed within a line. A line without any trace is decoded unguided.

A line boundary is the end of a decoded token whose text holds a newline. Most vocabularies end such
tokens with the newline; some merge it with the next line's indentation ("\n    "). Then the next line
begins inside that token: the refresh happens right after it, and the candidates, the signal's code
and the committed code all carry the partial line (its indentation) forward. Nothing is rewound: the
model keeps the tokens it chose.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import prompts
from .candidates import sample_continuations
from .decoding import DYN, SOL, Line, Rule, decode_on_host
from .config import Config
from .execution import program as prog
from .execution.checks import TracedRuns, check_visible, io_finished
from .execution.sandbox import Sandbox
from .lines import LineTracker
from .lm.base import LanguageModel
from .results import Attempt, LineRecord, Stats
from .signal import build_signal
from .task import Task

log = logging.getLogger(__name__)

FIRST_CANDIDATE = 2  # (SOL 0 and DYN 1: decoding.py)


class _Cancelled(Exception):
    """Raised inside a refresh when ``cancelled`` turns true between its phases: a refresh is the
    longest stretch between line boundaries (seconds on a CPU), so a stop (Ctrl-C, SIGTERM, another
    agent's pass) is seen after the candidates are sampled and after they are run, not only at the
    next line."""


@dataclass
class _Branches:
    """The state of one attempt between lines. ``rule`` (decoding.Rule): whether DYN holds the
    current line's signal, whether SOL lags behind (gamma 1), how tokens are picked. ``next``: the
    token the last step already picked for the state after it (None: pick again), so that a
    decoding step is one round trip to the backend."""

    rule: Rule
    next: int | None = None
    record: LineRecord | None = None
    lines: list[LineRecord] = field(default_factory=list)


class Generator:
    """One EG-CFG attempt: decode a program for ``task`` at guidance strength ``gamma``."""

    def __init__(self, model: LanguageModel, task: Task, config: Config, sandbox: Sandbox, explain: bool = False):
        self.model = model
        self.task = task
        self.config = config
        self.sandbox = sandbox
        self.explain = explain
        rendered = model.render_chat(prompts.messages(task, config.prompt_style, config.prompt_format))
        self.start = prompts.answer_start(task, config.prompt_format)
        self.parts = prompts.split_prompt(rendered, self.start, prompts.opener(task, config.prompt_format))
        self.prefix = model.tokenize(self.parts.prefix, special=True, bos=True)
        self.suffix = model.tokenize(self.parts.suffix, special=True)
        self._session = None
        # --accept-candidates: visible-test verdicts of candidate programs, kept across the lines
        # and attempts of a solve (a program is checked once); the one accepted in this attempt
        self._checked: dict[str, list[dict]] = {}
        self._accepted: str | None = None
        self._cancelled: Callable[[], bool] = lambda: False  # (run's, for the refresh's phases)

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

    def run(self, gamma: float, traces: TracedRuns | None = None, stats: Stats | None = None,
            cancelled: Callable[[], bool] | None = None, sample_seed: tuple[int, ...] | None = None) -> Attempt:
        """Decode one program at guidance strength ``gamma``. ``cancelled`` is polled at each line
        boundary (another agent already solved the task): the attempt then ends with stop reason
        "cancelled" and is not verified. With ``sample_seed`` the program is sampled instead, every
        token at the config's temperature and top-p, with no guidance (the sampling control: the
        draws come from a generator seeded with the config's seed and ``sample_seed``)."""
        cfg = self.config
        stats = stats or Stats()
        traces = traces or TracedRuns(self.sandbox, self.task, stats)
        traces.stats = stats
        traces.timeout = min(cfg.trace_timeout, cfg.run_timeout)  # (a candidate's run, not a program's check)
        self._traces = traces
        self._cancelled = cancelled or (lambda: False)
        has_tests = bool(self.task.tests or self.task.io_tests)
        self._accepted = None
        guide = has_tests and sample_seed is None and (gamma != 0.0 or cfg.always_refresh)  # nothing to execute: nothing to guide with
        # Seeded per attempt, not per gamma: every attempt reaches its first guided line in the same
        # state (the lines before are greedy), so it samples the same candidates, whose traces are
        # cached and whose signal is already in DYN's cache.
        rng = np.random.default_rng(cfg.seed)
        t_start = time.perf_counter()
        session = self.session()
        # For 0 <= gamma <= 1 the guided score is a convex mix of the two log-probs, so where both
        # branches' argmax agree the rule picks that token: a backend that pays for distributions
        # (a server's top-k) is asked for argmaxes only, and for distributions where they differ.
        caps = self.model.capabilities
        if caps.partial_logits:
            session.set_full_logits(not 0.0 <= gamma <= 1.0)
        prefilled_before = session.stats.prefilled
        lines = LineTracker(self.task.entry_point, self.task.is_io, self.start, cfg.max_line_tokens)
        b = _Branches(Rule(gamma))
        if sample_seed is not None:
            b.rule.temperature, b.rule.top_p = cfg.temperature, cfg.top_p
            b.rule.rng = np.random.default_rng([cfg.seed, *sample_seed])
        # the backend decodes a whole line in one round trip if it can (lm/hf.py: in its batcher)
        decode_line = getattr(session, "decode_line", None) or (lambda line: decode_on_host(session, line))
        generated: list[int] = []
        stop_reason, cut = "max_tokens", None
        try:
            t0 = time.perf_counter()
            session.sync(SOL, self.prefix + self.suffix, fetch=False)  # reuses an earlier attempt's prompt
            stats.seconds_prefill += time.perf_counter() - t0
            while len(generated) < cfg.max_tokens and stop_reason == "max_tokens":
                if lines.at_boundary and cancelled is not None and cancelled():
                    stop_reason = "cancelled"
                    break
                if lines.at_boundary and lines.active and guide and not b.rule.guided:
                    try:
                        self._refresh_line(session, b, generated, bytes(lines.text), rng, stats)
                    except _Cancelled:
                        stop_reason = "cancelled"
                        break
                    if self._accepted is not None:  # a candidate passed every visible test
                        stop_reason = "candidate"
                        break
                t0 = time.perf_counter()
                if b.next is None and b.rule.needs_sol():
                    self._catch_up(session, b, generated, stats)
                guided = b.rule.guided
                # (at the limit the attempt ends: its token budget, or an over-long line)
                line = Line(self.model, b.rule, b.next,
                            limit=min(cfg.max_tokens - len(generated), cfg.max_line_tokens + 1 - lines.line_tokens),
                            start=bytes(lines.text[lines.line_start:]))
                decode_line(line)
                b.next = line.next
                stats.tokens_decoded += line.fed[SOL] + line.fed[DYN]
                # the line's tokens, read as if chosen one by one: a stop inside the line drops the rest
                for token in line.tokens:
                    if self.model.is_eog(token):
                        stop_reason = "eos"
                        break
                    generated.append(token)
                    newline, stop = lines.feed(self.model.piece(token))
                    if newline:
                        self._line_done(b, guided, lines, stats)
                    if stop:
                        stop_reason, cut = stop.reason, stop.cut
                        break
                stats.seconds_guided += time.perf_counter() - t0
                if line.unfed is not None and stop_reason == "max_tokens" and len(generated) < cfg.max_tokens:
                    raise line.unfed  # the code goes on past the model's context
        finally:
            stats.tokens_prefilled += session.stats.prefilled - prefilled_before
        body = bytes(lines.text if cut is None else lines.text[:cut]).decode("utf-8", "replace")
        # (an accepted candidate is a finished program already, checked as it is)
        code = self._accepted if self._accepted is not None else self._final_code(self.start + body)
        attempt = self._finish(gamma, code, stop_reason, has_tests, stats)
        stats.seconds_total += time.perf_counter() - t_start
        attempt.lines = b.lines if self.explain else []
        attempt.tokens = generated
        return attempt

    # -- the parts of one attempt ------------------------------------------------------------------
    def _refresh_line(self, session, b: _Branches, generated: list[int], text: bytes, rng, stats: Stats) -> None:
        """At a line boundary with guidance on: new candidates, traces and signal; DYN re-synced."""
        if b.rule.stale:  # candidates fork from SOL: bring it up to date in one prefill
            self._catch_up(session, b, generated, stats)
        b.rule.guided, b.record = self._refresh(session, generated, text, rng, stats, len(b.lines) + 1)
        b.next = None  # picked before the signal existed
        if b.record is not None:
            b.lines.append(b.record)

    @staticmethod
    def _line_done(b: _Branches, guided: bool, lines: LineTracker, stats: Stats) -> None:
        """A token completed a line (decoded with the signal or not): its record (for --explain)
        gets the line as decoded."""
        if b.record is not None:
            b.record.chosen = lines.last_completed_line()
            b.record.guided = guided
            if guided:
                stats.guided_lines += 1
            b.record = None

    def _finish(self, gamma: float, code: str, stop_reason: str, has_tests: bool, stats: Stats) -> Attempt:
        """Check the final program on the visible tests (not a cancelled one) and make the Attempt."""
        if code in self._checked:  # an accepted candidate: checked already
            tests = self._checked[code]
        else:
            tests = check_visible(code, self.task, self.sandbox, stats) if code.strip() and stop_reason != "cancelled" else []
        n_pass = sum(t["passed"] for t in tests)
        # Passing = every visible test passes (vacuously true for a task that shows none).
        passed = (bool(code.strip()) and stop_reason != "cancelled" and n_pass == len(tests)
                  and (bool(tests) or not has_tests))
        return Attempt(gamma=gamma, code=code, passed=passed, tests_passed=n_pass,
                       tests_total=len(tests) or len(self.task.tests) or len(self.task.io_tests),
                       stop_reason=stop_reason, stats=stats, test_results=tests)

    def _catch_up(self, session, b: _Branches, generated: list[int], stats: Stats) -> None:
        """SOL, left behind at gamma 1, brought up to date in one prefill."""
        t0 = time.perf_counter()
        session.sync(SOL, self.prefix + self.suffix + generated, fetch=False)
        b.rule.stale = False
        stats.seconds_guided += time.perf_counter() - t0

    def _final_code(self, body: str) -> str:
        code = prog.strip_fences(body).rstrip() + "\n"
        if prog.parses(code):
            return code
        repaired = prog.repair(code)
        return repaired if repaired is not None else code

    def _refresh(self, session, generated, text: bytes, rng, stats: Stats, line_no: int):
        """Sample candidates, trace them, build the signal and sync DYN. Returns (guided, record)."""
        cfg = self.config
        stats.refreshes += 1
        code_so_far = self.start + text.decode("utf-8", "replace")
        t0 = time.perf_counter()
        programs = self._sample_programs(session, code_so_far, rng, stats)
        stats.seconds_sampling += time.perf_counter() - t0
        if self._cancelled():
            raise _Cancelled
        runs = self._traces.run(programs) if programs else []
        if cfg.accept_candidates:
            self._accepted = self._passing_candidate(runs, stats)
            if self._accepted is not None:  # the attempt ends here: no signal needed
                return False, LineRecord(line=line_no, candidates=programs, signal=None)
        signal = build_signal(runs, self.count_tokens, cfg.signal_budget)
        record = LineRecord(line=line_no, candidates=programs, signal=signal)
        if signal is None:
            return False, record
        if self._cancelled():
            raise _Cancelled
        t0 = time.perf_counter()
        dyn = self.prefix + self.model.tokenize(self.parts.signal_segment(signal)) + self.suffix + generated
        before = session.stats.prefilled
        if not session.tokens(DYN):
            session.fork(SOL, DYN)  # share the prompt prefix: DYN prefills only signal + suffix + code
        session.sync(DYN, dyn, fetch=False)
        stats.seconds_guided += time.perf_counter() - t0
        log.debug("line %d: signal of %d tokens, DYN re-prefilled %d tokens", line_no, len(dyn), session.stats.prefilled - before)
        return True, record

    def _sample_programs(self, session, code_so_far: str, rng, stats: Stats) -> list[str]:
        """The line's candidate programs (distinct, sorted): s continuations sampled from SOL, made
        executable. With --resample-duplicates R, the samples that repeat a program (or make none)
        are drawn again, up to R rounds: at t 0.7 the s samples were often one program."""
        cfg = self.config
        seqs = list(range(FIRST_CANDIDATE, FIRST_CANDIDATE + cfg.candidates))
        programs: set[str] = set()
        want = cfg.candidates
        for round_no in range(cfg.resample_duplicates + 1):
            sampled = sample_continuations(self.model, session, SOL, seqs[:want], cfg.temperature, cfg.top_p,
                                           cfg.horizon, cfg.max_line_tokens * (cfg.horizon + 1), rng)
            stats.candidate_tokens += sampled.tokens
            if round_no:
                stats.candidates_resampled += want
            programs |= {p for p in (prog.make_candidate(code_so_far, c) for c in sampled.texts) if p}
            want = cfg.candidates - len(programs)
            if want <= 0:
                break
        return sorted(programs)

    def _passing_candidate(self, runs, stats: Stats) -> str | None:
        """--accept-candidates (an extension of the method): the first candidate program, in sorted
        order, that passes every visible test, checked as a final program is (check_visible). Only
        candidates whose traced runs all ended normally are checked: the others cannot pass."""
        for cand in runs:
            if not cand.runs or not all(r.ok or (self.task.is_io and io_finished(r)) for _, r in cand.runs):
                continue
            if cand.program not in self._checked:
                self._checked[cand.program] = check_visible(cand.program, self.task, self.sandbox, stats)
            tests = self._checked[cand.program]
            if tests and all(t["passed"] for t in tests):
                return cand.program
        return None
