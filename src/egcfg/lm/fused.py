"""Fused kernels (Triton) for the transformers backend's forward on a GPU, each beside its torch
reference.

Why: a decode forward of the 0.5B model cost 3.68 ms fixed plus 35.2 ns per row x attended
position on the H200 (benchmarks/results/speed.json, gpu_grid_lines_ab, forward_cost_model). The
fixed part is about 45 small kernels per layer (HF's RMSNorm alone is 8: upcast, square, mean, add,
rsqrt, multiply, downcast, weight); the per-position part is attention over K/V first gathered from
the slot cache into a dense batch (read, written, read again) and masked to each row's length. Here:

* ``add_rms_norm``: the residual add and the next RMSNorm in one kernel (rounded where HF rounds:
  the sum to the model's dtype, the normalized row before the weight);
* ``rope_store``: rotary embedding of q and k straight from the fused q/k/v projection's output,
  and k and v written into their slots' cache positions, in one kernel;
* ``silu_mul``: the MLP's ``silu(gate) * up`` from the fused gate/up projection;
* ``decode_attention``: one-token rows attend their own slot's cached positions ``0..length-1``
  directly (no gather, no mask), all query heads of a K/V head at once, the positions split into
  ``splits`` chunks whose partial softmax sums one more small kernel combines (flash-decoding), so
  that a few long rows still fill the GPU.

Every kernel reads its shapes and per-row lengths from device tensors and never syncs the host, so
a forward that uses them can be captured as a CUDA graph (hf_graphs.py); rows' lengths are read on
the device, so a decode graph needs no attended-length bucket.

Tests run the kernels in Triton's interpreter on the CPU (TRITON_INTERPRET=1) against the torch
references below, which are also what the forward runs where the kernels are off (CPU, or
``kernels=torch``).
"""

from __future__ import annotations

import torch

try:  # (Triton comes with CUDA builds of torch; the CPU wheel has none, and needs none)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def available() -> bool:
    return triton is not None


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# -- references (torch): the same math, as HF's modules compute it ------------------------------

def add_rms_norm_reference(h, delta, weight, eps):
    """(h + delta, RMSNorm of it); ``delta`` None: (h, RMSNorm of h)."""
    if delta is not None:
        h = h + delta
    x = h.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return h, weight * x.to(h.dtype)


