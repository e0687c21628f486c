"""Test doubles shared by the fast engine tests: a scripted model with no weights."""

import numpy as np

from egcfg.choice import HostPicks
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

    def eos_id(self) -> int:
        return EOS

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


class ScriptedSession(HostPicks):
    def __init__(self, model: ScriptedModel):
        self.model = model
        self.seqs: dict[int, list[int]] = {}
        self._logits: dict[int, np.ndarray] = {}
        self.stats = SessionStats()

    def sync(self, seq, tokens, fetch=True):
        self.seqs[seq] = list(tokens)
        self.stats.prefilled += len(tokens)
        self._logits[seq] = self.model.logits(self.seqs[seq])
        return self._logits[seq]

    def step(self, feeds):
        out = {}
        for seq, token in feeds.items():
            self.seqs[seq].append(token)
            out[seq] = self._logits[seq] = self.model.logits(self.seqs[seq])
        self.stats.decoded += len(feeds)
        self.stats.batches += 1
        return out

    def fork(self, src, dst):
        self.seqs[dst] = list(self.seqs[src])
        self._logits[dst] = self._logits[src]

    def drop(self, seq):
        self.seqs.pop(seq, None)
        self._logits.pop(seq, None)

    def tokens(self, seq):
        return list(self.seqs.get(seq, []))

    def close(self):
        pass
