"""GGUF models through llama-cpp-python's low-level API: the embedded default backend.

One llama.cpp context holds every sequence of a solve in a unified KV cache: p_sol, p_dyn and the
candidate forks. ``seq_cp`` shares a prefix between sequences without copying it, ``seq_rm`` cuts a
suffix, and one ``llama_decode`` call advances several sequences at once (the candidate batch, or
p_sol and p_dyn together during guided decoding).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import EgcfgError
from .base import Capabilities, ModelLifetime, TrackedSession

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # before the import sets its callback

import llama_cpp as L  # noqa: E402

log = logging.getLogger(__name__)
_backend_ready = False
FLASH_ATTN = L.LLAMA_FLASH_ATTN_TYPE_ENABLED


def _quiet_logs() -> None:
    """Route llama.cpp's own log lines through `logging` at DEBUG instead of stderr."""

    @L.llama_log_callback
    def callback(level, text, user_data):  # pragma: no cover - called from C
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _quiet_logs.callback = callback  # keep a reference: C holds only the pointer
    L.llama_log_set(callback, ctypes.c_void_p(0))


class LlamaCppModel(ModelLifetime):
    """A GGUF model loaded once; sessions (contexts) are created per solve."""

    capabilities = Capabilities()

    def __init__(self, path: str | Path, n_ctx: int = 8192, n_threads: int | None = None, n_batch: int = 512,
                 vocab_only: bool = False):
        global _backend_ready
        self.path = Path(path)
        if not self.path.is_file():
            raise EgcfgError(f"model file not found: {self.path}")
        if not _backend_ready:
            _quiet_logs()
            L.llama_backend_init()
            _backend_ready = True
        params = L.llama_model_default_params()
        params.vocab_only = vocab_only  # a tokenizer only (the openai backend): no weights loaded
        self._model = L.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise EgcfgError(f"llama.cpp could not load {self.path} (not a GGUF model?)")
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self.n_ctx = n_ctx
        self.n_batch = min(n_batch, n_ctx)
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.name = self.path.name
        self._pieces: dict[int, bytes] = {}
        self._add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self._template = self._meta("tokenizer.chat_template")

    def close(self) -> None:
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def describe(self) -> dict:
        return {"backend": "llama.cpp", "llama_cpp_python": L.__version__, "model": str(self.path),
                "n_vocab": self.n_vocab, "n_ctx": self.n_ctx, "threads": self.n_threads}

    # -- text <-> tokens -------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = False, bos: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (L.llama_token * n_max)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, n_max, bos and self._add_bos, special)
        if n < 0:
            n_max = -n
            buf = (L.llama_token * n_max)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, n_max, bos and self._add_bos, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(256)
            n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            cached = buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self._vocab, token))

    def eos_id(self) -> int | None:
        eos = L.llama_vocab_eos(self._vocab)
        return None if eos < 0 else int(eos)

    def bos_id(self) -> int | None:
        """The BOS token if this vocabulary starts a text with one (``tokenize(bos=True)``), else None."""
        bos = L.llama_vocab_bos(self._vocab)
        return int(bos) if self._add_bos and bos >= 0 else None

    def special_text(self, token: int) -> str:
        """A token's text with special tokens written out (``<|im_end|>``)."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def render_chat(self, messages: list[dict]) -> str:
        """The model's own chat template (from the GGUF metadata), with the assistant turn opened."""
        if not self._template:
            raise EgcfgError(f"{self.name} has no chat template in its metadata; use an instruct model")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(
            template=self._template,
            eos_token=self.special_text(L.llama_vocab_eos(self._vocab)),
            bos_token=self.special_text(L.llama_vocab_bos(self._vocab)),
            add_generation_prompt=True,
        )
        return formatter(messages=messages).prompt

    def session(self, n_seqs: int) -> "LlamaCppSession":
        return LlamaCppSession(self, n_seqs)


class LlamaCppSession(TrackedSession):
    """One llama.cpp context with ``n_seqs`` sequences sharing a unified KV cache."""

    def __init__(self, model: LlamaCppModel, n_seqs: int):
        super().__init__(model.n_ctx)
        params = L.llama_context_default_params()
        params.n_ctx = model.n_ctx
        params.n_batch = model.n_batch
        params.n_ubatch = model.n_batch
        params.n_seq_max = n_seqs
        params.kv_unified = True  # one cache for all sequences, so seq_cp shares cells, not copies
        params.n_threads = model.n_threads
        params.n_threads_batch = model.n_threads
        # Flash attention on, explicitly (AUTO resolves to it on the CPU): attention with and without
        # it rounds differently (up to 0.4 in a log-prob here), so a reference that must give the same
        # numbers (llama-cpp-python's own Llama or server, in the tests) is started with it too.
        params.flash_attn_type = FLASH_ATTN
        self.model = model
        self._ctx = L.llama_init_from_model(model._model, params)
        if not self._ctx:
            raise EgcfgError("llama.cpp could not create a context (out of memory?)")
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(model.n_batch, 0, 1)
        self.n_seqs = n_seqs

    def close(self) -> None:
        if self._ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._ctx = None

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, seq, want_logits). Raises if llama.cpp refuses the batch."""
        self._check_context(max(pos for _, pos, _, _ in items) + 1)
        b = self._batch
        for i, (tok, pos, seq, want) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if want else 0
        b.n_tokens = len(items)
        rc = L.llama_decode(self._ctx, b)
        self.stats.batches += 1
        if rc != 0:
            why = f"the context of {self.model.n_ctx} tokens is full" if rc == 1 else "invalid batch"
            raise EgcfgError(f"llama.cpp decode failed (code {rc}): {why}")

    def _read_logits(self, index: int) -> np.ndarray:
        ptr = L.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).copy()

    def sync(self, seq: int, tokens: Sequence[int], fetch: bool = True) -> np.ndarray:  # (host arrays: fetch is moot)
        tokens = list(tokens)
        keep = self._plan_sync(seq, tokens)  # (refused before prefilling the part that fits: minutes on a CPU)
        if keep is None:
            return self._logits[seq]
        if not L.llama_memory_seq_rm(self._mem, seq, keep, -1):
            L.llama_memory_seq_rm(self._mem, seq, -1, -1)
            keep = 0
        todo = tokens[keep:]
        n_batch = self.model.n_batch
        for start in range(0, len(todo), n_batch):
            chunk = todo[start:start + n_batch]
            last = start + len(chunk) == len(todo)
            self._decode([(tok, keep + start + i, seq, last and i == len(chunk) - 1) for i, tok in enumerate(chunk)])
        self.stats.prefilled += len(todo)
        return self._synced(seq, tokens, self._read_logits(len(chunk) - 1))  # the last chunk's one position with logits

    def step(self, feeds: dict[int, int]) -> dict[int, np.ndarray]:
        order = sorted(feeds)
        self._decode([(feeds[seq], len(self._tokens[seq]), seq, True) for seq in order])
        self.stats.decoded += len(order)
        return self._stepped(order, feeds, [self._read_logits(i) for i in range(len(order))])

    def fork(self, src: int, dst: int) -> None:
        L.llama_memory_seq_rm(self._mem, dst, -1, -1)
        L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        self._forked(src, dst)

    def drop(self, seq: int) -> None:
        L.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._dropped(seq)
