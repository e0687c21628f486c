"""Are two benchmark runs the same programs? Byte-for-byte, per task and per attempt.

    .venv/bin/python benchmarks/compare_runs.py RUN_BEFORE RUN_AFTER [--label refactor_parity] \
        [--note "what differs between the two"]

For a change that must not change behaviour (a refactor): run the same `egcfg bench` command on the
code before and after it, on the same machine, and compare. RUN_BEFORE may also be an exported run
(benchmarks/results/runs/NAME.json: its final programs are compared, it holds no attempts). Writes
benchmarks/results/<label>.json and .md with the counts, every differing key, and both runs' meta.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(folder: str) -> tuple[dict, dict, dict]:
    if folder.endswith(".json"):  # an exported run (benchmarks/results/runs/): final programs only
        data = json.loads(Path(folder).read_text())
        tasks = {t["task_id"]: {"code": t["final_code"], "passed_hidden": int(t["passed_hidden"])} for t in data["tasks"]}
        return data["summary"], tasks, {}
    db = sqlite3.connect(f"file:{Path(folder).resolve() / 'results.sqlite'}?mode=ro", uri=True)
    try:
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        tasks = {r[0]: {"code": r[1], "passed_hidden": r[2]} for r in
                 db.execute("SELECT task_id, code, passed_hidden FROM tasks")}
        attempts = {f"{r[0]} | {r[1]} | gamma {r[2]:g}": r[3] for r in
                    db.execute("SELECT task_id, agent, gamma, code FROM attempts")}
    finally:
        db.close()
    return meta, tasks, attempts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--label", default="refactor_parity")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    mb, tb, ab = load(args.before)
    ma, ta, aa = load(args.after)
    tasks = sorted(set(tb) & set(ta))
    keys = sorted(set(ab) & set(aa))
    out = {
        "note": args.note,
        "command": "python benchmarks/compare_runs.py " + " ".join(sys.argv[1:]),
        "tasks_before": len(tb), "tasks_after": len(ta), "tasks_compared": len(tasks),
        "final_programs_identical": sum(tb[t]["code"] == ta[t]["code"] for t in tasks),
        "final_programs_differing": [t for t in tasks if tb[t]["code"] != ta[t]["code"]],
        "attempts_before": len(ab), "attempts_after": len(aa), "attempts_compared": len(keys),
        "attempts_identical": sum(ab[k] == aa[k] for k in keys),
        "attempts_differing": [k for k in keys if ab[k] != aa[k]],
        "attempts_only_before": sorted(set(ab) - set(aa)), "attempts_only_after": sorted(set(aa) - set(ab)),
        "pass_at_1_hidden_before": sum(tb[t]["passed_hidden"] for t in tb),
        "pass_at_1_hidden_after": sum(ta[t]["passed_hidden"] for t in ta),
        "meta_before": {k: mb.get(k) for k in ("command", "date", "machine", "model", "benchmark", "protocol")},
        "meta_after": {k: ma.get(k) for k in ("command", "date", "machine", "model", "benchmark", "protocol")},
    }
    path = ROOT / "benchmarks" / "results" / args.label
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# {args.label}: the same programs before and after?", "", args.note, "",
             f"- command: `{out['command']}`",
             f"- before: `{mb.get('command')}`, {mb.get('date')}, {mb.get('machine')}",
             f"- after: `{ma.get('command')}`, {ma.get('date')}, {ma.get('machine')}", "",
             "| compared | identical | differing | only before | only after |", "|---|---|---|---|---|",
             f"| final programs ({len(tasks)} tasks) | {out['final_programs_identical']} | "
             f"{len(out['final_programs_differing'])} | {len(set(tb) - set(ta))} | {len(set(ta) - set(tb))} |",
             f"| attempts ({len(keys)}) | {out['attempts_identical']} | {len(out['attempts_differing'])} | "
             f"{len(out['attempts_only_before'])} | {len(out['attempts_only_after'])} |", "",
             f"pass@1 on the hidden tests: {out['pass_at_1_hidden_before']}/{len(tb)} before, "
             f"{out['pass_at_1_hidden_after']}/{len(ta)} after."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if not out["final_programs_differing"] and not out["attempts_differing"] else 1


if __name__ == "__main__":
    sys.exit(main())
