"""Time split per phase of EG-CFG on a few tasks, with the embedded model on this machine.

    .venv/bin/python benchmarks/engine_phases.py [TASK.json ...] [--gamma 1] [--out benchmarks/results/engine_phases]

Writes OUT.json and OUT.md: per task the wall time, seconds per phase (prompt prefill, candidate
sampling, sandboxed execution, guided decoding incl. p_dyn re-prefill), tokens, and the rate of
guided decoding (generated tokens / guided seconds). Also measures the raw prefill and decode
throughput of the model in the same run, for reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TASKS = ["examples/opposite_signs.json", "examples/second_smallest.json", "examples/io_sum.json"]


def raw_throughput(model) -> dict:
    session = model.session(2)
    tokens = model.tokenize("def f(x):\n    return x + 1\n" * 40)[:256]
    t0 = time.perf_counter()
    logits = session.sync(0, tokens)
    prefill = len(tokens) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(32):
        logits = session.step({0: int(np.argmax(logits))})[0]
    decode = 32 / (time.perf_counter() - t0)
    session.close()
    return {"prefill_tokens_per_s": round(prefill, 1), "decode_tokens_per_s": round(decode, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tasks", nargs="*", default=DEFAULT_TASKS)
    parser.add_argument("--gamma", default="0,0.5,1,3", help="gamma schedule, as for `egcfg solve`")
    parser.add_argument("--out", default="benchmarks/results/engine_phases")
    args = parser.parse_args()

    from egcfg import Config, load_tasks, solve
    from egcfg.execution.sandbox import Limits, Sandbox
    from egcfg.lm.llamacpp import LlamaCppModel
    from egcfg.models import ensure_model

    config = Config(gammas=tuple(float(g) for g in args.gamma.split(",")))
    model = LlamaCppModel(ensure_model(), n_ctx=config.n_ctx)
    rows = []
    with Sandbox(Limits(timeout=config.run_timeout)) as sandbox:
        raw = raw_throughput(model)
        for path in args.tasks:
            for task in load_tasks(ROOT / path):
                t0 = time.perf_counter()
                result = solve(task, model=model, config=config, sandbox=sandbox)
                wall = time.perf_counter() - t0
                st = result.stats
                generated = sum(len(a.tokens) for a in result.attempts)
                rows.append({
                    "task": task.task_id, "passed": result.passed, "gamma": result.gamma,
                    "attempts": len(result.attempts), "wall_s": round(wall, 2),
                    **st.to_dict(), "generated_tokens": generated,
                    "guided_tokens_per_s": round(generated / st.seconds_guided, 2) if st.seconds_guided else None,
                })
                print(json.dumps(rows[-1]), flush=True)
    from egcfg.bench.store import provenance

    meta = {**provenance("python benchmarks/engine_phases.py " + " ".join(sys.argv[1:])),
            "model": model.name, "config": config.to_dict(), "raw_throughput": raw}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "tasks": rows}, indent=2) + "\n")
    cols = ["task", "passed", "gamma", "wall_s", "seconds_prefill", "seconds_sampling", "seconds_execution",
            "seconds_guided", "tokens_prefilled", "tokens_decoded", "candidate_tokens", "executions", "guided_tokens_per_s"]
    lines = ["# EG-CFG time per phase", "", f"- command: `{meta['command']}`", f"- date: {meta['date']}",
             f"- machine: {meta['machine']}", f"- model: {meta['model']} (llama.cpp)",
             f"- raw model throughput, same run: prefill {raw['prefill_tokens_per_s']} tok/s, decode {raw['decode_tokens_per_s']} tok/s", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
