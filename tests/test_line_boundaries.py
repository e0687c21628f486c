"""Line boundaries with a fake model (no weights): guidance refreshes at every line whether the
vocabulary ends its newline tokens with "\\n" (Qwen) or merges the newline with the next line's
indentation ("\\n    "), as some GGUF/hf vocabularies do."""

import pytest

from egcfg import Config, task_from_dict
from egcfg.engine import Generator

from fakes import EOS, FIRST_SCRIPTED, ScriptedModel  # noqa: E402,F401


TASK = task_from_dict({"task_id": "fake/triple", "prompt": "Write triple(x).", "entry_point": "triple",
                       "tests": ["assert triple(2) == 6"]})
CODE = "def triple(x):\n    y = x * 2\n    z = y + x\n    return z\n"
# The same program in two vocabularies: newline tokens that end with "\n", and ones that carry the
# next line's indentation (the last newline stands alone: the closing fence is not indented).
ENDS_WITH_NEWLINE = ["def", " triple", "(x):", "\n", "    ", "y", " = x * 2", "\n", "    ", "z", " = y + x",
                     "\n", "    ", "return", " z", "\n", "```"]
MERGED_NEWLINE = ["def", " triple", "(x):", "\n    ", "y", " = x * 2", "\n    ", "z", " = y + x",
                  "\n    ", "return", " z", "\n", "```"]
assert "".join(ENDS_WITH_NEWLINE) == "".join(MERGED_NEWLINE) == CODE + "```"


@pytest.mark.parametrize("gamma", [0.5, 1.0])
@pytest.mark.parametrize("script", [ENDS_WITH_NEWLINE, MERGED_NEWLINE], ids=["ends_with_newline", "merged_newline"])
def test_guidance_refreshes_at_every_line(sandbox, script, gamma):
    cfg = Config(gammas=(gamma,), candidates=2, horizon=1, max_tokens=40, seed=1, accept_candidates=False)
    gen = Generator(ScriptedModel(script), TASK, cfg, sandbox, explain=True)
    attempt = gen.run(gamma)
    assert attempt.code == CODE and attempt.passed and attempt.stop_reason == "fence"
    # Guidance is on from the def line: one refresh before each of the three body lines and one
    # before the closing fence line. Each body line had a signal and was decoded guided.
    assert attempt.stats.refreshes == 4
    assert [rec.line for rec in attempt.lines] == [1, 2, 3, 4]
    assert [rec.chosen for rec in attempt.lines[:3]] == ["    y = x * 2", "    z = y + x", "    return z"]
    assert all(rec.guided and rec.signal and "Invocation: triple(2)" in rec.signal for rec in attempt.lines[:3])
    assert attempt.stats.guided_lines == 3
    # The candidates continue the code as decoded so far, the next line's indentation included.
    assert all(c.startswith("def triple(x):\n    y = x * 2") for c in attempt.lines[0].candidates)
    assert all(c.startswith("def triple(x):\n    y = x * 2\n    z = y + x") for c in attempt.lines[1].candidates)
    gen.close()


def test_a_token_that_begins_the_next_line_with_a_fence_ends_the_code(sandbox):
    script = ["def", " triple", "(x):", "\n    ", "return", " x * 3", "\n```", "\nprint(1)\n"]
    cfg = Config(gammas=(1.0,), candidates=2, horizon=1, max_tokens=40, seed=1, accept_candidates=False)
    attempt = Generator(ScriptedModel(script), TASK, cfg, sandbox).run(1.0)
    assert attempt.stop_reason == "fence" and attempt.code == "def triple(x):\n    return x * 3\n"
    assert attempt.tokens[-1] == FIRST_SCRIPTED + 6  # stopped right at the "\n```" token
