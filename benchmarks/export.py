"""Export finished benchmark runs as committed data, and rebuild the summary table.

    .venv/bin/python benchmarks/export.py runs/humaneval-baseline runs/mbpp100-baseline ...

For each run folder: benchmarks/results/runs/<folder name>.json (the report with every agent's
settings, plus one row per task: the final program itself, its hidden verdict, agent, gamma, seconds) and .md (the headline table with command,
date, machine, model). Then benchmarks/results/summary.json is regenerated from every exported run:
a list of {"benchmark", "protocol", "method", "agents", "model", "tasks", "pass_at_1"}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "runs"


def export(folder: Path) -> Path:
    from egcfg.bench.report import format_markdown, summarize
    from egcfg.bench.store import Store

    store = Store(folder, create=False)
    try:
        summary = summarize(store)
        tasks = [{"task_id": t["task_id"], "passed_hidden": bool(t["passed_hidden"]), "passed_visible": bool(t["passed_visible"]),
                  "final_agent": t["final_agent"], "final_gamma": t["final_gamma"],
                  "seconds": round(t["stats"].get("seconds_total", 0.0), 2),
                  "final_code": t["code"]} for t in store.tasks()]
        # the full agent settings, so a run can be repeated even after a default changed
        summary["agent_configs"] = store.meta().get("agents")
    finally:
        store.close()
    summary["run"] = folder.name
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"{folder.name}.json"
    target.write_text(json.dumps({"summary": summary, "tasks": tasks}, indent=2) + "\n")
    target.with_suffix(".md").write_text(format_markdown(summary))
    return target


def rebuild_summary() -> list[dict]:
    rows = []
    for path in sorted(OUT.glob("*.json")):
        s = json.loads(path.read_text())["summary"]
        rows.append({"benchmark": s["benchmark"], "protocol": s["protocol"], "method": s["method"],
                     "agents": s["agents"], "model": s["model"], "tasks": s["tasks"], "pass_at_1": s["pass_at_1"],
                     "baseline_pass_at_1": s["baseline_pass_at_1"], "rsr": s["rsr"], "run": s["run"],
                     "tasks_planned": s.get("tasks_planned", s["tasks"])})
        if s.get("any_attempt_pass_at_1") is not None:  # the paper's count, beside the honest rate (newer exports)
            rows[-1]["any_attempt_pass_at_1"] = s["any_attempt_pass_at_1"]
        if s.get("tasks_planned", s["tasks"]) > s["tasks"]:  # stopped part-way: the rate and its bound
            rows[-1]["finished"] = False
            rows[-1]["pass_at_1_bound_over_planned"] = s["pass_at_1_bound_over_planned"]
    (ROOT / "benchmarks" / "results" / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def main(argv: list[str]) -> int:
    for folder in argv:
        print(export(Path(folder)))
    for row in rebuild_summary():
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
