"""The engine on the scripted fake model (no weights, a second each): where the signal sits in
p_dyn, and the gamma 0 / gamma 1 shortcuts (what each branch is fed)."""

import pytest

from egcfg import Config, task_from_dict
from egcfg.engine import DYN, SOL, Generator
from fakes import ScriptedModel, ScriptedSession

TASK = task_from_dict({"task_id": "fake/triple", "prompt": "Write triple(x).", "entry_point": "triple",
                       "tests": ["assert triple(2) == 6"]})
SCRIPT = ["def", " triple", "(x):", "\n", "    ", "y", " = x * 2", "\n", "    ", "return", " y + x", "\n", "```"]
CODE = "def triple(x):\n    y = x * 2\n    return y + x\n"


class RecordingSession(ScriptedSession):
    def __init__(self, model):
        super().__init__(model)
        self.syncs, self.feeds = [], []

    def sync(self, seq, tokens, fetch=True):
        self.syncs.append((seq, list(tokens)))
        return super().sync(seq, tokens, fetch)

    def step(self, feeds):
        self.feeds.append(dict(feeds))
        return super().step(feeds)


class RecordingModel(ScriptedModel):
    def session(self, n_seqs):
        self.last = RecordingSession(self)
        return self.last


def attempt(gamma, sandbox, **cfg):
    # (the paper's method unless a test says otherwise: the scripted candidates write the whole
    # function, which --accept-candidates, the default, would return at the first guided line)
    cfg.setdefault("accept_candidates", False)
    model = RecordingModel(SCRIPT)
    gen = Generator(model, TASK, Config(gammas=(gamma,), candidates=2, horizon=1, max_tokens=40, seed=1, **cfg),
                    sandbox, explain=True)
    try:
        return gen, gen.run(gamma), model.last
    finally:
        gen.close()


def text(model_or_gen, tokens) -> str:
    return b"".join(model_or_gen.model.piece(t) for t in tokens).decode()


def test_the_signal_sits_between_the_user_message_and_the_answer(sandbox):
    gen, result, session = attempt(1.0, sandbox)
    assert result.code == CODE and result.passed
    dyn = [tokens for seq, tokens in session.syncs if seq == DYN]
    assert dyn, "p_dyn was never synced"
    for tokens in dyn:
        assert tokens[:len(gen.prefix)] == gen.prefix  # the prompt prefix, shared with p_sol
        rest, suffix = text(gen, tokens[len(gen.prefix):]), text(gen, gen.suffix)
        # prefix + "\n\n" + signal + suffix (the opened answer) + the code decoded so far
        assert rest.startswith("\n\n") and suffix in rest
        cut = rest.rindex(suffix)  # (the signal quotes code blocks too: the last one is the answer)
        signal, code = rest[2:cut], rest[cut + len(suffix):]
        assert "Invocation: triple(2)" in signal and CODE.startswith(code)
    # p_sol never holds a signal
    assert all("Invocation:" not in text(gen, tokens) for seq, tokens in session.syncs if seq == SOL)


def test_gamma_zero_is_plain_greedy_with_no_signal(sandbox):
    _, result, session = attempt(0.0, sandbox)
    assert result.code == CODE and result.stats.refreshes == 0 and result.stats.guided_lines == 0
    assert all(set(feeds) == {SOL} for feeds in session.feeds)  # one branch, one token a step
    assert not any(seq == DYN for seq, _ in session.syncs)


def test_gamma_zero_with_always_refresh_runs_the_guidance_path_and_decodes_the_same(sandbox):
    _, plain, _ = attempt(0.0, sandbox)
    _, refreshed, _ = attempt(0.0, sandbox, always_refresh=True)
    assert refreshed.stats.refreshes > 0 and refreshed.tokens == plain.tokens


def test_gamma_one_decodes_from_dyn_alone_and_leaves_sol_behind(sandbox):
    _, result, session = attempt(1.0, sandbox)
    guided = [feeds for feeds in session.feeds if DYN in feeds]
    assert guided and all(SOL not in feeds for feeds in guided)  # SOL is not fed on guided lines...
    # ...and is caught up in one sync before candidates fork from it at the next line
    assert sum(1 for seq, _ in session.syncs if seq == SOL) >= 2


@pytest.mark.parametrize("gamma", [0.5, 3.0])
def test_other_gammas_feed_both_branches_on_guided_lines(sandbox, gamma):
    _, result, session = attempt(gamma, sandbox)
    guided = [feeds for feeds in session.feeds if DYN in feeds]
    assert guided and all(SOL in feeds for feeds in guided)
    assert result.code == CODE


