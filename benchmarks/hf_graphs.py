"""Eager forwards against CUDA-graph replays of the transformers backend, shape by shape.

    python benchmarks/hf_graphs.py --model 'hf:/root/m/model.gguf?n_ctx=4096'

For decode steps (1 token per row) and prefill chunks at the shapes the agent grid runs, the time of
one forward (synchronized, best of 5) on the backend's eager path (``graphs=off``: every kernel
launched from Python) and replayed from a captured graph (hf_graphs.py), and the tokens per second
each gives. Writes benchmarks/results/hf_graphs.json and .md (on the GPU machine: under $OUT).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_grid import machine, now  # noqa: E402

SHAPES = [("decode", r, 1, a) for r in (16, 64, 128, 256, 512, 1024) for a in (512, 2048)] + \
         [("prefill", r, n, a) for r, n, a in ((1, 512, 1024), (2, 256, 2048), (4, 128, 2048), (16, 32, 2048), (8, 512, 2048))]


def timed(model, rows, graphs, repeat=5) -> float:
    import torch

    best = float("inf")
    for _ in range(repeat + 2):  # (graphs: seen once, captured, then replayed)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        graphs.run(rows) if graphs is not None else model.forward_eager(rows)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    import torch

    from egcfg.lm import load_model

    model = load_model(args.model, slots=max(r for _, r, _, _ in SHAPES))
    if model.graphs is None:
        print("hf_graphs: the model has no CUDA graphs (a CUDA device is needed)", file=sys.stderr)
        return 2
    out = []
    try:
        g = torch.Generator().manual_seed(0)
        for kind, rows, n, attended in SHAPES:
            batch = [(s, attended - n, torch.randint(0, model.n_vocab, (n,), generator=g).tolist()) for s in range(rows)]
            eager, graph = timed(model, batch, None), timed(model, batch, model.graphs)
            out.append({"kind": kind, "rows": rows, "tokens_per_row": n, "attended": attended,
                        "ms_eager": round(eager * 1e3, 3), "ms_graph": round(graph * 1e3, 3),
                        "tokens_per_second_eager": round(rows * n / eager), "tokens_per_second_graph": round(rows * n / graph),
                        "speedup": round(eager / graph, 2)})
            print(out[-1], flush=True)
    finally:
        model.close()
    result = {"command": "python benchmarks/hf_graphs.py " + " ".join(sys.argv[1:]), "date": now(),
              "machine": machine(), "model": args.model, "shapes": out}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hf_graphs.json").write_text(json.dumps(result, indent=1))
    lines = ["# Eager forwards vs CUDA-graph replays (transformers backend)", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- model: {args.model}", "- time of one forward, synchronized, best of 5", "",
             "| kind | rows | tokens/row | attended | ms eager | ms graph | tokens/s eager | tokens/s graph | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['rows']} | {r['tokens_per_row']} | {r['attended']} | {r['ms_eager']} | {r['ms_graph']} | "
              f"{r['tokens_per_second_eager']:,} | {r['tokens_per_second_graph']:,} | {r['speedup']}x |" for r in out]
    (folder / "hf_graphs.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
