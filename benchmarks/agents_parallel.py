"""Is it faster on this machine to run agents in parallel worker processes (one model each) or one
after another in one process? (A shared model server would serve the agents' requests through
one llama.cpp context; on 2 cores a batch of sequences decodes no faster than one sequence at a
time -- see the raw throughput in engine_phases.md -- so it cannot beat sequential agents.)

    .venv/bin/python benchmarks/agents_parallel.py --data ../shared/data [--tasks Mbpp/14,Mbpp/15,Mbpp/16]

Runs the same tasks with the same agents with --workers 1 and --workers 2 and reports wall time
and pass counts. Writes benchmarks/results/agents_parallel.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", default="Mbpp/14,Mbpp/15,Mbpp/16")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--gamma", default="0,1")
    parser.add_argument("--max-tokens", default="160")
    args = parser.parse_args()
    rows = []
    for workers in (1, 2):
        out = Path(tempfile.mkdtemp(prefix="egcfg-par-"))
        cmd = [sys.executable, "-m", "egcfg", "bench", "mbpp", "--data", args.data, "--tasks", args.tasks,
               "--agents", str(args.agents), "--workers", str(workers), "--gamma", args.gamma,
               "--max-tokens", args.max_tokens, "--out", str(out / "run"), "--no-progress"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        report = subprocess.run([sys.executable, "-m", "egcfg", "report", str(out / "run"), "--json"],
                                cwd=ROOT, capture_output=True, text=True, check=True)
        summary = json.loads(report.stdout)
        rows.append({"workers": workers, "wall_s": round(wall, 1), "solved": summary["solved"], "tasks": summary["tasks"],
                     "attempts": sum(v["attempts"] for v in summary["per_agent"].values())})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(out, ignore_errors=True)
    from egcfg.bench.store import provenance

    meta = {**provenance("python benchmarks/agents_parallel.py " + " ".join(sys.argv[1:])),
            "model": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (llama.cpp)", "tasks": args.tasks,
            "agents": args.agents, "gamma": args.gamma, "max_tokens": args.max_tokens}
    out = ROOT / "benchmarks" / "results" / "agents_parallel"
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Parallel agents: worker processes vs one process", "", *(f"- {k}: {v}" for k, v in meta.items()), "",
             "| workers | wall s | solved | tasks | attempts |", "|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['wall_s']} | {r['solved']} | {r['tasks']} | {r['attempts']} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