def test_several_agents_run_in_turn_until_one_passes(sandbox):
    """solve(agents=...): the first agent that passes ends the task; its attempt is the final one."""
    from egcfg import solve
    from egcfg.agents import paper_grid

    agents = paper_grid(3, Config(gammas=(0.0, 1.0), max_tokens=40))
    passing = solve(TASK, model=ScriptedModel(SCRIPT), sandbox=sandbox, agents=agents)
    assert passing.passed and [a.agent for a in passing.attempts] == [agents[0].name]  # greedy passed at once
    assert passing.agent == agents[0].name and passing.to_dict()["agent"] == agents[0].name
    failing_task = task_from_dict({"task_id": "fake/fails", "prompt": "Write triple(x).", "entry_point": "triple",
                                   "tests": ["assert triple(2) == 7"]})
    failing = solve(failing_task, model=ScriptedModel(SCRIPT), sandbox=sandbox, agents=agents)
    assert not failing.passed
    assert [(a.agent, a.gamma) for a in failing.attempts] == [(ag.name, g) for ag in agents for g in (0.0, 1.0)]


def test_solve_agents_flag_errors_are_one_line(egcfg_cli):
    for args, words in ((["--agents", "0"], "--agents must be at least 1"),
                        (["--agents", "2", "--agents-file", "x.json"], "not both"),
                        (["--agents-file", "/nonexistent.json"], "no such file")):
        res = egcfg_cli("solve", "examples/second_smallest.json", *args)
        assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_accept_candidates_ends_the_attempt_with_a_candidate_that_passes_the_visible_tests(sandbox):
    """--accept-candidates (an extension): at the first guided line the sampled candidates already
    write the whole function, which passes the visible test, so it is the attempt's program and
    decoding stops there. Off (the paper), the same program is decoded line by line."""
    _, plain, _ = attempt(0.5, sandbox)
    _, accepted, _ = attempt(0.5, sandbox, accept_candidates=True)
    assert plain.stop_reason != "candidate" and plain.code == CODE
    assert accepted.stop_reason == "candidate" and accepted.passed and accepted.code.strip() == CODE.strip()
    assert len(accepted.tokens) < len(plain.tokens) and accepted.stats.refreshes == 1
    # a candidate that fails a visible test is never accepted: the attempt decodes on as without the flag
    failing = task_from_dict({"task_id": "fake/fails", "prompt": "Write triple(x).", "entry_point": "triple",
                              "tests": ["assert triple(2) == 7"]})
    for accept in (False, True):
        gen = Generator(RecordingModel(SCRIPT), failing, Config(gammas=(0.5,), candidates=2, horizon=1, max_tokens=40,
                                                                seed=1, accept_candidates=accept), sandbox)
        try:
            result = gen.run(0.5)
        finally:
            gen.close()
        assert result.stop_reason != "candidate" and not result.passed and result.code == CODE


def test_resample_duplicates_draws_repeated_candidates_again(sandbox, monkeypatch):
    """--resample-duplicates R: candidates that repeat a program are drawn again, as many as are
    missing, for at most R rounds; a round that brings the s distinct programs ends it."""
    import egcfg.engine as engine
    from egcfg.lm.base import Sampled

    draws = iter([["    return 1\n", "    return 1\n", "    return 2\n"], ["    return 1\n"], ["    return 3\n"]])
    asked = []

    def fake_sample(model, session, base, seqs, *args):
        asked.append(len(seqs))
        texts = next(draws)
        assert len(texts) == len(seqs)
        return Sampled(texts=texts, tokens=10 * len(texts))

    monkeypatch.setattr(engine, "sample_continuations", fake_sample)
    gen = Generator(ScriptedModel(SCRIPT), TASK, Config(candidates=3, resample_duplicates=5), sandbox)
    from egcfg.results import Stats

    stats = Stats()
    programs = gen._sample_programs(None, "def triple(x):\n", None, stats)
    assert asked == [3, 1, 1] and len(programs) == 3
    assert stats.candidates_resampled == 2 and stats.candidate_tokens == 50
    # R 0 (the default, the paper): the s samples as drawn, duplicates and all
    draws = iter([["    return 1\n", "    return 1\n", "    return 2\n"]])
    asked.clear()
    gen = Generator(ScriptedModel(SCRIPT), TASK, Config(candidates=3), sandbox)
    assert len(gen._sample_programs(None, "def triple(x):\n", None, Stats())) == 2 and asked == [3]
    # and on the scripted model (its samples are all one program) the rounds run to R
    monkeypatch.undo()
    _, result, _ = attempt(0.5, sandbox, resample_duplicates=2)
    assert result.code == CODE and result.stats.candidates_resampled == 2 * result.stats.refreshes > 0


