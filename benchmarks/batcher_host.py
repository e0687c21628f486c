"""The transformers backend's batcher thread, host side only: what its Python costs per step and per
row when the forward costs nothing.

On the GPU grid the model server's one batcher thread is the bottleneck (py-spy: ~85% busy, the
GPU 22-30% busy): every microsecond it spends per row is GPU time lost. This drives the real
``Batcher`` with ``sample`` requests (a refresh's candidates, the bulk of the grid's rows) against
a stand-in model whose forward does nothing and whose logits are a small table on the CPU, so what
is timed is the thread's own work: requests, picks (``torch_picks`` on CPU tensors: the same ops
a GPU launches), the candidates' state machines, replies. Numbers are for comparing versions of
the batcher on one machine, not a GPU figure.

    python benchmarks/batcher_host.py [--requests 64] [--candidates 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from egcfg.lm.hf_batcher import Batcher, Request  # noqa: E402

VOCAB = 512


class NullModel:
    """What the batcher asks of HFModel, at no cost: the forward leaves the logits as they are
    (flat, so every sampled token is a uniform draw); one token in 40 is a newline, the last one
    ends generation."""

    fused = None

    def __init__(self, slots: int):
        self.prefill_budget, self.max_rows = 4096, 1024
        self.next_logits = torch.zeros((slots + 1, VOCAB))
        self.pieces = [b"\n" if t % 40 == 0 else b"x" for t in range(VOCAB)]

    def forward(self, rows):
        pass

    def copy_slots(self, src, dsts, n):
        pass

    def to_host(self, t):
        return t.numpy()

    def piece(self, tok: int) -> bytes:
        return self.pieces[tok]

    def is_eog(self, tok: int) -> bool:
        return tok == VOCAB - 1


def once(requests: int, candidates: int, horizon: int) -> dict:
    model = NullModel(requests * (candidates + 1))
    b = Batcher(model, wait=0.0)
    reqs = []
    for i in range(requests):
        base = i * (candidates + 1)
        slots = list(range(base + 1, base + 1 + candidates))
        rng = np.random.default_rng(i)
        reqs.append(Request("sample", rows=[(base, 10)], job=(slots, 0.7, 0.95, horizon, 400, rng, 4096)))
    b.opened()
    start, cpu0 = time.perf_counter(), time.thread_time()
    for r in reqs:
        b.submit(r)
    for r in reqs:
        assert r.done.wait(120) and r.error is None, r.error
    wall = time.perf_counter() - start
    b.stop()
    sampled = sum(r.result[1] for r in reqs)
    return {"wall_s": round(wall, 3), "forwards": b.forwards, "step_rows": b.rows, "tokens_sampled": sampled,
            "us_per_row": round(1e6 * wall / max(1, b.rows), 2), "ms_per_step": round(1e3 * wall / max(1, b.forwards), 3),
            "main_thread_cpu_s": round(time.thread_time() - cpu0, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="refreshes sampled at once (sessions)")
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=2, help="lines after the current one (d)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="write JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = [once(args.requests, args.candidates, args.horizon) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["us_per_row"])
    out = {"best": best, "runs": runs, "requests": args.requests, "candidates": args.candidates,
           "command": "python benchmarks/batcher_host.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
           "torch": torch.__version__, "python": platform.python_version()}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
