"""The "gpu_ablation" section of benchmarks/results/speed.json: the same task set run on the GPU in
several configurations (processes x threads, packed prefills on or off), compared on solving speed.

    .venv/bin/python benchmarks/gpu_ablation.py runs-gpu/abl-4x32 runs-gpu/abl-4x32-unpacked ...

Each run is an ``egcfg bench`` folder copied back from the GPU machine with the ``*-util-<start>.csv``
file ``nvidia-smi`` wrote during it. Runs may be time-boxed (stopped before their last task): the
measure is the seconds from a run's first finished attempt to its 25th, 50th and 75th finished task.
Start-up is left out on purpose: the first ``egcfg`` process of each device call spent about 50 s
more before touching the GPU than the ones after it (its memory stayed empty: loading, probably
from cold file caches), whatever the configuration; and the tail of a time-boxed run is a few slow
tasks, not throughput. Configuration comes from the run's own command: ``--workers``,
``--concurrency``, and ``prefill_rows=1`` in the model spec (packing off).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
MARKS = (25, 50, 75)

from gpu_run import util_samples  # noqa: E402  (benchmarks/ is on the path above)


def summarise(run: Path) -> dict:
    db = sqlite3.connect(run / "results.sqlite")
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    first, = db.execute("SELECT min(created) FROM attempts").fetchone()
    done = [t for (t,) in db.execute("SELECT created FROM tasks ORDER BY created")]
    passed, = db.execute("SELECT coalesce(sum(passed_hidden), 0) FROM tasks").fetchone()
    db.close()
    if first is None:
        raise SystemExit(f"gpu_ablation: {run} has no finished attempt")
    command = meta.get("command", "")
    workers = re.search(r"--workers (\d+)", command)
    concurrency = re.search(r"--concurrency (\d+)", command)
    starts, samples = util_samples(run)
    start = min(starts)
    skip = int((first - start) // 5)  # one sample per 5 s from the file's start: these were start-up
    busy = samples[skip:skip + int((done[-1] - first) // 5) + 1] if done else []
    return {"run": run.name, "command": command, "workers": int(workers.group(1)) if workers else 1,
            "concurrency": int(concurrency.group(1)) if concurrency else 1,
            "packed": "prefill_rows=1" not in meta.get("model_spec", ""),
            "tasks_done": len(done), "passed": passed, "startup_seconds": round(first - start, 1),
            "seconds_to_tasks": {str(k): round(done[k - 1] - first, 1) for k in MARKS if len(done) >= k},
            "gpu_util_mean": round(sum(busy) / len(busy), 1) if busy else None,
            "finish_seconds": [round(t - first, 1) for t in done]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--machine", default=None, help="machine label (default: the first run's)")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf, transformers, bfloat16")
    ap.add_argument("--conclusion", default=None, help="one paragraph: what the table shows")
    args = ap.parse_args()
    rows = [summarise(Path(r)) for r in args.runs]
    first = sqlite3.connect(Path(args.runs[0]) / "results.sqlite")
    meta = {k: json.loads(v) for k, v in first.execute("SELECT key, value FROM meta")}
    first.close()
    shown = [shlex.quote(a) for a in args.runs] + (["--machine", shlex.quote(args.machine)] if args.machine else [])
    section = {"summarised_by": "python benchmarks/gpu_ablation.py " + " ".join(shown) + (" --conclusion ..." if args.conclusion else ""),
               "date": meta.get("date"), "machine": args.machine or meta.get("machine"), "model": args.model,
               "workload": f"{meta.get('benchmark')} first {len(meta.get('task_ids') or [])} tasks, 1 agent, defaults",
               "measure": "seconds from the first finished attempt to the 25th / 50th / 75th finished task "
                          "(start-up and the time-boxed tail left out)",
               "runs": rows}
    if args.conclusion:
        section["conclusion"] = args.conclusion
    out = ROOT / "benchmarks" / "results" / "speed.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    data["gpu_ablation"] = section
    out.write_text(json.dumps(data, indent=1) + "\n")
    from speed import write_markdown

    write_markdown(data)
    for r in rows:
        print(r["run"], r["workers"], "x", r["concurrency"], "packed" if r["packed"] else "unpacked",
              r["tasks_done"], r["seconds_to_tasks"], r["gpu_util_mean"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
