from egcfg.execution.sandbox import RunResult
from egcfg.execution.checks import CandidateRuns
from egcfg.signal import HEADER, build_signal, imitates_signal


def words(text):
    return len(text.split())


def cand(program, value="1", n_events=3):
    events = [["line", 1, f"x={i}", 1] for i in range(n_events)]
    return CandidateRuns(program=program, runs=(("Invocation: f(1)", RunResult(status="returned", value=value, events=events)),))


def test_no_traces_means_no_signal():
    assert build_signal([], words, 1000) is None
    broken = CandidateRuns("x = 1\n", (("Invocation: f()", RunResult(status="error", exception="could not start")),))
    assert build_signal([broken], words, 1000) is None


def test_candidates_in_sorted_order_with_header():
    text = build_signal([cand("def f(x):\n    return 2\n"), cand("def f(x):\n    return 1\n")], words, 10_000)
    assert text.startswith(HEADER)
    assert text.index("return 1") < text.index("return 2")
    assert text.index("# Candidate 1") < text.index("# Candidate 2")


def test_budget_is_respected_and_overflow_is_said():
    cands = [cand(f"def f(x):\n    return {i}\n", n_events=30) for i in range(10)]
    full = build_signal(cands, words, 100_000)
    budget = words(full) // 3
    for b in range(budget - 40, budget + 40):  # every budget, the omission note included
        text = build_signal(cands, words, b)
        assert words(text) <= b, b
        assert "more candidates omitted" in text


def test_long_trace_is_shortened_before_being_dropped():
    big = cand("def f(x):\n    return 0\n", n_events=200)
    full = build_signal([big], words, 100_000)
    text = build_signal([big], words, words(full) // 2)
    assert text is not None and "events skipped" in text


def test_imitation_detector():
    assert imitates_signal("call f(n=3)")
    assert imitates_signal("  L5   total = total + x   | total=6")
    assert imitates_signal("### Runtime Behavior for Candidate Continuations")
    assert imitates_signal("Result: returned 3")
    assert not imitates_signal("    return total")
    assert not imitates_signal("    call_count = 0")


def test_budget_holds_for_the_text_counted_whole():
    """A tokenizer that counts a joined text as more than the sum of its parts (as BPE merges can
    differ at the seams), and the omission note: the bound is checked on the final text."""
    def count(text):
        return len(text.split()) + len(text) // 200

    cands = [cand(f"def f(x):\n    return {i}\n", n_events=10) for i in range(6)]
    for b in range(30, 400, 7):
        text = build_signal(cands, count, b)
        assert text is None or count(text) <= b, b
