"""How close EG-CFG runs to what the backend allows, and what it costs over plain greedy decoding.

    .venv/bin/python benchmarks/speed.py --humaneval 5 --mbpp 5 --data ../shared/data

On a fixed task set (the first N HumanEval and MBPP test tasks, one agent, default settings, fixed
seed) it measures, in one process and with one backend:

* the raw model throughput (prefill tok/s; decode tok/s for 1 sequence and for the candidate batch);
* per task: wall time, tokens prefilled / decoded / sampled as candidates, executions, seconds
  per phase (prompt prefill, candidate sampling, sandboxed execution, guided decoding);
* lower bound = prefilled / prefill rate + decoded / decode rate + candidate tokens / batched rate:
  the time the model work alone takes at the measured speed; efficiency = lower bound / wall;
* plain greedy decoding (gamma 0 only, same prompt) on the same tasks: overhead = EG-CFG / greedy.

Writes the "cpu" (or "gpu" with --section gpu) part of benchmarks/results/speed.json and a
markdown table beside it; other sections already in the file are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results"
PHASES = ("seconds_prefill", "seconds_sampling", "seconds_execution", "seconds_guided")


def task_set(n_humaneval: int, n_mbpp: int, data: str | None):
    from egcfg.bench.datasets import load_benchmark

    tasks = load_benchmark("humaneval", None)[:n_humaneval] if n_humaneval else []
    if n_mbpp:
        tasks += load_benchmark("mbpp", data)[:n_mbpp]
    return tasks


def run(model, tasks, config, sandbox) -> list[dict]:
    from egcfg import solve

    rows = []
    for task in tasks:
        t0 = time.perf_counter()
        result = solve(task, model=model, config=config, sandbox=sandbox)
        wall = time.perf_counter() - t0
        st = result.stats
        rows.append({"task_id": task.task_id, "wall": round(wall, 3), "passed_visible": result.passed,
                     "gamma": result.gamma, "attempts": len(result.attempts),
                     "tokens_prefilled": st.tokens_prefilled, "tokens_decoded": st.tokens_decoded,
                     "candidate_tokens": st.candidate_tokens, "executions": st.executions,
                     **{k: round(getattr(st, k), 3) for k in PHASES}})
        print(f"  {task.task_id}: {wall:.1f} s, gamma {result.gamma}, passed {result.passed}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="EG-CFG speed: efficiency vs the backend's bound, overhead vs greedy")
    ap.add_argument("--humaneval", type=int, default=5, help="first N HumanEval tasks")
    ap.add_argument("--mbpp", type=int, default=5, help="first N MBPP test tasks")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with mbpp.jsonl")
    ap.add_argument("--model", default=None, help="model spec (default: the embedded model on llama.cpp)")
    ap.add_argument("--section", default="cpu", help="section of speed.json to write (cpu | gpu)")
    ap.add_argument("--note", default=None, help="a line about this run, kept in its section")
    ap.add_argument("--signal-budget", type=int, default=None, help="token budget of the trace signal (default: the default)")
    args = ap.parse_args(argv)

    from backend_throughput import measure
    from egcfg import Config
    from egcfg.execution.sandbox import Limits, Sandbox
    from egcfg.lm import load_model

    config = Config() if args.signal_budget is None else Config(signal_budget=args.signal_budget)
    model = load_model(args.model, n_ctx=config.n_ctx)
    tasks = task_set(args.humaneval, args.mbpp, args.data)
    print(f"{len(tasks)} tasks; measuring raw throughput", flush=True)
    raw = measure(model, prompt_tokens=512, batches=(1, config.candidates), steps=24)
    prefill = raw["prefill_tok_s"]
    decode1 = raw["decode"]["1"]["tok_s"]
    decode_batch = raw["decode"][str(config.candidates)]["tok_s"]
    with Sandbox(Limits(timeout=config.run_timeout)) as sandbox:
        print("EG-CFG (default gammas)", flush=True)
        egcfg_rows = run(model, tasks, config, sandbox)
        print("greedy (gamma 0 only)", flush=True)
        greedy_rows = run(model, tasks, Config(gammas=(0.0,)), sandbox)

    for row in egcfg_rows:
        bound = (row["tokens_prefilled"] / prefill + row["tokens_decoded"] / decode1
                 + row["candidate_tokens"] / decode_batch)
        row["lower_bound"] = round(bound, 3)
        row["efficiency"] = round(bound / row["wall"], 3)
    wall = sum(r["wall"] for r in egcfg_rows)
    greedy_wall = sum(r["wall"] for r in greedy_rows)
    bound = sum(r["lower_bound"] for r in egcfg_rows)
    phases = {k: round(sum(r[k] for r in egcfg_rows), 2) for k in PHASES}
    other = round(wall - sum(phases.values()), 2)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    section = {
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "model": model.describe(), "commit": commit, "tasks": len(tasks), "signal_budget": config.signal_budget,
        "raw": {"prefill_tok_s": prefill, "decode_tok_s": decode1, "decode_batch_tok_s": decode_batch,
                "batch": config.candidates},
        "efficiency": round(bound / wall, 3),
        "overhead_vs_greedy": round(wall / greedy_wall, 2),
        "seconds_per_task": round(wall / len(tasks), 2),
        "greedy_seconds_per_task": round(greedy_wall / len(tasks), 2),
        "lower_bound_seconds": round(bound, 2), "wall_seconds": round(wall, 2),
        "phase_seconds": {**phases, "other": other},
        "passed_visible": sum(r["passed_visible"] for r in egcfg_rows),
        "greedy_passed_visible": sum(r["passed_visible"] for r in greedy_rows),
        "per_task": egcfg_rows, "greedy_per_task": greedy_rows,
    }
    out = RESULTS / "speed.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    if args.note:
        section["note"] = args.note
    data[args.section] = section  # (replaced whole: a note about an earlier run must not stay)
    out.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(data)
    print(json.dumps({k: section[k] for k in ("efficiency", "overhead_vs_greedy", "seconds_per_task",
                                              "greedy_seconds_per_task", "phase_seconds")}, indent=1))
    return 0


def write_markdown(data: dict) -> None:
    lines = ["# EG-CFG speed", ""]
    for key in sorted(k for k in data if k.startswith("cpu")):
        cpu = data[key]
        lines += [f"## {key.upper().replace('_', ', ')} ({cpu['model'].get('backend')}, signal budget "
                  f"{cpu.get('signal_budget', 1536)}): `{cpu['command']}`", "",
                  f"- date: {cpu['date']}; machine: {cpu['machine']}; commit {cpu.get('commit', '')}",
                  f"- model: {cpu['model'].get('model')}"] + ([f"- note: {cpu['note']}"] if cpu.get("note") else []) + ["",
                  "| tasks | visible-test passes EG-CFG / greedy | efficiency (bound / wall) | overhead vs greedy | s/task EG-CFG | s/task greedy | prefill tok/s | decode tok/s (1 / batch) |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {cpu['tasks']} | {cpu.get('passed_visible')} / {cpu.get('greedy_passed_visible')} | {cpu['efficiency']} | "
                  f"{cpu['overhead_vs_greedy']}x | {cpu['seconds_per_task']} | "
                  f"{cpu['greedy_seconds_per_task']} | {cpu['raw']['prefill_tok_s']} | {cpu['raw']['decode_tok_s']} / "
                  f"{cpu['raw']['decode_batch_tok_s']} |", "",
                  "Seconds per phase over all tasks: " + ", ".join(f"{k.replace('seconds_', '')} {v}"
                                                                  for k, v in cpu["phase_seconds"].items()), ""]
    titles = {"gpu": "GPU", "gpu_before": "GPU, before the multi-process runner (the first measurement)"}
    gpu_keys = ["gpu"] + sorted(k for k in data if k.startswith("gpu_") and k not in ("gpu_before", "gpu_ablation")) + ["gpu_before"]
    for key in gpu_keys:
        gpu = data.get(key)
        if not gpu:
            continue
        title = titles.get(key) or key.upper().replace("_", ", ", 1).replace("_", " ")
        lines += [f"## {title}", ""] + [f"- {k}: {v}" for k, v in gpu.items() if not isinstance(v, (dict, list))]
        for k in ("tokens_per_second", "gpu_utilization_percent"):
            if isinstance(gpu.get(k), dict):
                lines.append(f"- {k}: " + ", ".join(f"{a} {b}" for a, b in gpu[k].items()))
        for row in gpu.get("pass_rate_parity") or []:
            if isinstance(row, dict):
                lines.append(f"- parity with `{row['cpu_run']}` ({row['what']}, {row['tasks']} tasks): GPU "
                             f"{row['gpu_pass_at_1']}% vs CPU {row['cpu_pass_at_1']}%, same verdict on {row['same_verdict']}")
        lines += [""]
    lines += ablation_markdown(data.get("gpu_ablation"))
    lines += grid_markdown(data)
    (RESULTS / "speed.md").write_text("\n".join(lines) + "\n")


def grid_markdown(data: dict) -> list[str]:
    """One line per grid run against the targets (benchmarks/gpu_grid.py writes the sections), and
    Ray's overhead (benchmarks/ray_overhead.py)."""
    rows = ["", "## The agent grid on one GPU, against the targets", "",
            "| run | agents | what | targets | measured |", "|---|---|---|---|---|"]
    for key in sorted(k for k in data if k.startswith("gpu_grid")):
        g = data[key]
        rows.append(f"| {key} | {g['agents']} | MBPP 500 tasks: wall minutes; generated / prefilled tok/s; GPU busy; "
                    f"efficiency | ≤ 15 min; ≥ 20,000; ≥ 80%; ≥ 0.6 | {g['minutes']} min for {g['tasks']}/"
                    f"{g['tasks_planned']} tasks; {g['generated_tokens_per_second']:,} / {g['prefill_tokens_per_second']:,}; "
                    f"{g['gpu_busy_percent']}%; {g['efficiency']} |")
    ray = data.get("ray_overhead")
    if ray:  # (benchmarks/ray_overhead.py)
        runs = ray["local_runs"] + [ray["ray_run"]] + ([ray["shared_gpu_run"]] if ray.get("shared_gpu_run") else [])
        rows += ["", "## Ray's overhead on one GPU (benchmarks/ray_overhead.py)", "",
                 f"Ray against the local runner: {ray['overhead_wall_percent']}% of the wall time "
                 f"({ray['overhead_per_generated_token_percent']}% per generated token; target < {ray['target_percent']}%); "
                 f"the local runs differ by {ray['local_spread_percent']}% among themselves. {ray['machine']}, {ray['date']}.", "",
                 "| run | command (end) | tasks | wall s | generated tok/s | pass@1 |", "|---|---|---|---|---|---|"]
        for r in runs:
            rows.append(f"| {r['run']} | `...{r['command'][-90:]}` | {r['tasks']} | {r['wall_seconds']} | "
                        f"{r['generated_tokens_per_second']:,} | {r['pass_at_1']}% |")
    return rows


def ablation_markdown(ab: dict | None) -> list[str]:
    """The GPU ablation table (benchmarks/gpu_ablation.py writes the section)."""
    if not ab:
        return []
    lines = ["## GPU ablation: processes and packed prefills", "", f"- command: `{ab['summarised_by']}`"]
    lines += [f"- {k}: {ab[k]}" for k in ("date", "machine", "model", "workload", "measure") if ab.get(k)]
    lines += ["", "| run | processes x threads | packed prefills | tasks done | s to 25 / 50 / 75 tasks | pass (done) | GPU util % |",
              "|---|---|---|---|---|---|---|"]
    for r in ab["runs"]:
        at = " / ".join(str(r["seconds_to_tasks"].get(str(k), "-")) for k in (25, 50, 75))
        lines.append(f"| {r['run']} | {r['workers']} x {r['concurrency']} | {'yes' if r['packed'] else 'no'} | "
                     f"{r['tasks_done']} | {at} | {r['passed']}/{r['tasks_done']} | {r['gpu_util_mean']} |")
    return lines + [""] + ([f"{ab['conclusion']}", ""] if ab.get("conclusion") else [])


if __name__ == "__main__":
    sys.exit(main())
