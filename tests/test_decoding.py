"""decoding.py on its own: what one line's loop feeds to which branch and picks, by rule (no model)."""

import numpy as np
import pytest

from egcfg.decoding import DYN, SOL, Line, Rule, decode_on_host
from fakes import EOS, FIRST_SCRIPTED, ScriptedModel, ScriptedSession

SCRIPT = ["    ", "y", " = 2", "\n", "    ", "return", " y", "\n"]


class Recording(ScriptedSession):
    def __init__(self, model):
        super().__init__(model)
        self.calls = []
        self._inner = False

    def pick(self, picks):
        if not self._inner:
            self.calls.append(("pick", None, [p.kind for p in picks]))
        return super().pick(picks)

    def step_pick(self, feeds, picks):
        self.calls.append(("step_pick", sorted(feeds), [p.kind for p in picks]))
        self._inner = True
        try:
            return super().step_pick(feeds, picks)
        finally:
            self._inner = False


def session(guided: bool):
    model = ScriptedModel(SCRIPT)
    s = Recording(model)
    s.sync(SOL, [1, 2, 3])
    if guided:
        s.sync(DYN, [1, 9, 9, 2, 3])
    return model, s


def test_a_guided_line_feeds_both_branches_and_its_newline_step_only_sol():
    model, s = session(guided=True)
    rule = Rule(0.5, guided=True)
    line = Line(model, rule, None, limit=50)
    decode_on_host(s, line)
    assert [model.piece(t) for t in line.tokens] == [b"    ", b"y", b" = 2", b"\n"]
    assert line.next == FIRST_SCRIPTED + 4  # picked greedily after the newline, for the next line
    assert line.fed == {SOL: 4, DYN: 3} and line.steps == 4
    assert s.calls[0] == ("pick", None, ["guided"])
    assert s.calls[1:4] == [("step_pick", [SOL, DYN], ["guided"])] * 3
    assert s.calls[4] == ("step_pick", [SOL], ["greedy"])  # the newline ended the signal
    assert not rule.guided and not rule.stale


def test_gamma_1_leaves_sol_behind_within_the_line():
    model, s = session(guided=True)
    rule = Rule(1.0, guided=True)
    line = Line(model, rule, None, limit=50)
    decode_on_host(s, line)
    assert line.fed == {SOL: 0, DYN: 3}
    assert [c[1] for c in s.calls[1:]] == [[DYN], [DYN], [DYN], []]
    assert line.next is None and rule.stale and rule.needs_sol()  # the next line catches SOL up first
    assert s.tokens(SOL) == [1, 2, 3]


def test_a_known_first_token_is_not_picked_again_and_the_limit_ends_the_line_with_no_step_after():
    model, s = session(guided=False)
    line = Line(model, Rule(0.0), FIRST_SCRIPTED, limit=2)
    decode_on_host(s, line)
    assert line.tokens == [FIRST_SCRIPTED, FIRST_SCRIPTED + 1] and line.next is None
    assert s.calls == [("step_pick", [SOL], ["greedy"])] and line.fed == {SOL: 1, DYN: 0}


@pytest.mark.parametrize("start", [b"", b"  "])
def test_a_line_that_opens_a_fence_ends_the_line_with_no_step_after(start):
    model = ScriptedModel(["``", "`", "\n"])
    s = Recording(model)
    s.sync(SOL, [1, 2, 3])
    line = Line(model, Rule(0.0), None, limit=50, start=start)
    decode_on_host(s, line)
    assert line.tokens == [FIRST_SCRIPTED, FIRST_SCRIPTED + 1] and line.steps == 1 and line.next is None


def test_end_of_generation_ends_the_line_without_a_step():
    model, s = session(guided=False)
    s.sync(SOL, [1] + list(range(FIRST_SCRIPTED, FIRST_SCRIPTED + len(SCRIPT))))  # the script is written
    line = Line(model, Rule(0.0), None, limit=50)
    decode_on_host(s, line)
    assert line.tokens == [EOS] and line.steps == 0 and line.next is None
    assert s.calls == [("pick", None, ["greedy"])]


def test_the_sampling_control_draws_once_per_pick_in_order():
    model, s = session(guided=False)
    rule = Rule(0.0, temperature=0.7, top_p=0.95, rng=np.random.default_rng(5))
    line = Line(model, rule, None, limit=50)
    decode_on_host(s, line)
    picks = len(line.tokens) + 1  # the first token and one after every step
    expected = np.random.default_rng(5)
    expected.random(picks)
    assert rule.rng.random() == expected.random()
    assert all(kind == ["sample"] for _, _, kind in s.calls)


def test_a_stale_sol_must_be_caught_up_before_a_line_that_reads_it():
    model, s = session(guided=False)
    with pytest.raises(ValueError, match="stale SOL"):
        Line(model, Rule(1.0, stale=True), None, limit=5).first_pick()


def test_take_state_adopts_a_copy_s_branches_and_generator():
    import pickle

    rule = Rule(1.0, guided=True, temperature=0.5, rng=np.random.default_rng(1))
    copy = pickle.loads(pickle.dumps(rule))
    copy.guided, copy.stale = False, True
    copy.rng.random(3)
    rule.take_state(copy)
    assert (rule.guided, rule.stale) == (False, True)
    assert rule.rng.random() == copy.rng.random()


def test_a_line_opening_a_fence_after_a_non_ascii_space_also_ends_with_no_step_after():
    model = ScriptedModel(["\xa0", "```", "\n"])
    s = Recording(model)
    s.sync(SOL, [1, 2, 3])
    line = Line(model, Rule(0.0), None, limit=50)
    decode_on_host(s, line)
    assert line.tokens == [FIRST_SCRIPTED, FIRST_SCRIPTED + 1] and line.steps == 1


def test_a_refused_last_step_leaves_its_token_unfed_for_the_engine_to_judge():
    """At the model's context the step after a line's last token is refused: the line still ends
    with its tokens (its code may end there), the token counted as not fed, and the error kept. A
    step refused inside a line is an error at once."""
    from egcfg.errors import ContextFull

    class Full(Recording):
        def step_pick(self, feeds, picks):
            if len(self.seqs[SOL]) >= self.limit:
                raise ContextFull(self.limit, len(self.seqs[SOL]) + 1)
            return super().step_pick(feeds, picks)

    model, _ = session(guided=False)
    s = Full(model)
    s.sync(SOL, [1, 2, 3])
    s.limit = 6  # room for three of the line's four tokens
    line = Line(model, Rule(0.0), None, limit=50)
    decode_on_host(s, line)
    assert [model.piece(t) for t in line.tokens] == [b"    ", b"y", b" = 2", b"\n"]
    assert isinstance(line.unfed, ContextFull) and line.next is None
    assert line.fed == {SOL: 3, DYN: 0} and line.steps == 3
    s = Full(model)
    s.sync(SOL, [1, 2, 3])
    s.limit = 4
    with pytest.raises(ContextFull):
        decode_on_host(s, Line(model, Rule(0.0), None, limit=50))
