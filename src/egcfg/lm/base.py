"""What the engine needs from a language model: token sequences with their own KV caches.

The engine thinks in sessions over token sequences, never in strings:

* ``Session.sync(seq, tokens)`` makes sequence ``seq`` hold exactly ``tokens`` (keeping the longest
  common prefix it already has, rewinding and extending the rest) and returns the next-token logits;
* ``Session.step({seq: token, ...})`` appends one token to several sequences in one batch;
* ``Session.fork(src, dst)`` makes ``dst`` share ``src``'s prefix (no re-prefill), ``drop`` frees it.
* A session may offer ``sample_continuations`` (candidates.py uses it instead of its own sampler).

A backend that cannot do one of these natively must say so in ``capabilities`` rather than fake it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass
class SessionStats:
    """Tokens the backend actually ran through the model."""

    prefilled: int = 0        # tokens processed by sync() (prompt and re-prefill work)
    decoded: int = 0          # tokens processed by step() (one per sequence per call)
    batches: int = 0          # forward passes


@dataclass(frozen=True)
class Capabilities:
    fork: bool = True         # shared-prefix copies of a sequence's cache
    rewind: bool = True       # drop a suffix of a sequence's cache
    full_vocab: bool = True   # next-token arrays cover the vocabulary (False: a server's top-k, see guidance)


class Session(Protocol):
    stats: SessionStats
    # Set by the engine per attempt: False when only the argmax of what sync/step return is used
    # (gamma 0 or 1). Backends that pay for distributions (a server's top-k) may then skip them.
    full_logits: bool

    def sync(self, seq: int, tokens: Sequence[int]) -> np.ndarray: ...

    def step(self, feeds: dict[int, int]) -> dict[int, np.ndarray]: ...

    def fork(self, src: int, dst: int) -> None: ...

    def drop(self, seq: int) -> None: ...

    def tokens(self, seq: int) -> list[int]: ...

    def close(self) -> None: ...


class LanguageModel(Protocol):
    name: str
    n_vocab: int
    capabilities: Capabilities

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def render_chat(self, messages: list[dict]) -> str: ...

    def session(self, n_seqs: int) -> Session: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...


class ModelLifetime:
    """``with load_model(...) as model:`` closes the model (weights, threads, connections) at the end."""

    def close(self) -> None:  # pragma: no cover - every backend defines its own
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UsesTokenizer:
    """Text <-> tokens through ``self.tok``, for backends whose tokenizer is an object of its own
    (hf_tokenizer.HFTokenizer, or a GGUF vocabulary for the openai backend)."""

    tok: object

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        return self.tok.tokenize(text, special=special, bos=bos)

    def piece(self, token: int) -> bytes:
        return self.tok.piece(token)

    def is_eog(self, token: int) -> bool:
        return self.tok.is_eog(token)

    def render_chat(self, messages: list[dict]) -> str:
        return self.tok.render_chat(messages)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable_prefix(known: Sequence[int], tokens: Sequence[int], have_logits: bool) -> int | None:
    """How many cached tokens a sync to ``tokens`` keeps; None when the sequence already holds
    exactly ``tokens`` with its logits (nothing to run). The last token always runs again,
    because its logits are what sync returns."""
    keep = common_prefix(known, tokens)
    if keep == len(tokens) == len(known) and have_logits:
        return None
    return min(keep, len(tokens) - 1)


def detokenize(model: LanguageModel, tokens: Sequence[int]) -> str:
    return b"".join(model.piece(t) for t in tokens).decode("utf-8", "replace")


__all__ = ["Capabilities", "LanguageModel", "Session", "SessionStats", "UsesTokenizer", "common_prefix",
           "detokenize", "reusable_prefix"]