def silu_mul_reference(gate_up):
    gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def decode_attention_reference(q, cache_k, cache_v, slots, lengths):
    """q (B, H, D); cache (slots, KVH, capacity, D); row b attends positions 0..lengths[b]-1 of
    slot slots[b]. Returns (B, H, D)."""
    B, H, D = q.shape
    kvh = cache_k.shape[1]
    out = torch.empty_like(q)
    for b in range(B):
        n = int(lengths[b])
        k = cache_k[int(slots[b]), :, :n].float().repeat_interleave(H // kvh, dim=0)  # (H, n, D)
        v = cache_v[int(slots[b]), :, :n].float().repeat_interleave(H // kvh, dim=0)
        w = torch.softmax((k @ q[b].float()[:, :, None])[:, :, 0] / D ** 0.5, dim=-1)  # (H, n)
        out[b] = (w[:, None, :] @ v)[:, 0].to(q.dtype)
    return out


# -- kernels ------------------------------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _add_rms_norm_kernel(h_ptr, d_ptr, w_ptr, h_out_ptr, out_ptr, n_cols, eps,
                             HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        m = cols < n_cols
        x = tl.load(h_ptr + row * n_cols + cols, mask=m, other=0.0)
        if HAS_DELTA:
            x = x + tl.load(d_ptr + row * n_cols + cols, mask=m, other=0.0)
            tl.store(h_out_ptr + row * n_cols + cols, x, mask=m)
        xf = x.to(tl.float32)
        var = tl.sum(xf * xf, axis=0) / n_cols
        y = (xf * tl.rsqrt(var + eps)).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=m, other=0.0)
        tl.store(out_ptr + row * n_cols + cols, w * y, mask=m)

    @triton.jit
    def _rope_store_kernel(qkv_ptr, cos_ptr, sin_ptr, q_out_ptr, k_ptr, v_ptr, slot_ptr, pos_ptr,
                           s_slot, s_head, s_pos,
                           H: tl.constexpr, KVH: tl.constexpr, HP: tl.constexpr, KVP: tl.constexpr,
                           D: tl.constexpr):
        """One token: its H query heads and KVH key heads rotated, q to q_out (T, H, D), k and v
        to their slot's cache at the token's position."""
        t = tl.program_id(0)
        width = (H + 2 * KVH) * D
        d = tl.arange(0, D)
        partner = (d + D // 2) % D                       # rotate_half: (-x2, x1)
        sign = tl.where(d < D // 2, -1.0, 1.0)
        cos = tl.load(cos_ptr + t * D + d).to(tl.float32)
        sin = tl.load(sin_ptr + t * D + d).to(tl.float32)
        base = qkv_ptr + t * width
        hq = tl.arange(0, HP)
        mq = (hq < H)[:, None]
        q = tl.load(base + hq[:, None] * D + d[None, :], mask=mq, other=0.0).to(tl.float32)
        q2 = tl.load(base + hq[:, None] * D + partner[None, :], mask=mq, other=0.0).to(tl.float32)
        q = q * cos[None, :] + sign[None, :] * q2 * sin[None, :]
        tl.store(q_out_ptr + t * H * D + hq[:, None] * D + d[None, :], q.to(q_out_ptr.dtype.element_ty), mask=mq)
        hk = tl.arange(0, KVP)
        mk = (hk < KVH)[:, None]
        kbase = base + H * D
        k = tl.load(kbase + hk[:, None] * D + d[None, :], mask=mk, other=0.0).to(tl.float32)
        k2 = tl.load(kbase + hk[:, None] * D + partner[None, :], mask=mk, other=0.0).to(tl.float32)
        k = k * cos[None, :] + sign[None, :] * k2 * sin[None, :]
        v = tl.load(kbase + KVH * D + hk[:, None] * D + d[None, :], mask=mk, other=0.0)
        slot = tl.load(slot_ptr + t)
        pos = tl.load(pos_ptr + t)
        at = slot * s_slot + pos * s_pos + hk[:, None] * s_head + d[None, :]
        tl.store(k_ptr + at, k.to(k_ptr.dtype.element_ty), mask=mk)
        tl.store(v_ptr + at, v, mask=mk)

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = cols < n_cols
        g = tl.load(gu_ptr + row * 2 * n_cols + cols, mask=m, other=0.0)
        u = tl.load(gu_ptr + row * 2 * n_cols + n_cols + cols, mask=m, other=0.0)
        gf = g.to(tl.float32)
        a = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)
        tl.store(out_ptr + row * n_cols + cols, a * u, mask=m)

    @triton.jit
    def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, part_ptr, stat_ptr, slot_ptr, len_ptr,
                                 s_qb, s_qh, s_slot, s_head, s_pos, chunk, scale,
                                 H: tl.constexpr, KVH: tl.constexpr, GROUP: tl.constexpr,
                                 GP: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr,
                                 SPLITS: tl.constexpr):
        """Program (row b, K/V head h, split s): the GROUP query heads of h against positions
        [s*chunk, min(length, (s+1)*chunk)) of the row's slot, with an online softmax. One split:
        the normalized output; several: unnormalized partial sums and (max, sum) per query head."""
        b = tl.program_id(0)
        h = tl.program_id(1)
        s = tl.program_id(2)
        slot = tl.load(slot_ptr + b)
        length = tl.load(len_ptr + b)
        lo = s * chunk
        hi = tl.minimum(length, lo + chunk)
        g = tl.arange(0, GP)
        gm = g < GROUP
        d = tl.arange(0, D)
        heads = h * GROUP + g
        q = tl.load(q_ptr + b * s_qb + heads[:, None] * s_qh + d[None, :], mask=gm[:, None], other=0.0)
        m_i = tl.full([GP], float("-inf"), tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        base = slot * s_slot + h * s_head
        for start in range(lo, hi, BLOCK):
            p = start + tl.arange(0, BLOCK)
            pm = p < hi
            at = base + p[:, None] * s_pos + d[None, :]
            k = tl.load(k_ptr + at, mask=pm[:, None], other=0.0)
            scores = tl.dot(q, tl.trans(k)) * scale                   # (GP, BLOCK), float32
            scores = tl.where(pm[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            alpha = tl.exp(m_i - m_new)
            w = tl.exp(scores - m_new[:, None])
            l_i = l_i * alpha + tl.sum(w, axis=1)
            v = tl.load(v_ptr + at, mask=pm[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(w.to(v.dtype), v)
            m_i = m_new
        if SPLITS == 1:
            out = acc / l_i[:, None]
            tl.store(out_ptr + b * H * D + heads[:, None] * D + d[None, :], out.to(out_ptr.dtype.element_ty),
                     mask=gm[:, None])
        else:
            # (a split past the row's length keeps m = -inf, l = 0: the combine gives it weight 0)
            row = (b * H + heads) * SPLITS + s
            tl.store(part_ptr + row[:, None] * D + d[None, :], acc, mask=gm[:, None])
            tl.store(stat_ptr + row * 2, m_i, mask=gm)
            tl.store(stat_ptr + row * 2 + 1, l_i, mask=gm)

    @triton.jit
    def _combine_kernel(part_ptr, stat_ptr, out_ptr, H: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr):
        bh = tl.program_id(0)          # b * H + head
        s = tl.arange(0, SPLITS)
        d = tl.arange(0, D)
        m = tl.load(stat_ptr + (bh * SPLITS + s) * 2)
        l = tl.load(stat_ptr + (bh * SPLITS + s) * 2 + 1)
        top = tl.max(m, axis=0)        # split 0 always holds position 0: finite
        w = tl.where(m == float("-inf"), 0.0, tl.exp(m - top))
        acc = tl.load(part_ptr + (bh * SPLITS + s)[:, None] * D + d[None, :])
        out = tl.sum(acc * w[:, None], axis=0) / tl.sum(l * w, axis=0)
        tl.store(out_ptr + bh * D + d, out.to(out_ptr.dtype.element_ty))


# -- launchers ----------------------------------------------------------------------------------

def add_rms_norm(h, delta, weight, eps):
    """h, delta (T, C) contiguous; returns (h + delta, its RMSNorm) (delta None: (h, norm of h))."""
    out = torch.empty_like(h)
    h_out = torch.empty_like(h) if delta is not None else h
    T, C = h.shape
    _add_rms_norm_kernel[(T,)](h, delta if delta is not None else h, weight, h_out, out, C, eps,
                               HAS_DELTA=delta is not None, BLOCK=_pow2(C))
    return h_out, out


def rope_store(qkv, cos, sin, cache_k, cache_v, slots, positions, heads: int, kv_heads: int):
    """qkv (T, (H + 2 KVH) D) contiguous, cos/sin (T, D); slots/positions (T,) int64. Returns q
    (T, H, D) rotated; k (rotated) and v land in cache_k/cache_v (slots, KVH, capacity, D)."""
    T = qkv.shape[0]
    D = cos.shape[-1]
    q = torch.empty((T, heads, D), dtype=qkv.dtype, device=qkv.device)
    assert cache_k.stride() == cache_v.stride() and cache_k.stride(3) == 1
    assert qkv.is_contiguous() and cos.is_contiguous() and sin.is_contiguous()
    assert slots.is_contiguous() and positions.is_contiguous() and len(slots) == len(positions) == T
    _rope_store_kernel[(T,)](qkv, cos, sin, q, cache_k, cache_v, slots, positions,
                             cache_k.stride(0), cache_k.stride(1), cache_k.stride(2),
                             H=heads, KVH=kv_heads, HP=_pow2(heads), KVP=_pow2(kv_heads), D=D)
    return q


def silu_mul(gate_up):
    T, two = gate_up.shape
    n = two // 2
    out = torch.empty((T, n), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(T, triton.cdiv(n, block))](gate_up, out, n, BLOCK=block)
    return out


BLOCK_POSITIONS = 64
FILL = 264  # programs to aim for (two per multiprocessor of an H200): rows x K/V heads x splits


def splits_for(rows: int, kv_heads: int, capacity: int) -> int:
    """Position splits per row: enough programs to fill the GPU when rows are few (a static
    number per row count, so that a graph of that row bucket has one)."""
    want = -(-FILL // (rows * kv_heads))
    most = capacity // (4 * BLOCK_POSITIONS)  # (a split of fewer positions is not worth a program)
    floor2 = 1 << (most.bit_length() - 1) if most >= 1 else 1
    return max(1, min(_pow2(want), 16, floor2))


def decode_attention(q, cache_k, cache_v, slots, lengths, splits: int = 1):
    """q (B, H, D) (strided as it comes); cache (slots, KVH, capacity, D); returns (B, H, D)."""
    B, H, D = q.shape
    kvh, capacity = cache_k.shape[1], cache_k.shape[2]
    assert cache_k.stride() == cache_v.stride() and cache_k.stride(3) == 1 and q.stride(2) == 1
    assert slots.is_contiguous() and lengths.is_contiguous() and len(slots) == len(lengths) == B
    group = H // kvh
    out = torch.empty((B, H, D), dtype=q.dtype, device=q.device)
    chunk = -(-capacity // splits)
    chunk = -(-chunk // BLOCK_POSITIONS) * BLOCK_POSITIONS
    if splits > 1:
        part = torch.empty((B * H * splits, D), dtype=torch.float32, device=q.device)
        stat = torch.empty((B * H * splits, 2), dtype=torch.float32, device=q.device)
    else:
        part = stat = out
    _decode_attention_kernel[(B, kvh, splits)](
        q, cache_k, cache_v, out, part, stat, slots, lengths,
        q.stride(0), q.stride(1), cache_k.stride(0), cache_k.stride(1), cache_k.stride(2), chunk, D ** -0.5,
        H=H, KVH=kvh, GROUP=group, GP=max(16, _pow2(group)), D=D, BLOCK=BLOCK_POSITIONS, SPLITS=splits)
    if splits > 1:
        _combine_kernel[(B * H,)](part, stat, out, H=H, D=D, SPLITS=splits)
    return out


# -- the forward ----------------------------------------------------------------------------------

def supported(hf_model) -> str | None:
    """Why the fused forward cannot run this model (None: it can)."""
    cfg = hf_model.config
    layer = hf_model.model.layers[0]
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if hasattr(layer.self_attn, "q_norm"):
        return "per-head q/k norms (Qwen3)"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act}"
    if head_dim & (head_dim - 1):
        return f"head size {head_dim} (not a power of two)"
    return None


class FusedForward:
    """HFModel.forward_core's math with the kernels above: per layer one norm (fused with the
    residual add), the q/k/v projection as one matrix product, rotary embedding and the cache
    write in one kernel, attention (decode: over the slots directly; prefill: torch's, as in
    HFModel._attention), o_proj, a fused add and norm, gate and up as one product, silu x up,
    down. The q/k/v and gate/up weights are concatenated once, and the modules' own weights become
    views of them (no second copy), so ``kernels=torch`` still runs the modules unchanged."""

    def __init__(self, model):
        self.model = model
        inner = model.hf.model
        self.layers = []
        with torch.no_grad():
            for layer in inner.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv_w = _concat_into(attn.q_proj, attn.k_proj, attn.v_proj)
                qkv_b = _concat_into(attn.q_proj, attn.k_proj, attn.v_proj, bias=True)
                gate_up = _concat_into(mlp.gate_proj, mlp.up_proj)
                self.layers.append((layer, qkv_w, qkv_b, gate_up))
        cfg = model.hf.config
        self.heads = cfg.num_attention_heads

    def __call__(self, ids, starts, slots, last, n_kv: int) -> None:
        m = self.model
        dev = m.device
        B, N = ids.shape
        T = B * N
        pos, w_slot, w_pos = m.positions(starts, slots, N)
        inner = m.hf.model
        h = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(h, pos)
        cos, sin = cos.reshape(T, -1).contiguous(), sin.reshape(T, -1).contiguous()
        h = h.reshape(T, -1)
        first = self.layers[0][0].input_layernorm
        h, x = add_rms_norm(h, None, first.weight, first.variance_epsilon)
        if N == 1:
            lengths = starts + 1
            splits = splits_for(B, m.n_kv, m.capacity)
        else:
            mask = m.causal_mask(pos, n_kv)
        H, D = self.heads, m.head_dim
        for no, (layer, qkv_w, qkv_b, gate_up) in enumerate(self.layers):
            cache_k, cache_v = m.kv[no, 0], m.kv[no, 1]
            q = rope_store(torch.nn.functional.linear(x, qkv_w, qkv_b), cos, sin, cache_k, cache_v,
                           w_slot, w_pos, H, m.n_kv)
            if N == 1:
                out = decode_attention(q, cache_k, cache_v, slots, lengths, splits).view(T, H * D)
            else:
                keys, values = cache_k[:, :, :n_kv][slots], cache_v[:, :, :n_kv][slots]
                out = m._attention(q.view(B, N, H, D).transpose(1, 2), keys, values, mask)
                out = out.transpose(1, 2).reshape(T, H * D)
            norm = layer.post_attention_layernorm
            h, x = add_rms_norm(h, layer.self_attn.o_proj(out), norm.weight, norm.variance_epsilon)
            mlp = layer.mlp
            down = mlp.down_proj(silu_mul(torch.nn.functional.linear(x, gate_up)))
            norm = self.layers[no + 1][0].input_layernorm if no + 1 < len(self.layers) else inner.norm
            h, x = add_rms_norm(h, down, norm.weight, norm.variance_epsilon)
        final = x.view(B, N, -1)[torch.arange(B, device=dev), last]
        m.next_logits[slots] = m.hf.lm_head(final).float()


def _concat_into(*linears, bias: bool = False):
    """The linears' weights (or biases) as one tensor, their own parameters re-pointed at its
    slices (one copy in memory). None where they have no bias."""
    parts = [lin.bias if bias else lin.weight for lin in linears]
    if any(p is None for p in parts):
        return None
    whole = torch.cat([p.data for p in parts], dim=0)
    at = 0
    for lin, p in zip(linears, parts):
        view = whole[at:at + p.shape[0]]
        at += p.shape[0]
        setattr(lin, "bias" if bias else "weight", torch.nn.Parameter(view, requires_grad=False))
    return whole
