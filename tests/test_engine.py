"""EG-CFG end to end on the real embedded model (no mocks): guidance runs for real, and gamma 0
reproduces plain greedy decoding token for token."""

import pytest

from egcfg import Config, solve, task_from_dict
from egcfg.engine import Generator

pytestmark = pytest.mark.model

TINY = task_from_dict({
    "task_id": "tiny/clip",
    "prompt": "Write a function that clips a number to the range [lo, hi].",
    "entry_point": "clip",
    "tests": ["assert clip(5, 0, 3) == 3", "assert clip(-2, 0, 3) == 0", "assert clip(2, 0, 3) == 2"],
})
# (the paper's method: these tests watch the signal and the guided lines, which an accepted
# candidate would cut short)
SMALL = Config(gammas=(1.0,), candidates=2, horizon=1, max_tokens=160, seed=1, accept_candidates=False)


def test_guided_generation_traces_candidates(model, sandbox):
    result = solve(TINY, model=model, config=SMALL, sandbox=sandbox, explain=True)
    st = result.stats
    assert st.refreshes > 0 and st.executions > 0 and st.candidate_tokens > 0
    assert st.guided_lines > 0 and st.tokens_decoded > 0 and st.tokens_prefilled > 0
    lines = result.attempts[0].lines
    assert any(rec.signal and "Invocation: clip(5, 0, 3)" in rec.signal for rec in lines)
    assert any(rec.guided for rec in lines)
    assert "def clip(" in result.code
    # The code is judged by really running it, whatever the verdict.
    assert len(result.final.test_results) == 3
    assert result.passed == all(t["passed"] for t in result.final.test_results)


def test_dyn_branch_is_reprefilled_once_per_line_not_per_token(model, sandbox):
    result = solve(TINY, model=model, config=SMALL, sandbox=sandbox)
    st = result.stats
    gen = Generator(model, TINY, SMALL, sandbox)
    prompt = len(gen.prefix) + len(gen.suffix)
    # Prefill = the prompt once + per refresh at most (signal + suffix + code so far); never per token.
    per_refresh_max = SMALL.signal_budget + len(gen.suffix) + SMALL.max_tokens + 64
    assert st.tokens_prefilled <= prompt + st.refreshes * per_refresh_max
    # Each decode step feeds one token to SOL and, on guided lines, one to DYN.
    assert st.tokens_decoded <= 2 * SMALL.max_tokens


def test_gamma_zero_equals_plain_greedy_token_for_token(model, model_path, sandbox):
    cfg = Config(gammas=(0.0,), candidates=2, horizon=1, max_tokens=96, always_refresh=True, seed=3,
                 accept_candidates=False)
    gen = Generator(model, TINY, cfg, sandbox)
    guided = gen.run(0.0)
    assert guided.stats.refreshes > 0  # the whole guidance path ran, candidates and DYN included
    plain = Generator(model, TINY, cfg.with_(always_refresh=False), sandbox).run(0.0)
    assert plain.stats.refreshes == 0
    assert guided.tokens == plain.tokens

    # And both equal llama-cpp-python's own greedy decoding of the same prompt tokens.
    from llama_cpp import Llama

    ref = Llama(model_path=str(model_path), n_ctx=4096, verbose=False, flash_attn=True)  # as the backend
    expected = []
    for token in ref.generate(gen.prefix + gen.suffix, temp=0.0, top_k=1, repeat_penalty=1.0):
        if len(expected) == len(plain.tokens) or ref.token_eos() == token:
            break
        expected.append(token)
    ref.close()
    assert plain.tokens == expected[: len(plain.tokens)]


def test_io_task_is_solved_with_stdin_traces(model, sandbox):
    task = task_from_dict({
        "task_id": "tiny/io", "prompt": "Read two integers a and b on one line and print a + b.",
        "io_tests": [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6\n"}],
    })
    result = solve(task, model=model, config=SMALL.with_(max_tokens=120), sandbox=sandbox, explain=True)
    assert result.stats.executions > 0
    assert any(rec.signal and "Input:\n1 2" in rec.signal for rec in result.attempts[0].lines)


def test_answer_start_is_continued_and_guided_from_the_first_line(model, sandbox):
    start = 'def double(x):\n    """Return twice x.\n    >>> double(2)\n    4\n    """\n'
    task = task_from_dict({"task_id": "tiny/double", "prompt": start, "entry_point": "double",
                           "tests": ["assert double(2) == 4"], "answer_start": start})
    # (the formats that continue a given signature: auto gives such a task EvalPlus's prompt, whole)
    result = solve(task, model=model, config=SMALL.with_(max_tokens=48, prompt_format="zero-shot"), sandbox=sandbox,
                   explain=True)
    assert result.code.startswith(start)
    lines = result.attempts[0].lines
    assert lines and lines[0].line == 1 and lines[0].candidates  # a refresh before the first body line
    assert all(c.startswith(start) for c in lines[0].candidates)


def test_the_sampling_control_samples_whole_programs_without_guidance(model, sandbox):
    """--method sampling: a gamma > 0 attempt of the schedule is a program sampled at the agent's
    temperature and top-p, with no candidates, traces or signal; reproducible from its seed, and
    other seeds (schedule slots, agents) draw other programs. Gamma 0 stays greedy."""
    from egcfg.solver import _sample_seed
    from egcfg.execution.checks import TracedRuns
    from egcfg.engine import Stats

    cfg = Config(gammas=(0.0, 1.0), temperature=1.2, max_tokens=48, sampling_control=True)
    assert _sample_seed(cfg, 0.0, 0, "a") is None and _sample_seed(cfg.with_(sampling_control=False), 1.0, 1, "a") is None
    assert _sample_seed(cfg, 1.0, 1, "a") != _sample_seed(cfg, 1.0, 1, "b") != _sample_seed(cfg, 1.0, 2, "b")
    gen = Generator(model, TINY, cfg, sandbox)
    try:
        greedy = gen.run(0.0)
        codes = []
        for seed in ((1, 1), (1, 1), (1, 2), (2, 1), (3, 1)):
            stats = Stats()
            attempt = gen.run(1.0, traces=TracedRuns(sandbox, TINY, stats), stats=stats, sample_seed=seed)
            assert stats.refreshes == 0 and stats.candidate_tokens == 0 and stats.guided_lines == 0
            codes.append(attempt.code)
        assert codes[0] == codes[1]  # the same seed, the same program
        assert len(set(codes[1:])) > 1  # other seeds, other programs
        assert gen.run(0.0).code == greedy.code
    finally:
        gen.close()


def test_guidance_works_in_the_evalplus_format(model, sandbox):
    """The evalplus prompt format keeps the method whole: candidates traced, the signal in p_dyn
    (at the end of its one user message), guided lines, a whole program written from scratch."""
    cfg = SMALL.with_(prompt_format="evalplus")
    result = solve(TINY, model=model, config=cfg, sandbox=sandbox, explain=True)
    assert result.stats.refreshes > 0 and result.stats.guided_lines > 0
    assert any(rec.signal and "Invocation: clip(5, 0, 3)" in rec.signal for rec in result.attempts[0].lines)
    assert "def clip(" in result.code
