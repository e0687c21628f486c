"""Raw model throughput of a backend, the physical bound EG-CFG's speed is judged against.

Prefill: tokens/s syncing one sequence to a prompt of ``--prompt-tokens``. Decode: tokens/s when
``b`` sequences (forked from that prompt) advance one token per forward, for each batch size b.

    python benchmarks/backend_throughput.py --model embedded --batches 1,3
    python benchmarks/backend_throughput.py --model 'hf:embedded?slots=256' --batches 1,16,64,256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def measure(model, prompt_tokens: int = 512, batches=(1,), steps: int = 32, repeats: int = 2) -> dict:
    rng = np.random.default_rng(0)
    text = "def f(x):\n    return x\n" * (prompt_tokens // 8 + 8)
    ids = model.tokenize(text)[:prompt_tokens]
    out = {"prompt_tokens": len(ids), "decode": {}}
    with model.session(max(batches) + 1) as s:
        s.sync(0, ids[:8])  # warm-up (CUDA kernels, allocator)
        best = None
        for _ in range(repeats):
            s.drop(0)
            s.sync(0, ids[:1])
            t0 = time.perf_counter()
            s.sync(0, ids)
            took = time.perf_counter() - t0
            best = took if best is None else min(best, took)
        out["prefill_tok_s"] = round((len(ids) - 1) / best, 1)
        for b in batches:
            seqs = list(range(1, b + 1))
            for q in seqs:
                s.fork(0, q)
            s.step({q: int(rng.integers(100, 1000)) for q in seqs})  # warm-up for this shape
            t0 = time.perf_counter()
            for _ in range(steps):
                s.step({q: int(rng.integers(100, 1000)) for q in seqs})
            took = time.perf_counter() - t0
            out["decode"][str(b)] = {"tok_s": round(b * steps / took, 1), "ms_per_forward": round(1000 * took / steps, 2)}
            for q in seqs:
                s.drop(q)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--batches", default="1,3")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", help="write JSON here")
    args = ap.parse_args(argv)
    from egcfg.lm import load_model

    model = load_model(args.model)
    result = {"model": model.describe(), **measure(model, args.prompt_tokens,
                                                   [int(b) for b in args.batches.split(",")], args.steps)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
