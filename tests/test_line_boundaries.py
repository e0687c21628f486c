"""Line boundaries with a fake model (no weights): guidance refreshes at every line whether the
vocabulary ends its newline tokens with "\\n" (Qwen) or merges the newline with the next line's
indentation ("\\n    "), as some GGUF/hf vocabularies do."""

import numpy as np
import pytest

from egcfg import Config, task_from_dict
from egcfg.engine import Generator
from egcfg.lm.base import Capabilities, SessionStats

EOS = 256
FIRST_SCRIPTED = 257  # ids below are bytes (the prompt), ids from here on are the script's pieces


class ScriptedModel:
    """Writes ``script`` token by token whatever the prompt (the signal included): the next token
    is script[k] where k is how many scripted tokens end the sequence, then EOS. Its distribution
    is one-hot enough that sampled candidates follow the script too."""

    name = "scripted"
    capabilities = Capabilities()

    def __init__(self, script: list[str]):
        self.script = [s.encode() for s in script]
        self.n_vocab = FIRST_SCRIPTED + len(self.script)

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        return list(text.encode())

    def piece(self, token: int) -> bytes:
        if token < 256:
            return bytes([token])
        return b"" if token == EOS else self.script[token - FIRST_SCRIPTED]

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def render_chat(self, messages: list[dict]) -> str:
        return "\n".join(m["content"] for m in messages)

    def session(self, n_seqs: int) -> "ScriptedSession":
        return ScriptedSession(self)

    def describe(self) -> dict:
        return {"name": self.name}

    def logits(self, tokens: list[int]) -> np.ndarray:
        k = 0
        while k < len(tokens) and tokens[len(tokens) - 1 - k] >= FIRST_SCRIPTED:
            k += 1
        out = np.full(self.n_vocab, -100.0, dtype=np.float32)
        out[FIRST_SCRIPTED + k if k < len(self.script) else EOS] = 0.0
        return out


class ScriptedSession:
    def __init__(self, model: ScriptedModel):
        self.model = model
        self.seqs: dict[int, list[int]] = {}
        self.stats = SessionStats()
        self.full_logits = True

    def sync(self, seq, tokens):
        self.seqs[seq] = list(tokens)
        self.stats.prefilled += len(tokens)
        return self.model.logits(self.seqs[seq])

    def step(self, feeds):
        out = {}
        for seq, token in feeds.items():
            self.seqs[seq].append(token)
            out[seq] = self.model.logits(self.seqs[seq])
        self.stats.decoded += len(feeds)
        self.stats.batches += 1
        return out

    def fork(self, src, dst):
        self.seqs[dst] = list(self.seqs[src])

    def drop(self, seq):
        self.seqs.pop(seq, None)

    def tokens(self, seq):
        return list(self.seqs.get(seq, []))

    def close(self):
        pass


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
    cfg = Config(gammas=(gamma,), candidates=2, horizon=1, max_tokens=40, seed=1)
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
    cfg = Config(gammas=(1.0,), candidates=2, horizon=1, max_tokens=40, seed=1)
    attempt = Generator(ScriptedModel(script), TASK, cfg, sandbox).run(1.0)
    assert attempt.stop_reason == "fence" and attempt.code == "def triple(x):\n    return x * 3\n"
    assert attempt.tokens[-1] == FIRST_SCRIPTED + 6  # stopped right at the "\n```" token
