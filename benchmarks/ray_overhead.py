"""What Ray costs: the same grid run through the local runner and through `--ray local`, on one GPU.

On the GPU machine (each run alone on the GPU, one after another, same tasks and settings):

    python benchmarks/gpu_grid.py run RUN/off  --agents 4 --model M --concurrency 64 --workers 1 -- --data D --limit 40
    python benchmarks/gpu_grid.py run RUN/on   --agents 4 --model M --concurrency 64 --workers 1 -- --data D --limit 40 \\
        --ray local --ray-cpus-per-worker 16
    python benchmarks/gpu_grid.py run RUN/off2 ...     (the local runner again: the run-to-run spread)
    python benchmarks/gpu_grid.py run RUN/half2 --workers 2 ... --ray local --ray-gpus-per-worker 0.5 --ray-cpus-per-worker 8

Here:

    python benchmarks/ray_overhead.py --local RUN/off RUN/off2 --ray RUN/on --shared RUN/half2

writes the ``ray_overhead`` section of benchmarks/results/speed.json (and speed.md): each run's wall
time (start-up and model loading included: Ray's own start-up is part of its cost), generated tokens
per second, and Ray's overhead against the mean of the local runs, in wall time and in wall time per
generated token (the runs' sampled attempts and cancellations differ a little, so their work does too).
The runs must have finished every planned task, each in one call.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_grid import now, write_speed_md  # noqa: E402
from speed import RESULTS  # noqa: E402
from weak_spots import attempt_tokens  # noqa: E402

TARGET = 5.0  # percent of the wall time (issue 15)


def measure(folder: Path) -> dict:
    calls = [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines() if line.strip()]
    if len(calls) != 1 or calls[0]["rc"] != 0:
        sys.exit(f"ray_overhead.py: {folder} is not one finished call ({len(calls)} calls)")
    db = sqlite3.connect(f"file:{folder / 'results.sqlite'}?mode=ro", uri=True)
    try:
        generated, _ = attempt_tokens([{"stats": stats} for (stats,) in db.execute("SELECT stats FROM attempts")])
        tasks, = db.execute("SELECT count(*) FROM tasks").fetchone()
        passed, = db.execute("SELECT coalesce(sum(passed_hidden), 0) FROM tasks").fetchone()
        attempts, = db.execute("SELECT count(*) FROM attempts").fetchone()
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    finally:
        db.close()
    wall = calls[0]["end"] - calls[0]["start"]
    return {"run": folder.name, "command": calls[0]["command"], "machine": calls[0]["machine"],
            "started": datetime.fromtimestamp(calls[0]["start"], timezone.utc).isoformat(timespec="seconds"),
            "planned": len(meta.get("tasks") or []) or None, "tasks": tasks, "attempts": attempts,
            "pass_at_1": round(100 * passed / max(1, tasks), 1), "wall_seconds": round(wall, 1),
            "generated_tokens": generated, "generated_tokens_per_second": round(generated / wall),
            "seconds_per_1k_generated": round(1000 * wall / max(1, generated), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local", nargs="+", required=True, help="runs of the local runner")
    ap.add_argument("--ray", required=True, help="the same run through --ray local, one GPU actor")
    ap.add_argument("--shared", help="optional: two actors sharing the GPU (--ray-gpus-per-worker 0.5)")
    args = ap.parse_args()
    local = [measure(Path(p)) for p in args.local]
    ray = measure(Path(args.ray))
    shared = measure(Path(args.shared)) if args.shared else None
    wall = sum(r["wall_seconds"] for r in local) / len(local)
    per_tok = sum(r["seconds_per_1k_generated"] for r in local) / len(local)
    spread = 100 * (max(r["wall_seconds"] for r in local) - min(r["wall_seconds"] for r in local)) / wall
    section = {
        "what": "the same grid run (MBPP, first tasks, first agents of the paper grid) through the local runner and "
                "through egcfg bench --ray local with one GPU actor, each alone on the GPU, one after another",
        "local_runs": local, "ray_run": ray, "shared_gpu_run": shared,
        "overhead_wall_percent": round(100 * (ray["wall_seconds"] / wall - 1), 1),
        "overhead_per_generated_token_percent": round(100 * (ray["seconds_per_1k_generated"] / per_tok - 1), 1),
        "local_spread_percent": round(spread, 1),
        "target_percent": TARGET,
        "shared_gpu_note": "two Ray actors with 0.5 GPU each on the one H200 (the multi-actor path of the multi-GPU "
                           "issue); wall against the local runner's mean: "
                           f"{round(100 * (shared['wall_seconds'] / wall - 1), 1)}%" if shared else None,
        "date": ray["started"], "summarized": now(), "machine": ray["machine"],
        "summarized_by": "python benchmarks/ray_overhead.py " + " ".join(sys.argv[1:]),
    }
    path = RESULTS / "speed.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data["ray_overhead"] = section
    path.write_text(json.dumps(data, indent=1) + "\n")
    write_speed_md(data)
    print(json.dumps({k: v for k, v in section.items() if k not in ("local_runs", "ray_run", "shared_gpu_run")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
