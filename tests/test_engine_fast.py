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

    def sync(self, seq, tokens):
        self.syncs.append((seq, list(tokens)))
        return super().sync(seq, tokens)

    def step(self, feeds):
        self.feeds.append(dict(feeds))
        return super().step(feeds)


class RecordingModel(ScriptedModel):
    def session(self, n_seqs):
        self.last = RecordingSession(self)
        return self.last


def attempt(gamma, sandbox, **cfg):
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
