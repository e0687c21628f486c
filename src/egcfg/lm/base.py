"""What the engine needs from a language model: token sequences with their own KV caches.

The engine thinks in sessions over token sequences, never in strings:

* ``Session.sync(seq, tokens)`` makes sequence ``seq`` hold exactly ``tokens`` (keeping the longest
  common prefix it already has, rewinding and extending the rest) and returns the next-token logits
  (``fetch=False``: they are not needed on the host, so a device backend keeps them there and
  returns None);
* ``Session.step({seq: token, ...})`` appends one token to several sequences in one batch;
* ``Session.pick([Pick, ...])`` chooses tokens from the sequences' current next-token scores
  (greedy, guided or sampled: choice.py), and ``step_pick(feeds, picks)`` steps, then picks, in one
  round trip. The engine decodes through these two only, so a GPU backend sends token ids, never
  logits, to the host (choice.HostPicks is the host implementation every other backend shares);
* ``Session.fork(src, dst)`` makes ``dst`` share ``src``'s prefix (no re-prefill), ``drop`` frees it.

Optional operations, each behind a ``Capabilities`` flag that the engine reads (a backend without
the flag is never asked for the operation):

* ``samples``: ``Session.sample_continuations(...)`` samples candidates itself (a server's own
  sampler), instead of candidates.py sampling from logits;
* ``partial_logits``: ``Session.set_full_logits(False)`` tells the session that only the argmax of
  what sync/step return is used (gamma 0 or 1), so it may skip distributions it pays for;
* ``refines``: ``Session.refine(seqs)`` upgrades argmax-only arrays to distributions at the current
  position (asked where the two branches' argmaxes differ);
* ``full_vocab`` False: next-token arrays hold a server's top-k log-probs, every other token
  ``UNLISTED`` (guidance.py has the rule for them).

``tests/test_lm_contract.py`` runs the same contract test against every backend on the machine and
the scripted fake. A backend that cannot do an operation natively must say so rather than fake it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..choice import HostPicks
from ..errors import ContextFull
from ..guidance import UNLISTED


@dataclass
class SessionStats:
    """Tokens the backend actually ran through the model."""

    prefilled: int = 0        # tokens processed by sync() (prompt and re-prefill work)
    decoded: int = 0          # tokens processed by step() (one per sequence per call)
    batches: int = 0          # forward passes


# Backends that only see a server's top-k log-probs (lm/openai_api.py) return full-vocabulary
# arrays with this value for every token the server did not list. Real logits never come near it.
# (Defined by the guidance rule, which has the rule for such arrays; re-exported here.)


@dataclass
class Sampled:
    """Candidate continuations of one sequence, as text, and the tokens sampling them cost."""

    texts: list[str]
    tokens: int          # tokens sampled over all candidates


@dataclass(frozen=True)
class Capabilities:
    """The optional operations a backend offers (see the module doc); the engine reads each."""

    full_vocab: bool = True       # next-token arrays cover the vocabulary (False: a server's top-k)
    samples: bool = False         # Session.sample_continuations
    partial_logits: bool = False  # Session.set_full_logits
    refines: bool = False         # Session.refine


class Session(Protocol):
    stats: SessionStats

    def sync(self, seq: int, tokens: Sequence[int], fetch: bool = True) -> np.ndarray | None: ...

    def step(self, feeds: dict[int, int]) -> dict[int, np.ndarray]: ...

    def pick(self, picks: list) -> list[int]: ...

    def step_pick(self, feeds: dict[int, int], picks: list) -> list[int]: ...

    def fork(self, src: int, dst: int) -> None: ...

    def drop(self, seq: int) -> None: ...

    def tokens(self, seq: int) -> list[int]: ...

    def close(self) -> None: ...

    # Optional, by capability:
    # def sample_continuations(self, base_seq, n, temperature, top_p, horizon, max_tokens, rng) -> Sampled
    # def set_full_logits(self, full: bool) -> None
    # def refine(self, seqs: list[int]) -> dict[int, np.ndarray]


class Tokenizer(Protocol):
    """Text <-> tokens and the chat template: every model, and the tokenizer objects of the hf and
    openai backends (hf_tokenizer.HFTokenizer, a GGUF vocabulary)."""

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]: ...

    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...

    def eos_id(self) -> int | None: ...

    def render_chat(self, messages: list[dict]) -> str: ...


class LanguageModel(Tokenizer, Protocol):
    name: str
    n_vocab: int
    capabilities: Capabilities

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

    tok: Tokenizer

    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        return self.tok.tokenize(text, special=special, bos=bos)

    def piece(self, token: int) -> bytes:
        return self.tok.piece(token)

    def is_eog(self, token: int) -> bool:
        return self.tok.is_eog(token)

    def eos_id(self) -> int | None:
        return self.tok.eos_id()

    def render_chat(self, messages: list[dict]) -> str:
        return self.tok.render_chat(messages)


class TrackedSession(HostPicks):
    """The bookkeeping every backend session shares, written once: the tokens each sequence holds,
    the next-token array of its last position, the context limit, and what sync may keep. A backend
    calls these around its own model work (``_plan_sync`` before a prefill, ``_synced`` after it;
    ``_stepped`` after a batched step; ``_forked``/``_dropped`` with its cache operations)."""

    def __init__(self, n_ctx: int):
        self.n_ctx = n_ctx
        self.stats = SessionStats()
        self._tokens: dict[int, list[int]] = {}
        self._logits: dict[int, np.ndarray] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - every backend defines its own
        pass

    def tokens(self, seq: int) -> list[int]:
        return list(self._tokens.get(seq, ()))

    def _check_context(self, length: int) -> None:
        if length > self.n_ctx:
            # (refused before the model sees it: llama.cpp aborts the process on positions past its context)
            raise ContextFull(self.n_ctx, length)

    def _plan_sync(self, seq: int, tokens: list[int]) -> int | None:
        """How many cached tokens of ``seq`` a sync to ``tokens`` keeps (None: nothing to run)."""
        if not tokens:
            raise ValueError("cannot sync a sequence to no tokens")
        self._check_context(len(tokens))
        return reusable_prefix(self._tokens.get(seq, []), tokens, seq in self._logits)

    def _synced(self, seq: int, tokens: list[int], logits: np.ndarray) -> np.ndarray:
        self._tokens[seq] = tokens
        self._logits[seq] = logits
        return logits

    def _stepped(self, order: list[int], feeds: dict[int, int], arrays) -> dict[int, np.ndarray]:
        out = {}
        for seq, logits in zip(order, arrays):
            self._tokens[seq].append(feeds[seq])
            out[seq] = self._logits[seq] = logits
        return out

    def _forked(self, src: int, dst: int) -> None:
        self._tokens[dst] = list(self._tokens[src])
        if src in self._logits:
            self._logits[dst] = self._logits[src]
        else:
            self._logits.pop(dst, None)

    def _dropped(self, seq: int) -> None:
        self._tokens.pop(seq, None)
        self._logits.pop(seq, None)


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


__all__ = ["UNLISTED", "Capabilities", "LanguageModel", "Sampled", "Session", "SessionStats", "Tokenizer",
           "TrackedSession", "UsesTokenizer", "common_prefix", "reusable_prefix"]
