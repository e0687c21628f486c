"""Export finished benchmark runs as committed data, and rebuild the summary table.

    .venv/bin/python benchmarks/export.py runs/humaneval-baseline runs/mbpp100-baseline ...

For each run folder: benchmarks/results/runs/<folder name>.json (the report with every agent's
settings, plus one row per task: the final program itself, its hidden verdict, agent, gamma, seconds) and .md (the headline table with command,
date, machine, model). Then benchmarks/results/summary.json is regenerated from every exported run:
a list of {"benchmark", "protocol", "method", "agents", "model", "tasks", "pass_at_1", ...}, each
EG-CFG row with the sampling control and greedy run exported on exactly its tasks beside it, and
summary.md shows every EG-CFG row with its controls.
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


def _tokens_per_task(s: dict) -> float | None:
    cost = s.get("cost_per_task") or {}
    if cost.get("tokens_decoded") is None:
        return None
    return round(cost["tokens_decoded"] + (cost.get("candidate_tokens") or 0), 1)


def prompt_of(summary: dict) -> str:
    """The prompt format(s) a run's agents used, made concrete for its benchmark (``auto`` is
    evalplus where the tasks give a signature, one-shot elsewhere; runs from before the field
    recorded it ran one-shot): a control counts only with the same prompt."""
    from egcfg.bench.datasets import GIVEN_SIGNATURE
    from egcfg.config import as_recorded
    from egcfg.prompts import concrete

    given = summary["benchmark"] in GIVEN_SIGNATURE
    return ",".join(sorted({concrete(as_recorded(a)["prompt_format"], given) for a in summary.get("agent_configs") or []}))


def rebuild_summary() -> list[dict]:
    rows, task_sets = [], []
    for path in sorted(OUT.glob("*.json")):
        export = json.loads(path.read_text())
        s = export["summary"]
        rows.append({"benchmark": s["benchmark"], "protocol": s["protocol"], "method": s["method"],
                     "agents": s["agents"], "model": s["model"], "prompt": prompt_of(s), "tasks": s["tasks"],
                     "pass_at_1": s["pass_at_1"], "date": s.get("date"),
                     "baseline_pass_at_1": s["baseline_pass_at_1"], "rsr": s["rsr"], "run": s["run"],
                     "tasks_planned": s.get("tasks_planned", s["tasks"]),
                     "generated_tokens_per_task": _tokens_per_task(s)})
        task_sets.append(frozenset(t["task_id"] for t in export.get("tasks", [])))
        if s.get("any_attempt_pass_at_1") is not None:  # the paper's count, beside the honest rate (newer exports)
            rows[-1]["any_attempt_pass_at_1"] = s["any_attempt_pass_at_1"]
        if s.get("extensions"):  # beyond the paper's method (e.g. accept-candidates)
            rows[-1]["extensions"] = s["extensions"]
        if s.get("tasks_planned", s["tasks"]) > s["tasks"]:  # stopped part-way: the rate and its bound
            rows[-1]["finished"] = False
            rows[-1]["pass_at_1_bound_over_planned"] = s["pass_at_1_bound_over_planned"]
    # Each EG-CFG row gets the controls exported on exactly its tasks, with the same model, prompt
    # and protocol: the sampling control (as many agents) and greedy, each with its tokens per task.
    # Where several qualify, the one run closest in time (the same session, machine and code).
    def apart(other: dict, row: dict) -> float:
        from datetime import datetime

        try:
            return abs((datetime.fromisoformat(other["date"]) - datetime.fromisoformat(row["date"])).total_seconds())
        except (TypeError, ValueError):
            return float("inf")

    for row, tasks in zip(rows, task_sets):
        if row["method"] != "egcfg" or not tasks:
            continue
        for other, other_tasks in sorted(zip(rows, task_sets), key=lambda pair: apart(pair[0], row)):
            if (other is row or other_tasks != tasks or other["model"] != row["model"] or other["prompt"] != row["prompt"]
                    or other["protocol"] != row["protocol"] or other["benchmark"] != row["benchmark"]):
                continue
            if other["method"] == "sampling" and other["agents"] == row["agents"]:
                row.setdefault("sampling_control", {"run": other["run"], "pass_at_1": other["pass_at_1"],
                                                    "generated_tokens_per_task": other["generated_tokens_per_task"]})
            elif other["method"] == "baseline":
                row.setdefault("greedy_run", {"run": other["run"], "pass_at_1": other["pass_at_1"],
                                              "generated_tokens_per_task": other["generated_tokens_per_task"]})
    results = ROOT / "benchmarks" / "results"
    (results / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    (results / "summary.md").write_text(summary_markdown(rows))
    return rows


def summary_markdown(rows: list[dict]) -> str:
    """Every EG-CFG row with its greedy (its own gamma-0 attempts) and its sampling control beside it."""
    out = ["# EG-CFG runs with their controls (written by benchmarks/export.py)", "",
           "pass@1 on the hidden tests; greedy is each run's own first attempt (gamma 0, same prompt), or where "
           "the run has none on every task (several agents race, and a winner cancels the others) an exported "
           "greedy run on exactly the same tasks, model and prompt, marked (run); the sampling "
           "control is an exported `--method sampling` run on exactly the same tasks, model, prompt and number of agents. "
           "Tokens: generated per task (guided steps and candidates; the control's sampled programs).", "",
           "| run | benchmark | prompt | tasks | agents | EG-CFG pass@1 | tokens/task | greedy | sampling control | its tokens/task | beyond the paper |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] != "egcfg":
            continue
        ctl = r.get("sampling_control")
        greedy = r["baseline_pass_at_1"]
        if greedy is None and r.get("greedy_run"):
            greedy = f"{r['greedy_run']['pass_at_1']} (run)"
        tasks = f"{r['tasks']}" + (f" of {r['tasks_planned']}" if r.get("finished") is False else "")
        rate = f"{r['pass_at_1']}" + (f" (at least {r['pass_at_1_bound_over_planned']} of all planned)"
                                      if r.get("finished") is False else "")
        out.append(f"| {r['run']} | {r['benchmark']} | {r['prompt']} | {tasks} | {r['agents']} | {rate} | "
                   f"{r['generated_tokens_per_task']} | {greedy} | "
                   f"{ctl['pass_at_1'] if ctl else 'not run'} | {ctl['generated_tokens_per_task'] if ctl else ''} | "
                   f"{'accept-candidates' if any('accept-candidates' in e for e in r.get('extensions', [])) else ''} |")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    import argparse

    from egcfg.errors import EgcfgError

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="*", help="run folders (egcfg bench --out) to export; none: only rebuild the summary")
    args = ap.parse_args(argv)
    try:
        for folder in args.folders:
            print(export(Path(folder)))
        for row in rebuild_summary():
            print(json.dumps(row))
    except EgcfgError as exc:  # (a folder that is no run: one line, not a traceback)
        print(f"export: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