def test_a_program_that_ends_at_the_model_context_is_kept_and_one_that_goes_on_is_an_error(sandbox):
    """The step after a line's last token is refused at the model's context: if that line ends the
    code (here a dedent to a print, lines.py's function_end) the program stands; if the code goes
    on, the attempt fails with the context error, as when the engine stepped token by token."""
    from egcfg.errors import ContextFull
    from fakes import ScriptedSession

    script = ["def", " triple", "(x):", "\n", "    ", "return", " x * 3", "\n", "print", "(1)", "\n"]

    class Capped(ScriptedSession):
        def step(self, feeds):
            for seq in feeds:
                if len(self.seqs[seq]) + 1 > self.model.n_ctx:
                    raise ContextFull(self.model.n_ctx, len(self.seqs[seq]) + 1)
            return super().step(feeds)

    class CappedModel(ScriptedModel):
        def session(self, n_seqs):
            return Capped(self)

    for room, ok in ((len(script) - 1, True), (len(script) - 2, False)):
        model = CappedModel(script)
        gen = Generator(model, TASK, Config(gammas=(0.0,), max_tokens=40), sandbox)
        model.n_ctx = len(gen.prefix) + len(gen.suffix) + room
        try:
            if ok:
                result = gen.run(0.0)
                assert result.stop_reason == "function_end" and result.code == "def triple(x):\n    return x * 3\n"
                assert result.passed
            else:
                with pytest.raises(ContextFull):
                    gen.run(0.0)
        finally:
            gen.close()


@pytest.mark.parametrize("stop_at", ["sampling", "execution"])
def test_a_stop_during_a_refresh_ends_the_attempt_before_its_next_phase(sandbox, stop_at):
    # a stop that comes while the candidates are sampled runs none of them; one that comes while
    # they run prefills no signal: the refresh polls ``cancelled`` after each of its phases
    stop = []

    class StoppingSession(RecordingSession):
        def fork(self, src, dst):
            if dst >= 2 and stop_at == "sampling":  # (a candidate's fork: FIRST_CANDIDATE)
                stop.append(1)
            return super().fork(src, dst)

    class StoppingModel(RecordingModel):
        def session(self, n_seqs):
            self.last = StoppingSession(self)
            return self.last

    class StoppingSandbox:
        def run_many(self, jobs):
            if stop_at == "execution":
                stop.append(1)
            return sandbox.run_many(jobs)

        def __getattr__(self, name):
            return getattr(sandbox, name)

    model = StoppingModel(SCRIPT)
    gen = Generator(model, TASK, Config(gammas=(1.0,), candidates=2, horizon=1, max_tokens=40, seed=1,
                                        accept_candidates=False), StoppingSandbox(), explain=True)
    try:
        result = gen.run(1.0, cancelled=lambda: bool(stop))
    finally:
        gen.close()
    assert result.stop_reason == "cancelled"
    assert (result.stats.executions == 0) == (stop_at == "sampling")
    assert not [seq for seq, _ in model.last.syncs if seq == DYN]  # no signal prefilled


class RecordingSandbox:
    """A sandbox that records every job it runs (and runs it in the real one)."""

    def __init__(self, real):
        self.real, self.jobs = real, []
        self.limits = real.limits

    def run_many(self, jobs):
        self.jobs += list(jobs)
        return self.real.run_many(jobs)


@pytest.mark.parametrize("trace_timeout, expected", [(0.3, 0.3), (9.0, 2.0)])
def test_candidates_run_at_the_trace_timeout_and_programs_are_checked_at_the_run_timeout(sandbox, trace_timeout,
                                                                                         expected):
    recording = RecordingSandbox(sandbox)
    gen = Generator(RecordingModel(SCRIPT), TASK, Config(gammas=(1.0,), candidates=2, horizon=1, max_tokens=40, seed=1,
                                                         accept_candidates=False, trace_timeout=trace_timeout,
                                                         run_timeout=2.0), recording)
    try:
        result = gen.run(1.0)
    finally:
        gen.close()
    assert result.code == CODE and result.passed
    traced = [job for job in recording.jobs if job.trace]
    checks = [job for job in recording.jobs if not job.trace]
    assert traced and checks
    assert {job.timeout for job in traced} == {expected}  # (never longer than --timeout)
    assert {job.timeout for job in checks} == {None}      # the sandbox's own: --timeout


def test_trace_timeout_is_checked_in_one_line():
    from egcfg.errors import EgcfgError

    for bad in (0.0, -1.0, float("nan"), 1e9):
        with pytest.raises(EgcfgError, match="--trace-timeout"):
            Config(trace_timeout=bad).validate()
