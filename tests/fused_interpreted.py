"""Run by test_fused.py in a subprocess with TRITON_INTERPRET=1 (Triton reads it when a kernel is
defined, so the test process itself cannot switch): the fused kernels against their torch
references on random inputs, and the fused forward against HF's modules on a small random model.
Prints one JSON object of relative errors."""

import json
import sys

import torch

from egcfg.lm import fused


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - b).norm() / b.norm())


def kernels() -> dict:
    g = torch.Generator().manual_seed(1)
    out = {}
    h, d, w = (torch.randn(shape, generator=g) for shape in ((5, 96), (5, 96), (96,)))
    got, ref = fused.add_rms_norm(h, d, w, 1e-6), fused.add_rms_norm_reference(h, d, w, 1e-6)
    out["add_rms_norm"] = max(rel(got[0], ref[0]), rel(got[1], ref[1]))
    out["rms_norm"] = rel(fused.add_rms_norm(h, None, w, 1e-5)[1], fused.add_rms_norm_reference(h, None, w, 1e-5)[1])
    gu = torch.randn((5, 600), generator=g)
    out["silu_mul"] = rel(fused.silu_mul(gu), fused.silu_mul_reference(gu))
    H, KVH, D, S, CAP, T = 6, 2, 16, 5, 200, 7
    qkv = torch.randn((T, (H + 2 * KVH) * D), generator=g)
    angle = torch.rand((T, D // 2), generator=g) * 6
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)
    kv = torch.randn((3, 2, S, KVH, CAP, D), generator=g)
    before = kv.clone()
    slots, pos = torch.tensor([0, 1, 1, 3, 4, 4, 2]), torch.tensor([5, 0, 1, 199, 7, 8, 3])
    q = fused.rope_store(qkv, cos, sin, kv[1, 0], kv[1, 1], slots, pos, H, KVH)

    def rotated(x):
        return x * cos[:, None] + torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1) * sin[:, None]

    expect = before.clone()
    expect[1, 0][slots, :, pos] = rotated(qkv[:, H * D:(H + KVH) * D].view(T, KVH, D))
    expect[1, 1][slots, :, pos] = qkv[:, (H + KVH) * D:].view(T, KVH, D)
    out["rope_q"] = rel(q, rotated(qkv[:, :H * D].view(T, H, D)))
    out["rope_cache"] = rel(kv, expect)  # the rows' positions written, nothing else touched
    lengths, slots = torch.tensor([1, 50, 200, 64, 65]), torch.tensor([0, 2, 1, 3, 4])
    qd = torch.randn((5, H, 2, D), generator=g)[:, :, 0]  # strided, as the forward has it
    for splits in (1, 2, 4):
        got = fused.decode_attention(qd, kv[1, 0], kv[1, 1], slots, lengths, splits)
        out[f"decode_attention_{splits}"] = rel(got, fused.decode_attention_reference(qd, kv[1, 0], kv[1, 1], slots, lengths))
    return out


def forward(folder: str) -> dict:
    """The same forwards through a fused and a torch model (prefills of different lengths, a
    fork, one-token steps eagerly and at bucketed shapes with padding rows): logits and the
    cached K/V of every written position compared."""
    from egcfg.lm.hf import HFModel
    from egcfg.lm.hf_graphs import Graphs

    a = HFModel(folder, device="cpu", n_ctx=256, slots=6, kernels="fused")
    b = HFModel(folder, device="cpu", n_ctx=256, slots=6, kernels="torch")
    assert a.fused is not None and b.fused is None
    g = torch.Generator().manual_seed(2)

    def ids(n):
        return torch.randint(0, a.n_vocab, (n,), generator=g).tolist()

    steps = [[(0, 0, ids(37)), (1, 0, ids(5)), (2, 0, ids(100))]]
    lengths = {0: 37, 1: 5, 2: 100}
    out = {"logits": 0.0, "cache": 0.0}

    def run(rows, static=False):
        for m in (a, b):
            (Graphs(m, capture=False).run if static else m.forward)(rows)
        for slot, start, toks in rows:
            lengths[slot] = start + len(toks)
        used = sorted({slot for slot, _, _ in rows})
        out["logits"] = max(out["logits"], rel(a.next_logits[used], b.next_logits[used]))
        for slot in used:
            n = lengths[slot]
            out["cache"] = max(out["cache"], rel(a.kv[:, :, slot, :, :, :n], b.kv[:, :, slot, :, :, :n]))

    run(steps[0])
    for m in (a, b):
        m.copy_slot(2, 3, 100)
    lengths[3] = 100
    for i in range(3):  # 4 rows: two position splits per row (fused.splits_for)
        run([(s, lengths[s], ids(1)) for s in (0, 1, 2, 3)], static=i == 1)
    run([(1, lengths[1], ids(20))])  # a prefill chunk after cached positions
    run([(1, lengths[1], ids(1))], static=True)
    out["splits_4_rows"] = fused.splits_for(4, a.n_kv, a.capacity)
    return out


if __name__ == "__main__":
    print(json.dumps({"kernels": kernels(), "forward": forward(sys.argv[1])}))
