"""The "gpu" section of benchmarks/results/speed.json, computed from a finished GPU benchmark run.

    .venv/bin/python benchmarks/gpu_run.py runs-gpu/mbpp500-v2 --cpu runs/mbpp20-egcfg --cpu runs/mbpp100-baseline

The run is an ``egcfg bench`` folder copied back from the GPU machine, with the ``*-util-<start>.csv``
files that ``nvidia-smi`` wrote during each call (``<start>`` = the call's start, epoch seconds).
Reported: wall minutes from the first call's start (model loading included) to the last finished
task, the time to first attempt (start-up), seconds per task, aggregate token and execution rates
(sums of the per-attempt stats over the solving time), GPU utilization over the samples, pass@1 and
its parity with CPU runs of the same tasks (``--cpu``, same verdict counts). The section that was
there before is kept as "gpu_before" (or ``--keep-as NAME``), so the file shows the change's effect.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def util_samples(run: Path) -> tuple[list[int], list[float]]:
    """The start of each device call (epoch seconds, from the ``*-util-<start>.csv`` names) and
    nvidia-smi's GPU utilization samples (%, one per 5 s from each call's start), in call order."""
    files = sorted(run.glob("*-util-*.csv"), key=lambda f: int(f.stem.rsplit("-", 1)[1]))
    samples = []
    for f in files:
        for line in f.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[1].endswith("%"):
                samples.append(float(parts[1].rstrip(" %")))
    return [int(f.stem.rsplit("-", 1)[1]) for f in files], samples


def parity(run: Path, cpu: Path) -> dict:
    db = sqlite3.connect(run / "results.sqlite")
    db.execute("ATTACH ? AS c", (str(cpu / "results.sqlite"),))
    method = json.loads(db.execute("SELECT value FROM c.meta WHERE key = 'method'").fetchone()[0])
    if method == "baseline":  # compare with the GPU run's own greedy attempts (its first agent's gamma 0)
        first = json.loads(db.execute("SELECT value FROM meta WHERE key = 'agents'").fetchone()[0])[0]["name"]
        sql = ("SELECT count(*), sum(a.passed_hidden), sum(b.passed_hidden), sum(a.passed_hidden = b.passed_hidden) "
               f"FROM attempts a JOIN c.tasks b USING (task_id) WHERE a.gamma = 0 AND a.agent = '{first}'")
    else:
        sql = ("SELECT count(*), sum(a.passed_hidden), sum(b.passed_hidden), sum(a.passed_hidden = b.passed_hidden) "
               "FROM tasks a JOIN c.tasks b USING (task_id)")
    n, gpu, cpu_pass, same = (v or 0 for v in db.execute(sql).fetchone())
    db.close()
    what = "greedy" if method == "baseline" else "EG-CFG"
    return {"cpu_run": str(cpu), "what": what, "tasks": n, "gpu_pass_at_1": round(100 * gpu / n, 1),
            "cpu_pass_at_1": round(100 * cpu_pass / n, 1), "same_verdict": same}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--cpu", action="append", default=[], help="a CPU run folder of some of the same tasks")
    ap.add_argument("--device", default=None, help="GPU name (default: from the run's machine field)")
    ap.add_argument("--keep-as", default="gpu_before",
                    help="where the section this run replaces is kept (default: gpu_before)")
    args = ap.parse_args()
    run = Path(args.run)
    db = sqlite3.connect(run / "results.sqlite")
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    first_attempt, = db.execute("SELECT min(created) FROM attempts").fetchone()
    n_tasks, passed, last = db.execute("SELECT count(*), sum(passed_hidden), max(created) FROM tasks").fetchone()
    first = meta["agents"][0]["name"]
    greedy = db.execute("SELECT sum(passed_hidden) FROM attempts WHERE gamma = 0 AND agent = ?", (first,)).fetchone()[0] or 0
    sums = {k: 0.0 for k in ("tokens_decoded", "tokens_prefilled", "candidate_tokens", "executions")}
    for (stats,) in db.execute("SELECT stats FROM attempts"):
        stats = json.loads(stats)
        for k in sums:
            sums[k] += stats.get(k, 0)
    db.close()
    starts, samples = util_samples(run)
    start = min(starts) if starts else first_attempt
    solving = last - first_attempt
    wall = last - start
    section = {
        "command": meta.get("command"), "date": meta.get("date"), "machine": meta.get("machine"),
        "model_spec": meta.get("model_spec"), "summarised_by": "python benchmarks/gpu_run.py " + " ".join(sys.argv[1:]),
        "signal_budget": meta["agents"][0].get("signal_budget"),
        "calls": len(starts), "mbpp_tasks_done": n_tasks,
        "mbpp500_minutes": round(wall / 60, 2) if n_tasks == 500 else None,
        "target_minutes": 15,
        "startup_seconds": round(first_attempt - start, 1),
        "seconds_per_task": round(wall / n_tasks, 3),
        "pass_at_1": round(100 * passed / n_tasks, 2), "greedy_pass_at_1": round(100 * greedy / n_tasks, 2),
        "tokens_per_second": {"decoded": round(sums["tokens_decoded"] / solving, 1),
                              "prefilled": round(sums["tokens_prefilled"] / solving, 1),
                              "candidates": round(sums["candidate_tokens"] / solving, 1)},
        "executions_per_second": round(sums["executions"] / solving, 1),
        "gpu_utilization_percent": {"mean": round(sum(samples) / len(samples), 1), "max": max(samples),
                                    "samples": len(samples)} if samples else None,
        "pass_rate_parity": [parity(run, Path(c)) for c in args.cpu],
    }
    out = ROOT / "benchmarks" / "results" / "speed.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    if "gpu" in data and data["gpu"].get("command") != section["command"]:
        data[args.keep_as] = data["gpu"]
    data["gpu"] = section
    out.write_text(json.dumps(data, indent=1) + "\n")
    from speed import write_markdown

    write_markdown(data)
    print(json.dumps(section, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
