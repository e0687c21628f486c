"""The transformers backend's fused Triton kernels (lm/fused.py) against HF's modules, on a GPU.

    python benchmarks/fused_kernels.py --model 'hf:/root/m/model.gguf?n_ctx=4096'

1. Agreement, on the real model in its GPU dtype: the same prompts prefilled and the same tokens
   fed for 48 steps through a ``kernels=fused`` and a ``kernels=torch`` model; the relative error of
   the fused next-token logits against HF's, and how often their argmax agrees (both are bf16
   approximations of one function: they differ by rounding, not by method).
2. Time of one forward (CUDA graph replays, synchronized, median of 9) at the shapes of the agent
   grid, for both: decode steps of R rows at A cached positions (every row at A, and rows spread
   evenly over 1..2A, the same mean), prefill chunks; and a line fitted to each kind
   (gpu_grid.forward_cost_model's form: ms = fixed + ns x rows x tokens x attended).
Writes fused_kernels.json and .md (under $OUT on the GPU machine, else benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_grid import machine, now  # noqa: E402

DECODE = [(r, a) for r in (16, 64, 128, 256, 512) for a in (512, 1024, 2048)]
PREFILL = [(1, 512, 1024), (4, 128, 2048), (8, 512, 1024), (16, 32, 2048)]


def with_option(spec: str, option: str) -> str:
    return spec + ("&" if "?" in spec else "?") + option


def agreement(spec: str, steps: int = 48) -> dict:
    import numpy as np
    import torch

    from egcfg.lm import load_model

    prompts = ["Write a python function to find the shared elements from the given two lists.",
               "Write a function that returns the n-th Fibonacci number, with a docstring.",
               "Implement quicksort in Python and explain each step in a comment."]
    models = {k: load_model(with_option(spec, f"kernels={k}"), slots=len(prompts) + 1) for k in ("fused", "torch")}
    try:
        assert models["fused"].fused is not None and models["torch"].fused is None
        ids = [models["torch"].tokenize(models["torch"].render_chat([{"role": "user", "content": p}]), special=True)
               for p in prompts]
        errs, same, n = [], 0, 0
        g = torch.Generator().manual_seed(0)
        feeds = torch.randint(0, 30000, (steps, len(prompts)), generator=g).tolist()
        for m in models.values():
            m.forward([(s, 0, t) for s, t in enumerate(ids)])
        for step in range(steps + 1):
            a = models["fused"].next_logits[:len(prompts)].double()
            b = models["torch"].next_logits[:len(prompts)].double()
            errs.append(float((a - b).norm() / b.norm()))
            same += int((a.argmax(-1) == b.argmax(-1)).sum())
            n += len(prompts)
            if step < steps:
                for m in models.values():
                    m.forward([(s, len(ids[s]) + step, [feeds[step][s]]) for s in range(len(prompts))])
        return {"forwards": steps + 1, "rows": len(prompts), "logits_relative_error_median": round(statistics.median(errs), 5),
                "logits_relative_error_max": round(max(errs), 5), "argmax_agreement": f"{same}/{n}"}
    finally:
        for m in models.values():
            m.close()
        torch.cuda.empty_cache()


def timings(spec: str, kernels: str) -> list[dict]:
    import torch

    from egcfg.lm import load_model

    model = load_model(with_option(spec, f"kernels={kernels}"), slots=max(r for r, _ in DECODE))
    out = []
    try:
        assert model.graphs is not None, "needs CUDA graphs (a CUDA device)"
        model.kv.normal_()  # (never time on zeros)
        g = torch.Generator().manual_seed(0)

        def median_ms(batch) -> float:
            times = []
            for i in range(11):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.forward(batch)
                torch.cuda.synchronize()
                if i >= 2:  # (seen once, captured, then replayed)
                    times.append(time.perf_counter() - t0)
            return 1e3 * statistics.median(times)

        def tokens(n):
            return torch.randint(0, model.n_vocab, (n,), generator=g).tolist()

        for rows, attended in DECODE:
            for spread in ("same", "spread"):
                if spread == "same":
                    starts = [attended - 1] * rows
                else:  # 1..2A evenly, mean A
                    starts = [max(0, round((i + 0.5) * 2 * attended / rows) - 1) for i in range(rows)]
                ms = median_ms([(s, starts[s], tokens(1)) for s in range(rows)])
                out.append({"kernels": kernels, "kind": "decode", "rows": rows, "tokens_per_row": 1,
                            "attended": attended, "lengths": spread, "ms": round(ms, 3)})
        for rows, n, attended in PREFILL:
            ms = median_ms([(s, attended - n, tokens(n)) for s in range(rows)])
            out.append({"kernels": kernels, "kind": "prefill", "rows": rows, "tokens_per_row": n,
                        "attended": attended, "lengths": "same", "ms": round(ms, 3)})
        for r in out:
            print(r, flush=True)
    finally:
        model.close()
        torch.cuda.empty_cache()
    return out


def fit(points: list[dict]) -> dict | None:
    """ms = fixed + ns x rows x tokens x attended, least squares."""
    import numpy as np

    if len(points) < 3:
        return None
    x = np.array([p["rows"] * p["tokens_per_row"] * p["attended"] for p in points], dtype=float)
    y = np.array([p["ms"] for p in points])
    slope, fixed = np.polyfit(x, y, 1)
    pred = fixed + slope * x
    r2 = 1 - float(((y - pred) ** 2).sum() / max(1e-12, ((y - y.mean()) ** 2).sum()))
    return {"fixed_ms": round(float(fixed), 3), "ns_per_row_token_position": round(float(slope) * 1e6, 3), "r2": round(r2, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("fused_kernels: needs a CUDA device", file=sys.stderr)
        return 2
    agree = agreement(args.model)
    print(agree, flush=True)
    shapes = timings(args.model, "torch") + timings(args.model, "fused")
    fits = {f"{k}/{kind}": fit([p for p in shapes if p["kernels"] == k and p["kind"] == kind and p["lengths"] == "same"])
            for k in ("torch", "fused") for kind in ("decode", "prefill")}
    result = {"command": "python benchmarks/fused_kernels.py " + " ".join(sys.argv[1:]), "date": now(),
              "machine": machine(), "model": args.model, "torch": torch.__version__,
              "triton": __import__("triton").__version__, "agreement": agree, "cost_model": fits, "shapes": shapes}
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fused_kernels.json").write_text(json.dumps(result, indent=1))
    torch_ms = {(p["kind"], p["rows"], p["tokens_per_row"], p["attended"], p["lengths"]): p["ms"] for p in shapes if p["kernels"] == "torch"}
    lines = ["# Fused Triton kernels vs HF's modules (transformers backend, CUDA graphs)", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- model: {args.model}; torch {result['torch']}, triton {result['triton']}",
             f"- agreement over {agree['forwards']} forwards of {agree['rows']} rows: logits relative error median "
             f"{agree['logits_relative_error_median']}, max {agree['logits_relative_error_max']}; argmax equal {agree['argmax_agreement']}",
             "- cost model (ms = fixed + ns x rows x tokens x attended, rows all at one length): " +
             "; ".join(f"{k}: {v['fixed_ms']} ms + {v['ns_per_row_token_position']} ns (r2 {v['r2']})" for k, v in fits.items() if v),
             "- one forward, CUDA graph replay, synchronized, median of 9", "",
             "| kind | rows | tokens/row | attended | row lengths | ms torch | ms fused | speed-up |", "|---|---|---|---|---|---|---|---|"]
    for p in shapes:
        if p["kernels"] != "fused":
            continue
        t = torch_ms[(p["kind"], p["rows"], p["tokens_per_row"], p["attended"], p["lengths"])]
        lines.append(f"| {p['kind']} | {p['rows']} | {p['tokens_per_row']} | {p['attended']} | {p['lengths']} | {t} | {p['ms']} | {t / p['ms']:.2f}x |")
    (folder / "fused_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
