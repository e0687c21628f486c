"""Transformers models (CPU or CUDA), with a slot KV cache and batching across sessions.

Why not ``model.generate`` or HF's cache classes: EG-CFG needs many short-lived sequences per task
(p_sol, p_dyn, s candidate forks) that share prefixes, rewind, and advance at different lengths,
and on a GPU it needs many tasks decoding in the same forward pass. So this backend keeps its own
KV cache: one tensor of *slots* ``(layers, 2, slots, kv_heads, capacity, head_dim)``; a sequence
owns a slot, a fork is one slice copy, a rewind only moves the sequence's length. The model's own
modules (embedding, norms, projections, rotary embedding, MLP, head) do the math; only attention
over the slots is ours (``scaled_dot_product_attention`` with a per-row length mask).

Batching across sessions: every session (one solve, in its own thread) hands its work to one
``_Batcher`` thread, which waits a moment for the other sessions' requests and runs all pending
one-token steps as one forward pass (prefills run on their own, in chunks). One session alone
pays a thread hop per call, nothing else.

Logits stay on the device: each slot's next-token logits live in one (slots x vocabulary) table,
and the sessions' ``pick``/``step_pick`` choose tokens there for every session of the batch at once
(torch_picks.py). Only token ids come back, once per step; prefills need no host sync at all.

Models: a GGUF file (converted once by transformers, dequantized, and cached as safetensors under
the egcfg cache), a local transformers folder, or a hub id where a network exists. Decoder
architectures of the Llama family (Llama, Qwen2, Qwen3, Mistral without sliding window).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import EgcfgError
from . import model_servers
from .base import Capabilities, ModelLifetime, Sampled, TrackedSession, UsesTokenizer
from .hf_batcher import PREFILL_CHUNK, Batcher, Request
from .hf_graphs import Graphs
from .hf_tokenizer import HFTokenizer
from . import torch_picks

log = logging.getLogger(__name__)

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the install
    raise EgcfgError("the hf backend needs torch and transformers: pip install 'egcfg[hf]'") from exc

SUPPORTED = {"llama", "qwen2", "qwen3", "mistral"}
# Padded tokens per batched prefill forward (rows x longest row); on CUDA 4096. A decode step may
# wait for one prefill forward (hf_batcher.py), so this bounds that wait too: on the H200 a graph
# of 512 tokens took 5 ms and one of 4096 22 ms (~190k tokens/s), while the grid run prefilled 9-30k/s.
PREFILL_BUDGET = 2048
MAX_ROWS = 256            # one-token rows per decode forward; on CUDA 1024
ON_DEVICE = np.zeros(0, dtype=np.float32)  # TrackedSession's logits marker: they are in the device table


def converted_dir(gguf: Path) -> Path:
    """Where a GGUF file's transformers conversion is cached (keyed by the file's path and size)."""
    from ..models import cache_dir

    key = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "hf" / f"{gguf.stem}-{key}"


def _convert(gguf: Path) -> Path:
    """Dequantize a GGUF model with transformers once and keep it as float16 safetensors (loading
    a GGUF file takes a minute and rebuilds the tokenizer; a saved folder loads in seconds)."""
    out = converted_dir(gguf)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Worker processes of one run start together: one converts, the others wait and reuse it.
    # (filelock comes with huggingface_hub, which transformers needs anyway.)
    from filelock import FileLock

    with FileLock(str(out.with_name(out.name + ".lock"))):
        _convert_locked(gguf, out)
    return out


def _convert_locked(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file() and (out / ".complete").is_file():
        return
    log.info("converting %s for transformers (once; cached in %s)", gguf.name, out)
    tmp = out.with_name(out.name + ".tmp")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float16)
    tmp.mkdir(parents=True, exist_ok=True)
    # save_pretrained refuses models loaded from GGUF (it would re-quantize); the weights are plain
    # float16 tensors once dequantized, so write them and a config without the GGUF marker.
    from safetensors.torch import save_file

    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)  # shared with the embedding; re-tied on load
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(tmp))
    model.generation_config.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / ".complete").write_text(gguf.name)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)


class HFModel(UsesTokenizer, ModelLifetime):
    """A transformers causal LM with a slot KV cache; sessions take slots, the batcher runs them."""

    capabilities = Capabilities()

    def __init__(self, source: str | Path, device: str | None = None, dtype: str | None = None,
                 n_ctx: int = 8192, slots: int = 16, n_threads: int | None = None, batch_wait: float = 0.002,
                 prefill_rows: int | None = None, prefill_budget: int | None = None, max_rows: int | None = None,
                 graphs: str | None = None, server: str | None = None, candidates: str | None = None,
                 lines: str | None = None, kernels: str | None = None):
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.disable_progress_bar()  # egcfg's own output stays readable
        transformers.utils.logging.set_verbosity_error()
        if n_threads:
            torch.set_num_threads(n_threads)
        source = str(source)
        path = Path(source)
        if path.suffix == ".gguf":
            if not path.is_file():
                raise EgcfgError(f"model file not found: {path}")
            folder = str(_convert(path))
        elif source.startswith(("/", ".", "~")) and not path.expanduser().is_dir():
            raise EgcfgError(f"model folder not found: {source}")
        else:
            folder = str(path.expanduser()) if path.expanduser().is_dir() else source  # else a hub id
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
        except RuntimeError as exc:
            raise EgcfgError(f"device {device!r} is not usable: {exc}") from None
        # server= is the runner's (bench --workers: model server processes, hf_server.py; N of them)
        if model_servers(server) is None:
            raise EgcfgError(f"model option server={server!r} must be on, off or a number of servers (1 or more)")
        if candidates not in (None, "batcher", "session"):
            raise EgcfgError(f"model option candidates={candidates!r} must be batcher or session")
        # Candidates stepped by the batcher (one round trip per refresh, not per token); "session"
        # drives them token by token from the session's thread, as before 2026-12-02.
        self.batcher_candidates = candidates != "session"
        if lines not in (None, "batcher", "session"):
            raise EgcfgError(f"model option lines={lines!r} must be batcher or session")
        # Each decoded line stepped by the batcher (one round trip per line, not per token);
        # "session" picks token by token from the session's thread, as before 2026-12-03.
        self.batcher_lines = lines != "session"
        if kernels not in (None, "fused", "torch"):
            raise EgcfgError(f"model option kernels={kernels!r} must be fused or torch")
        if graphs not in (None, "on", "off"):
            raise EgcfgError(f"model option graphs={graphs!r} must be on or off")
        use_graphs = self.device.type == "cuda" if graphs is None else graphs == "on"
        if use_graphs and self.device.type != "cuda":
            raise EgcfgError("graphs=on needs a CUDA device (CUDA graphs)")
        # float32 on CPU (bf16 matmuls are slow there), bfloat16 on CUDA (measured on an H200: a
        # 256-row decode forward 20 ms in bf16, 53 ms in float32). dtype= overrides.
        if dtype and not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise EgcfgError(f"unknown dtype {dtype!r} (e.g. float32, bfloat16, float16)")
        self.dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        if self.device.type == "cuda" and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
            # The cache is one huge tensor and the graphs' pool grows beside it: with the default
            # fixed-size segments, 21 GiB were reserved but unusable when the H200 grid run ran out
            # of memory. Expandable segments (used with CUDA graphs in the next run, fine) avoid it.
            try:
                torch.cuda.memory._set_allocator_settings("expandable_segments:True")
            except (AttributeError, RuntimeError):  # (a torch without the setting: as before)
                pass
        try:
            self.hf = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise EgcfgError(f"transformers could not load {source}: {str(exc).splitlines()[0]}") from None
        cfg = self.hf.config
        if cfg.model_type not in SUPPORTED:
            raise EgcfgError(f"the hf backend supports {', '.join(sorted(SUPPORTED))} models, not {cfg.model_type!r}")
        if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "sliding_window", None) and cfg.model_type == "mistral":
            raise EgcfgError("sliding-window attention is not supported by the hf backend")
        self.name = Path(source).name
        self.source = source
        self.n_ctx = n_ctx
        self.n_vocab = int(self.hf.get_output_embeddings().weight.shape[0])
        self.n_layers = cfg.num_hidden_layers
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        attn_module = __import__(type(self.hf.model.layers[0].self_attn).__module__, fromlist=["apply_rotary_pos_emb"])
        self._rope = attn_module.apply_rotary_pos_emb
        # (kept: a model server's workers load the same tokenizer: hf_server.py)
        self.tokenizer_args = (folder, self.n_vocab, getattr(self.hf.generation_config, "eos_token_id", None))
        self.tok = HFTokenizer(*self.tokenizer_args)
        self.tokenizer = self.tok.tokenizer
        # +PREFILL_CHUNK: padded rows of a batch write (unused) K/V past their own length.
        self.capacity = n_ctx + PREFILL_CHUNK
        # zeros, not empty: attention multiplies masked-out positions by 0, and 0 * NaN garbage = NaN.
        # One slot more than asked for: the scratch slot, where the padding rows of a static-shape
        # forward write (hf_graphs.py); it is never handed to a session.
        self.scratch = slots
        shape = (self.n_layers, 2, slots + 1, self.n_kv, self.capacity, self.head_dim)
        self._check_memory(shape, use_graphs)
        self.kv = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.next_logits = torch.zeros((slots + 1, self.n_vocab), dtype=torch.float32, device=self.device)
        # A GPU runs far larger forwards at the same price; a CPU pays per row.
        on_gpu = self.device.type == "cuda"
        self.prefill_budget = int(prefill_budget or (2 * PREFILL_BUDGET if on_gpu else PREFILL_BUDGET))
        self.max_rows = int(max_rows or (4 * MAX_ROWS if on_gpu else MAX_ROWS))
        # CUDA graphs at bucketed shapes (hf_graphs.py): on by default on CUDA; graphs=off turns them
        # off (every forward eager at its own shape, as on CPU).
        self.graphs = Graphs(self, capture=True) if use_graphs else None
        self.fused = self._fused_forward(kernels)
        if on_gpu:
            # The batcher thread gives the GIL away at every wait and sync, and the engine threads
            # keep it for up to the switch interval (5 ms by default) before it gets it back: at a
            # few waits per batch that was a stall of the GPU's feed. 0.5 ms bounds it.
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self._free = list(range(slots - 1, -1, -1))
        self._slot_lock = threading.Lock()
        # prefill_rows caps the rows of one packed prefill forward (1: every prefill alone, which is
        # how the packing's effect is measured; None: only the prefill budget bounds it).
        self.batcher = Batcher(self, batch_wait, prefill_rows)

    def _fused_forward(self, kernels: str | None):
        """The forward with fused Triton kernels (fused.py): the default on CUDA where Triton is
        installed and the model is supported; kernels=torch runs HF's modules instead (the
        reference, and the CPU's path). On a CPU, kernels=fused runs only in Triton's interpreter
        (TRITON_INTERPRET=1), which is how the tests check it."""
        from . import fused

        why = fused.supported(self.hf)
        if kernels == "fused":
            if not fused.available():
                raise EgcfgError("kernels=fused needs Triton (it comes with CUDA builds of torch)")
            if self.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
                raise EgcfgError("kernels=fused needs a CUDA device (on a CPU only Triton's interpreter runs it: TRITON_INTERPRET=1)")
            if why:
                raise EgcfgError(f"kernels=fused does not support this model: {why}")
        elif kernels == "torch" or self.device.type != "cuda" or not fused.available() or why:
            return None
        return fused.FusedForward(self)

    def _check_memory(self, shape, graphs: bool) -> None:
        """One clear line, not a CUDA out-of-memory traceback, when the KV cache cannot fit: on a GPU
        shared by several worker processes (bench --workers), each asks for its own cache."""
        if self.device.type != "cuda":
            return
        need = int(np.prod(shape)) * torch.tensor([], dtype=self.dtype).element_size()
        free, _ = torch.cuda.mem_get_info(self.device)
        # Beside the cache: activations of the largest forwards, the CUDA graphs' pool and the
        # picks' buffers. Measured in the H200 grid run: the graph pool grew to 12.4 GiB with 160
        # graphs, and the cache plus 4 GiB of spare ran out of memory mid-run.
        spare = (20 if graphs else 4) << 30
        if need + spare > free:
            raise EgcfgError(f"the KV cache of {shape[2] - 1} slots x {self.n_ctx} tokens needs {need / 2**30:.1f} GiB "
                             f"and {free / 2**30:.1f} GiB of {self.device} is free: lower --concurrency, "
                             "--workers or the model's n_ctx")

    def describe(self) -> dict:
        return {"backend": "transformers", "transformers": __import__("transformers").__version__,
                "torch": torch.__version__, "model": self.source, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "n_vocab": self.n_vocab, "n_ctx": self.n_ctx,
                "slots": self.scratch, "graphs": self.graphs is not None,
                "candidates": "batcher" if self.batcher_candidates else "session",
                "lines": "batcher" if self.batcher_lines else "session",
                "kernels": "fused" if self.fused is not None else "torch", "prefill_budget": self.prefill_budget, "max_rows": self.max_rows}

    def profile(self) -> dict:
        """What the batcher did (forwards by kind and shape, seconds per phase): see hf_batcher.py;
        and the CUDA graphs (captured, replayed, forwards run eagerly)."""
        out = self.batcher.profile()
        if self.graphs is not None:
            out["graphs"] = self.graphs.stats()
        return out

    def session(self, n_seqs: int) -> "HFSession":
        return HFSession(self, n_seqs)

    def close(self) -> None:
        self.batcher.stop()

    # -- slots -----------------------------------------------------------------------------------
    def take_slots(self, n: int) -> list[int]:
        with self._slot_lock:
            if len(self._free) < n:
                raise EgcfgError(f"the hf backend has no free KV slots ({self.scratch} in all): "
                                 "raise slots= or run fewer solves at once")
            return [self._free.pop() for _ in range(n)]

    def give_slots(self, slots: list[int]) -> None:
        with self._slot_lock:
            # highest first, so that the next take_slots (which pops from the end) gets them back
            # as an ascending run: forks into consecutive slots are one copy (copy_slots)
            self._free.extend(sorted(slots, reverse=True))

    # -- the forward pass --------------------------------------------------------------------------
    def forward(self, rows: list[tuple[int, int, list[int]]]) -> None:
        """rows: (slot, start, tokens): the tokens go to positions start.. of the slot, whose first
        ``start`` positions hold the sequence's cached K/V. The K/V of the tokens go to the cache,
        the logits after each row's last token to the slot's row of ``next_logits``. On CUDA the
        forward runs at a bucketed static shape as a CUDA graph (hf_graphs.py)."""
        if self.graphs is not None:
            self.graphs.run(rows)
        else:
            self.forward_eager(rows)

    @torch.inference_mode()
    def forward_eager(self, rows: list[tuple[int, int, list[int]]]) -> None:
        """The forward at the rows' own shape (rows padded to the longest)."""
        dev = self.device
        B = len(rows)
        N = max(len(t) for _, _, t in rows)
        ids = torch.zeros((B, N), dtype=torch.long)
        for b, (_, _, toks) in enumerate(rows):
            ids[b, :len(toks)] = torch.tensor(toks, dtype=torch.long)
        starts = torch.tensor([s for _, s, _ in rows], dtype=torch.long)
        last = torch.tensor([len(t) - 1 for _, _, t in rows], dtype=torch.long)
        slots = torch.tensor([slot for slot, _, _ in rows], dtype=torch.long)
        # (rounded up to 16: the memory-efficient attention kernel wants aligned mask rows; the
        # extra keys are masked out, and the cache has PREFILL_CHUNK positions of slack)
        n_kv = min(-(-int((starts + N).max()) // 16) * 16, self.capacity)
        self.forward_core(ids.to(dev), starts.to(dev), slots.to(dev), last.to(dev), n_kv)

    def forward_core(self, ids, starts, slots, last, n_kv: int) -> None:
        """The model's math on device tensors only, with no host sync, so that a CUDA graph can
        capture it: ids (B, N), each row's start position, slot and last real token (B,), and the
        number of cached positions attention reads (a Python int: part of the shape; unused by
        the fused kernels' one-token forwards, whose attention reads each row's own length)."""
        if self.fused is not None:
            return self.fused(ids, starts, slots, last, n_kv)
        dev = self.device
        B, N = ids.shape
        pos, w_slot, w_pos = self.positions(starts, slots, N)
        mask = self.causal_mask(pos, n_kv)
        inner = self.hf.model
        h = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(h, pos)
        for layer_no, layer in enumerate(inner.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(B, N, -1, self.head_dim)
            k = attn.k_proj(x).view(B, N, -1, self.head_dim)
            v = attn.v_proj(x).view(B, N, -1, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3 normalizes q and k per head
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = self._rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            cache_k, cache_v = self.kv[layer_no, 0], self.kv[layer_no, 1]
            cache_k[w_slot, :, w_pos] = k.transpose(1, 2).reshape(B * N, self.n_kv, self.head_dim)
            cache_v[w_slot, :, w_pos] = v.reshape(B * N, self.n_kv, self.head_dim)
            keys = cache_k[:, :, :n_kv][slots]
            values = cache_v[:, :, :n_kv][slots]
            out = self._attention(q, keys, values, mask)
            h = h + attn.o_proj(out.transpose(1, 2).reshape(B, N, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        final = h[torch.arange(B, device=dev), last]
        self.next_logits[slots] = self.hf.lm_head(inner.norm(final)).float()

    def positions(self, starts, slots, N: int):
        """A forward's positions (B, N), and the slot and position each of its B * N tokens writes
        its K/V to (contiguous: a single row's expanded slots would otherwise be a stride-0 view,
        and the fused kernels read them by pointer)."""
        B = starts.shape[0]
        pos = starts[:, None] + torch.arange(N, device=self.device)[None, :]
        return pos, slots[:, None].expand(B, N).reshape(-1).contiguous(), pos.reshape(-1).contiguous()

    def causal_mask(self, pos, n_kv: int):
        """A query at position p sees cached keys 0..p of its own row (its own writes included)."""
        return (torch.arange(n_kv, device=self.device)[None, None, :] <= pos[:, :, None]).unsqueeze(1)

    def _attention(self, q, keys, values, mask):
        """Grouped-query attention without repeating K/V: the query heads that share a K/V head
        are folded into the query-length axis, and torch's scaled_dot_product_attention runs it
        with the length mask (its memory-efficient kernel on CUDA: no (rows x queries x keys)
        score tensor is materialized, which for a 16-row prefill at 4k keys was 3.7 GB per layer;
        float32 accumulation inside)."""
        B, H, N, D = q.shape
        group = H // self.n_kv
        qg = q.reshape(B, self.n_kv, group * N, D)
        L = mask.shape[-1]
        m = mask.unsqueeze(2).expand(B, 1, group, N, L).reshape(B, 1, group * N, L)
        out = torch.nn.functional.scaled_dot_product_attention(qg, keys, values, attn_mask=m)
        return out.view(B, H, N, D)

    def to_host(self, logits: torch.Tensor) -> np.ndarray:
        """Logits leave the GPU through pinned memory (torch caches pinned blocks): a pageable copy
        of 256 x 150k floats measured ~100 ms. The numpy array keeps its block alive."""
        if self.device.type != "cuda":
            return logits.cpu().numpy()
        host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
        host.copy_(logits)
        return host.numpy()

    def copy_slot(self, src: int, dst: int, n: int) -> None:
        self.copy_slots(src, [dst], n)

    @torch.inference_mode()
    def copy_slots(self, src: int, dsts: list[int], n: int) -> None:
        """The first ``n`` cached positions and the next-token logits of slot ``src`` into every
        slot of ``dsts``: one broadcast copy per run of consecutive slots (a fork's candidates
        usually are one run: take_slots hands out, and give_slots takes back, ascending runs),
        instead of two copies per slot, each a launch on the batcher thread."""
        order = sorted(dsts)
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and order[j] == order[j - 1] + 1:
                j += 1
            a, b = order[i], order[j - 1] + 1
            self.kv[:, :, a:b, :, :n] = self.kv[:, :, src:src + 1, :, :n]
            self.next_logits[a:b] = self.next_logits[src:src + 1]
            i = j


class HFSession(TrackedSession):
    """Sequences of one solve, each in its own KV slot of the shared model."""

    def __init__(self, model: HFModel, n_seqs: int):
        super().__init__(model.n_ctx)
        self.model = model
        self._slots = model.take_slots(n_seqs)
        self._open = True
        model.batcher.opened()

    def close(self) -> None:
        if self._open:
            self._open = False
            self.model.batcher.closed()
            self.model.give_slots(self._slots)

    def _slot(self, seq: int) -> int:
        if not 0 <= seq < len(self._slots):
            raise ValueError(f"sequence {seq} out of range (session of {len(self._slots)})")
        return self._slots[seq]

    def sync(self, seq: int, tokens: Sequence[int], fetch: bool = True) -> np.ndarray | None:
        tokens = list(tokens)
        keep = self._plan_sync(seq, tokens)
        if keep is None:
            return self._read(seq) if fetch else None
        todo = tokens[keep:]
        self._tokens[seq] = tokens[:keep]  # what the slot holds if the prefill fails part-way
        self._logits.pop(seq, None)
        logits = self.model.batcher.call(Request("prefill", rows=[(self._slot(seq), keep, todo)], fetch=fetch))
        self.stats.prefilled += len(todo)
        self.stats.batches += 1 + (len(todo) - 1) // PREFILL_CHUNK
        self._synced(seq, tokens, logits if fetch else ON_DEVICE)
        return logits

    def _read(self, seq: int) -> np.ndarray:
        if self._logits[seq] is ON_DEVICE:
            self._logits[seq] = self.model.batcher.call(Request("read", rows=[self._slot(seq)]))[0]
        return self._logits[seq]

    def _rows(self, feeds: dict[int, int]) -> tuple[list[int], list]:
        order = sorted(feeds)
        for seq in order:
            self._check_context(len(self._tokens[seq]) + 1)
        return order, [(self._slot(seq), len(self._tokens[seq]), [feeds[seq]]) for seq in order]

    def step(self, feeds: dict[int, int]) -> dict[int, np.ndarray]:
        order, rows = self._rows(feeds)
        logits, _ = self.model.batcher.call(Request("step", rows=rows, fetch=True))
        self.stats.decoded += len(order)
        self.stats.batches += 1
        return self._stepped(order, feeds, [logits[i] for i in range(len(order))])

    def _need_logits(self, seqs) -> None:
        """Refuse, before the batcher sees it, a pick from a sequence that holds no logits yet."""
        for seq in seqs:
            if seq not in self._logits:
                raise ValueError(f"sequence {seq} has no next-token logits (sync it first)")

    def _device_picks(self, picks) -> list:
        return torch_picks.rows_of(picks, self._slot)

    def pick(self, picks) -> list[int]:
        """Tokens chosen on the device (torch_picks.py), batched with every other session's."""
        self._need_logits(seq for p in picks for seq in (p.seq, p.dyn) if seq is not None)
        return self.model.batcher.call(Request("pick", picks=self._device_picks(picks)))

    def step_pick(self, feeds: dict[int, int], picks) -> list[int]:
        """One step for ``feeds`` and the picks after it, in one round trip; no logits travel."""
        if not feeds:
            return self.pick(picks) if picks else []
        order, rows = self._rows(feeds)
        _, tokens = self.model.batcher.call(Request("step", rows=rows, picks=self._device_picks(picks)))
        self.stats.decoded += len(order)
        self.stats.batches += 1
        self._stepped(order, feeds, [ON_DEVICE] * len(order))
        return tokens

    def sample_forks(self, base_seq: int, seqs: list[int], temperature: float, top_p: float, horizon: int,
                     max_tokens: int, rng: np.random.Generator) -> Sampled:
        """The candidates of one refresh in one round trip: the batcher forks ``base_seq`` into the
        ``seqs``' slots and steps them itself with every other session's work until each stops
        (candidates.Sampling: the same draws from ``rng``, stop rule and text as the session-driven
        loop, which ``candidates=session`` in the model spec keeps)."""
        from ..candidates import sample_on_host

        if not self.model.batcher_candidates:
            return sample_on_host(self.model, self, base_seq, seqs, temperature, top_p, horizon, max_tokens, rng)
        self._need_logits([base_seq])
        n = len(self._tokens[base_seq])
        texts, total, steps, state = self.model.batcher.call(Request(
            "sample", rows=[(self._slot(base_seq), n)],
            job=([self._slot(s) for s in seqs], temperature, top_p, horizon, max_tokens, rng, self.n_ctx)))
        rng.bit_generator.state = state  # (a server sampled with a copy of the generator)
        for seq in seqs:
            self._dropped(seq)
        self.stats.decoded += total - len(seqs)  # (every sampled token but each candidate's last was fed)
        self.stats.batches += steps
        return Sampled(texts=texts, tokens=total)

    def decode_line(self, line) -> None:
        """One line (decoding.Line) in one round trip: the batcher steps it with every other
        session's work until the line ends, and hands back its tokens, the next line's first token
        and the rule's state (``lines=session`` in the model spec: token by token from here)."""
        from ..decoding import DYN, SOL, decode_on_host

        if not self.model.batcher_lines:
            return decode_on_host(self, line)
        self._need_logits((SOL, DYN) if line.rule.guided else (SOL,))
        held = {seq: (self._slot(seq), len(self._tokens[seq])) for seq in (SOL, DYN) if seq in self._tokens}
        tokens, nxt, fed, steps, rule, unfed = self.model.batcher.call(Request(
            "line", job=(line.rule, line.first, line.limit, bytes(line.text), held, self.n_ctx)))
        line.tokens, line.next, line.fed, line.steps, line.over, line.unfed = tokens, nxt, fed, steps, True, unfed
        if rule is not line.rule:
            line.rule.take_state(rule)  # (a server decoded with a copy of the rule and its generator)
        for seq, n in fed.items():
            if n:
                self._tokens[seq].extend(tokens[:n])
                self._logits[seq] = ON_DEVICE
        self.stats.decoded += sum(fed.values())
        self.stats.batches += steps

    def fork(self, src: int, dst: int) -> None:
        n = len(self._tokens[src])
        self.model.batcher.call(Request("copy", copy=(self._slot(src), self._slot(dst), n)))
        self._forked(src, dst)

    def drop(self, seq: int) -> None:
        self._dropped(seq)
