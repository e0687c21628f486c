"""The agent grid on one GPU: MBPP's 500 tasks (or another benchmark: ``run --benchmark``), the first
N agents of the paper grid, measured.

Three steps, the first two on the GPU machine (the `device` tool), the last one here:

    python benchmarks/gpu_grid.py run RUN --agents 16 --model 'hf:/root/m/model.gguf?n_ctx=3072' \\
        --concurrency 256 --limit-seconds 540 -- --data ../shared/data
    python benchmarks/gpu_grid.py replay RUN --model 'hf:/root/m/model.gguf?n_ctx=3072'
    python benchmarks/gpu_grid.py summarize RUN --cpu-greedy benchmarks/results/runs/mbpp100-baseline.json \\
        --cpu-egcfg benchmarks/results/runs/mbpp20-egcfg-fixed-isa.json

``run`` runs (or resumes) ``egcfg bench mbpp`` (``--benchmark``) in RUN for at most ``--limit-seconds`` (then SIGTERM
stops it like Ctrl-C: results kept, --resume continues), with nvidia-smi sampling the GPU every second into
``RUN/util-<start>.csv``; each call's start and end go to ``RUN/calls.jsonl``. The hf backend leaves
its profile in ``RUN/profile-<pid>.json``: forwards by kind and shape, tokens, seconds per phase.

``replay`` measures the bound: every forward shape the run recorded (rows x padded length x attended
length, in buckets) is timed alone on the same GPU (synchronized, best of 4, by the run's own forward path) and weighted by how
often the run ran it: ``replay.json``. That is the run's model work at the raw forward throughput of
the same model at the same batch sizes; ``efficiency`` = that time / the run's wall time.

``summarize`` writes the ``gpu_grid`` section of benchmarks/results/speed.json and its row in
speed.md: wall minutes (start-up and model loading included), generated (decode rows: guided steps
and candidates) and prefilled tokens per second, GPU busy (mean of the nvidia-smi samples), the
raw throughput and efficiency, pass@1 and greedy pass@1, the attempts spent for the first k agents,
parity with CPU runs of the same tasks, and a per-phase profile of where the time goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"minutes_16_agents": 15, "minutes_48_agents": 25, "generated_tokens_per_second": 20000,
           "gpu_busy_percent": 80, "efficiency": 0.6}


# -- run ------------------------------------------------------------------------------------------
def _ticks(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def _sample_cpu(path: Path, stop: threading.Event, root: int) -> None:
    """Every second: the machine's CPU busy percent (all cores, /proc/stat), the busiest single
    process of the run's tree (percent of one core) and the whole tree's share of the machine, so a
    run can tell a saturated CPU, or one interpreter holding the GIL, from a GPU that waits for
    nothing. The tree is egcfg's own long-lived processes (bench, engines, model server); sandboxed
    runs start their own sessions and live ~30 ms, so they are what the machine's busy share holds
    beyond the tree. CSV: time, busy %, cores, busiest process %, tree % of the machine, its name."""
    hz = os.sysconf("SC_CLK_TCK")

    def machine_ticks():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait

    last_total, last_idle = machine_ticks()
    last: dict[str, int] = {}
    names: dict[str, str] = {}
    t_last = time.monotonic()
    with open(path, "w") as out:
        while not stop.wait(1.0):
            total, idle = machine_ticks()
            now_t = time.monotonic()
            busy = 100.0 * (1 - (idle - last_idle) / max(1, total - last_total))
            last_total, last_idle = total, idle
            best, best_name, tree = 0.0, "", 0.0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.getpgid(int(pid)) != root:
                        continue
                except OSError:
                    continue
                ticks = _ticks(pid)
                if ticks is None:
                    continue
                if pid in last:
                    pct = 100.0 * (ticks - last[pid]) / hz / max(1e-3, now_t - t_last)
                    tree += pct
                    if pct > best:
                        if pid not in names:
                            try:
                                names[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
                            except OSError:
                                names[pid] = "?"
                        best, best_name = pct, names[pid]
                last[pid] = ticks
            t_last = now_t
            name = " ".join(best_name.replace(",", " ").split())
            out.write(f"{time.time():.1f},{busy:.1f},{os.cpu_count()},{best:.1f},{tree / os.cpu_count():.1f},{name}\n")
            out.flush()


def sample_lines(run: Path, prefix: str, only: list[dict] | None = None):
    """The lines of the run's PREFIX-<call start>.csv sample files (of the calls ``only``, or all)."""
    starts = None if only is None else {int(c["start"]) for c in only}
    for f in run.glob(f"{prefix}-*.csv"):
        if starts is None or int(f.stem.split("-")[1]) in starts:
            yield from f.read_text().splitlines()


def cpu_means(run: Path, only: list[dict] | None = None) -> dict | None:
    """Means of the cpu-*.csv samples: machine busy percent, busiest process percent (of one core)
    and which command that was most often; where sampled, egcfg's own processes' share of the
    machine and the rest (the sandboxed runs, and anything else the machine ran)."""
    rows, trees = [], []
    for line in sample_lines(run, "cpu", only):
        parts = line.split(",")
        if len(parts) >= 5:  # name last, commas taken out; files of before the tree column have 5
            rows.append((float(parts[1]), float(parts[3]), ",".join(parts[5:] if len(parts) > 5 else parts[4:])))
            if len(parts) > 5:
                trees.append((float(parts[1]), float(parts[4])))
    if not rows:
        return None
    who = Counter(name.split(" -m ")[-1][:60] for _, _, name in rows if name).most_common(1)
    out = {"machine_busy_percent": round(sum(r[0] for r in rows) / len(rows), 1),
           "busiest_process_percent_of_one_core": round(sum(r[1] for r in rows) / len(rows), 1),
           "busiest_process": who[0][0] if who else None, "samples": len(rows)}
    if trees:
        tree = sum(t for _, t in trees) / len(trees)
        out["egcfg_processes_percent_of_machine"] = round(tree, 1)
        out["other_percent_of_machine"] = round(sum(b for b, _ in trees) / len(trees) - tree, 1)
    return out


def cmd_run(args) -> int:
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    start = time.time()
    util = open(run / f"util-{int(start)}.csv", "w")
    try:
        smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                                "--format=csv,noheader", "-lms", "1000"], stdout=util, stderr=subprocess.DEVNULL)
    except FileNotFoundError:  # (a dry run on a machine without a GPU: no utilization samples)
        smi = None
    resume = ["--resume"] if (run / "results.sqlite").exists() else []
    cmd = [sys.executable, "-m", "egcfg", "bench", args.benchmark, "--out", str(run), "--agents", str(args.agents),
           "--model", args.model, "--concurrency", str(args.concurrency), "--workers", str(args.workers),
           "--no-progress", *resume, *args.extra]
    print(" ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)
    stop_cpu = threading.Event()
    cpu = threading.Thread(target=_sample_cpu, args=(run / f"cpu-{int(start)}.csv", stop_cpu, proc.pid), daemon=True)
    cpu.start()
    try:
        proc.wait(timeout=args.limit_seconds)
    except subprocess.TimeoutExpired:
        # SIGTERM: the run unwinds like Ctrl-C and stops its worker processes; stored results stay.
        # (Not SIGINT: a command run in the background, as the device tool runs it, ignores SIGINT.)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    end = time.time()
    stop_cpu.set()
    cpu.join(timeout=5)
    if smi is not None:
        smi.terminate()
        smi.wait()
    util.close()
    with open(run / "calls.jsonl", "a") as f:
        f.write(json.dumps({"start": start, "end": end, "rc": proc.returncode, "command": " ".join(cmd),
                            "machine": machine()}) + "\n")
    done = 0
    if (run / "results.sqlite").exists():  # (none, or no tables, when bench stopped before its run began)
        db = sqlite3.connect(run / "results.sqlite")
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            done, = db.execute("SELECT count(*) FROM tasks").fetchone()
        except sqlite3.OperationalError:
            pass
        finally:
            db.close()
    print(f"call: {end - start:.0f} s, rc {proc.returncode}, tasks done {done}", flush=True)
    return 0 if proc.returncode in (0, 130, -signal.SIGTERM) else 2


def machine() -> str:
    gpu = ""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().replace("\n", ", ")
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, {gpu or 'no GPU'}"


# -- replay ---------------------------------------------------------------------------------------
def _bucket(rows: int, length: int, attended: int) -> tuple[int, int, int]:
    """Shapes close enough to cost the same: rows to the next power of 2 above 1/8 steps,
    lengths as recorded (decode 1; prefill padded to the chunk's longest row) in steps of 64,
    attended lengths in steps of 512."""
    step = max(1, 2 ** max(0, int(math.log2(max(rows, 1))) - 2))
    return -(-rows // step) * step, (length if length == 1 else -(-length // 64) * 64), -(-attended // 512) * 512


def profiles(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("profile-*.json"))]


def cmd_replay(args) -> int:
    import torch

    from egcfg.lm import load_model

    run = Path(args.run)
    counts: Counter = Counter()
    for prof in profiles(run):
        for kind, rows, length, attended, n in prof["shapes"]:
            counts[(kind, *_bucket(rows, length, attended))] += n
    if not counts:
        print("no profile-*.json in the run folder", file=sys.stderr)
        return 2
    max_rows = max(k[1] for k in counts)
    longest = max(k[3] for k in counts)
    model = load_model(args.model, slots=max_rows, n_ctx=longest + 64)
    timed = {}
    try:
        vocab = model.n_vocab
        for key in sorted(counts, key=lambda k: -counts[k]):
            kind, rows, length, attended = key
            # (within the loaded context: a spec's own ?n_ctx= wins over the one asked for here, and
            # a row's padded tokens must still land inside the cache's slack)
            start = max(0, min(attended, model.n_ctx) - length)
            g = torch.Generator().manual_seed(rows * 7 + length)
            batch = [(slot, start, torch.randint(0, vocab, (length,), generator=g).tolist()) for slot in range(rows)]
            best = float("inf")
            for _ in range(4):  # (the run's own path: with CUDA graphs, the 2nd captures, the rest replay)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model.forward(batch)
                torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            timed[key] = best
    finally:
        model.close()
    total = sum(counts[k] * timed[k] for k in counts)
    out = {"model": args.model, "date": now(), "machine": machine(), "forward_seconds": round(total, 3),
           "forwards": sum(counts.values()), "buckets": len(counts),
           "by_kind": {kind: round(sum(counts[k] * timed[k] for k in counts if k[0] == kind), 3)
                       for kind in {k[0] for k in counts}},
           "shapes": [[*k, counts[k], round(timed[k] * 1e3, 3)] for k in sorted(counts)]}
    (run / "replay.json").write_text(json.dumps(out, indent=1))
    print(f"replayed {out['forwards']} forwards in {len(counts)} buckets: {total:.1f} s of forward time")
    return 0


# -- summarize ------------------------------------------------------------------------------------
def write_speed_md(data: dict) -> None:
    """speed.md from speed.json (benchmarks/speed.py renders every section, the grid's included)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from speed import write_markdown

    write_markdown(data)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def util_mean(run: Path, calls: list[dict], only: list[dict] | None = None) -> tuple[float, int]:
    """Mean nvidia-smi utilization over the samples of every call (or of the calls ``only``)."""
    samples = []
    for line in sample_lines(run, "util", only):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[1].endswith("%"):
            samples.append(float(parts[1].rstrip(" %")))
    return (round(sum(samples) / len(samples), 1) if samples else None), len(samples)


def _attempt_rows(db, where: str = "", args: tuple = ()) -> dict[str, list[dict]]:
    """Attempt rows with a hidden verdict, by task, as runner.finalize sees them (a task the run
    did not finish has none: it is left out rather than counted as failing)."""
    rows: dict = {}
    sql = ("SELECT task_id, agent, gamma, passed_visible, tests_passed, passed_hidden, stats FROM attempts "
           "WHERE passed_hidden IS NOT NULL" + where)
    for task, agent, gamma, vis, tp, hid, stats in db.execute(sql, args):
        rows.setdefault(task, []).append({"task_id": task, "agent": agent, "gamma": gamma, "passed_visible": vis,
                                          "tests_passed": tp, "passed_hidden": hid, "stats": json.loads(stats)})
    return rows


def _final_passes(rows: list[dict], order) -> bool:
    """The hidden verdict of the program the honest protocol picks from ``rows`` (solver.pick_final)."""
    from egcfg.solver import pick_final

    final = pick_final(sorted(rows, key=order), passed=lambda r: r["passed_visible"],
                       tests_passed=lambda r: r["tests_passed"])
    return bool(final["passed_hidden"])


def first_k_curve(db, agents_meta: list[dict], n_tasks: int) -> list[dict]:
    """pass@1 (hidden verdict of the final program) had only the first k agents run, k = 1..N,
    with the attempts those agents spent (report.first_k_agents, honest pick). Over ``n_tasks``
    (the planned tasks): a task not finished counts by the attempts it has, so the curve is a
    lower bound."""
    from egcfg.bench.report import first_k_agents

    by_task = _attempt_rows(db)
    curve = first_k_agents({"agents": agents_meta}, [r for rows in by_task.values() for r in rows], set(by_task))
    return [{"agents": r["agents"], "pass_at_1": round(100 * r["solved"] / n_tasks, 1), "attempts": r["attempts"]}
            for r in curve]


def parity_greedy(db, first_agent: str, export: Path) -> dict:
    cpu = {t["task_id"]: t["passed_hidden"] for t in json.loads(export.read_text())["tasks"]}
    gpu = {t: bool(h) for t, h in db.execute(
        "SELECT task_id, passed_hidden FROM attempts WHERE gamma = 0 AND agent = ? AND passed_hidden IS NOT NULL",
        (first_agent,))}  # (a task the run did not finish has no hidden verdict yet: left out)
    both = [t for t in cpu if t in gpu]
    return {"cpu_run": export.name, "what": "greedy (the first agent's gamma 0)", "tasks": len(both),
            "gpu_pass_at_1": round(100 * sum(gpu[t] for t in both) / max(1, len(both)), 1),
            "cpu_pass_at_1": round(100 * sum(cpu[t] for t in both) / max(1, len(both)), 1),
            "same_verdict": sum(gpu[t] == cpu[t] for t in both), "target_same_verdict": "≥ 98 of 100",
            "note": "over the tasks of the CPU run that the GPU run finished (scored)"}


def parity_egcfg(db, agents_meta: list[dict], export: Path) -> dict:
    """The first agent alone (its own schedule's final program) against a one-agent CPU run of the
    same agent on the same tasks. Judged by the difference in solved tasks against the sampling
    noise of paired verdicts: within noise if |b - c| <= 2 sqrt(b + c) (b, c the discordant tasks)."""
    from egcfg.bench.runner import schedule_order

    data = json.loads(export.read_text())
    cpu = {t["task_id"]: t["passed_hidden"] for t in data["tasks"]}
    first = agents_meta[0]
    order = schedule_order({first["name"]: first["gammas"]})
    gpu = {task: _final_passes(rows, order)
           for task, rows in _attempt_rows(db, " AND agent = ?", (first["name"],)).items()}
    both = [t for t in cpu if t in gpu]
    b = sum(gpu[t] and not cpu[t] for t in both)
    c = sum(cpu[t] and not gpu[t] for t in both)
    # Like with like: a setting of the agent that differs between the runs (e.g. accept_candidates,
    # on by default since 2026-12-02; older exports ran without it) is named, not hidden.
    cpu_agent = next((a for a in data["summary"].get("agent_configs") or [] if a.get("name") == first["name"]), None)
    from egcfg.config import as_recorded

    differ = []
    if cpu_agent is not None:  # (a setting an export predates: what it ran with)
        from egcfg.bench.datasets import GIVEN_SIGNATURE
        from egcfg.prompts import concrete

        given = data["summary"].get("benchmark") in GIVEN_SIGNATURE
        gpu_cfg, cpu_cfg = (dict(c, prompt_format=concrete(c["prompt_format"], given))  # (auto: the prompt it gives)
                            for c in (as_recorded(first), as_recorded(cpu_agent)))
        differ = sorted(k for k in gpu_cfg if k != "name" and gpu_cfg[k] != cpu_cfg.get(k))
    return {"cpu_run": export.name, "what": "EG-CFG, the first agent alone", "tasks": len(both),
            "settings_that_differ": differ if cpu_agent is not None else "the CPU export does not record its agent",
            "gpu_pass_at_1": round(100 * sum(gpu[t] for t in both) / max(1, len(both)), 1),
            "cpu_pass_at_1": round(100 * sum(cpu[t] for t in both) / max(1, len(both)), 1),
            "same_verdict": sum(gpu[t] == cpu[t] for t in both), "gpu_only": b, "cpu_only": c,
            "within_noise": abs(b - c) <= 2 * math.sqrt(b + c) if b + c else True,
            "rule": "|gpu_only - cpu_only| <= 2 sqrt(gpu_only + cpu_only)"}


def forward_cost_model(replay: dict | None, kind: str) -> dict | None:
    """A line through the replayed forwards of one kind: ms = fixed + per x rows x tokens x attended
    positions (a decode row has one token), fitted by least squares weighted by how often the run
    ran each shape. It says where a forward's time goes: the fixed part (the kernels a forward
    launches whatever its size) against the part that grows with the attention work."""
    import numpy as np

    if not replay:
        return None
    shapes = [s for s in replay["shapes"] if s[0] == kind]
    if len(shapes) < 3:
        return None
    work = np.array([rows * length * attended for _, rows, length, attended, _, _ in shapes], dtype=float)
    ms = np.array([s[5] for s in shapes], dtype=float)
    w = np.sqrt(np.array([s[4] for s in shapes], dtype=float))
    (fixed, per), *_ = np.linalg.lstsq(np.stack([np.ones_like(work), work], 1) * w[:, None], ms * w, rcond=None)
    fitted = fixed + per * work
    r2 = 1 - np.sum((w * (ms - fitted)) ** 2) / np.sum((w * (ms - np.average(ms, weights=w ** 2))) ** 2)
    n = sum(s[4] for s in shapes)
    total = sum(s[4] * s[5] for s in shapes) / 1e3
    return {"fixed_ms": round(float(fixed), 2), "ns_per_row_token_position": round(float(per) * 1e6, 2),
            "r2": round(float(r2), 3), "forwards": n, "seconds": round(total, 1),
            "fixed_share": round(float(fixed) * n / 1e3 / total, 2) if total else None}


OUTCOMES = {"returned": "Result: returned", "finished": "Result: finished", "raised": "Result: raised",
            "timeout": "Result: timed out", "exited": "Result: exited early", "crashed": "Result: crashed",
            "could not run": "Result: could not run"}


def run_outcomes(db) -> dict:
    """How the candidates' traced runs ended, counted in the signals the run stored: a sandbox that
    fails (every run crashing) would otherwise read as a fast run."""
    counts = Counter()
    for (lines,) in db.execute("SELECT lines FROM attempts"):
        for line in json.loads(lines):
            text = line.get("signal") or ""
            for name, mark in OUTCOMES.items():
                counts[name] += text.count(mark)
    return dict(counts)


def run_wall(calls: list[dict], last_task: float | None) -> float:
    """Seconds of wall over the run's calls: every call whole (start-up, model loading and any call
    that failed count too), but the last one only up to its last finished task where it finished
    one (not its idle end after the work was done)."""
    wall = sum(c["end"] - c["start"] for c in calls)
    last = calls[-1]
    if last_task is not None and last["start"] < last_task < last["end"]:
        wall -= last["end"] - last_task
    return wall


def cmd_summarize(args) -> int:
    run = Path(args.run)
    calls = [json.loads(line) for line in (run / "calls.jsonl").read_text().splitlines() if line.strip()]
    db = sqlite3.connect(run / "results.sqlite")
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    agents = [a["name"] for a in meta["agents"]]
    n_done, solved = db.execute("SELECT count(*), sum(passed_hidden) FROM tasks").fetchone()
    planned = args.planned or len(meta.get("task_ids") or []) or 500
    last_task, = db.execute("SELECT max(created) FROM tasks").fetchone()
    wall = run_wall(calls, last_task)
    greedy = db.execute("SELECT count(*), sum(passed_hidden) FROM attempts WHERE gamma = 0 AND agent = ?",
                        (agents[0],)).fetchone()
    stats = Counter()
    for (s,) in db.execute("SELECT stats FROM attempts"):
        for k, v in json.loads(s).items():
            if isinstance(v, (int, float)):
                stats[k] += v
    n_attempts, = db.execute("SELECT count(*) FROM attempts").fetchone()
    profs = profiles(run)
    tokens, seconds, forwards = Counter(), Counter(), 0
    shapes = Counter()
    for p in profs:
        tokens.update(p["tokens"])
        seconds.update(p["seconds"])
        forwards += p["forwards"]
        for kind, rows, length, attended, n in p["shapes"]:
            shapes[kind + "_forwards"] += n
            shapes[kind + "_rows"] += rows * n
            shapes[kind + "_attended"] += attended * n
    # Token rates and efficiency come from the backend profiles, so they are over the calls that
    # left profiles (a process killed before its first profile write leaves none): "profiled".
    profiled = [c for c in calls if any(c["start"] <= int(p.name.split("-")[2].split(".")[0]) <= c["end"]
                                        for p in run.glob("profile-*.json"))]
    profiled_wall = sum(c["end"] - c["start"] for c in profiled) or wall
    replay = json.loads((run / "replay.json").read_text()) if (run / "replay.json").exists() else None
    generated, prefilled = tokens["decode"], tokens["prefill"]
    busy, n_samples = util_mean(run, calls)
    busy_profiled, _ = util_mean(run, profiled, only=profiled)
    # the same rates from the attempts' own counts, over the whole run (every call)
    attempt_generated = stats["tokens_decoded"] + stats["candidate_tokens"]
    section = {
        "benchmark": "mbpp (test split)" if meta.get("benchmark", "mbpp") == "mbpp" else meta["benchmark"],
        "method": meta.get("method", "egcfg"), "agents": len(agents), "tasks": n_done, "tasks_planned": planned,
        "finished": n_done >= planned, "calls": len(calls),
        "minutes": round(wall / 60, 2),
        # (a lower bound: tasks finish easiest first, the unfinished ones are the hardest)
        "minutes_projected_all_tasks_at_least": round(wall / 60 * planned / max(1, n_done), 1) if n_done < planned else None,
        "profiled_calls": len(profiled), "profiled_minutes": round(profiled_wall / 60, 2),
        "generated_tokens_per_second": round(generated / profiled_wall),
        "prefill_tokens_per_second": round(prefilled / profiled_wall),
        "generated_tokens_per_second_from_attempts_all_calls": round(attempt_generated / wall),
        "prefill_tokens_per_second_from_attempts_all_calls": round(stats["tokens_prefilled"] / wall),
        "gpu_busy_percent": busy_profiled, "gpu_busy_percent_all_calls": busy, "gpu_samples": n_samples,
        "cpu": cpu_means(run, profiled),
        "candidate_run_outcomes": run_outcomes(db),
        "raw_tokens_per_second_same_batch": round((generated + prefilled) / replay["forward_seconds"]) if replay else None,
        "raw_forward_seconds": replay["forward_seconds"] if replay else None,
        "efficiency": round(replay["forward_seconds"] / profiled_wall, 3) if replay else None,
        "efficiency_note": "the profiled calls' forwards, each timed alone on the same GPU at its own shape "
                           "(benchmarks/gpu_grid.py replay), summed, over those calls' wall time",
        "pass_at_1": round(100 * (solved or 0) / max(1, n_done), 1),
        "pass_at_1_bound_over_planned": round(100 * (solved or 0) / planned, 1),
        "greedy_pass_at_1": round(100 * (greedy[1] or 0) / max(1, greedy[0]), 1),
        "attempts": n_attempts,
        "first_k_agents_over_planned": first_k_curve(db, meta["agents"], planned),
        "profile": {
            "forwards": forwards,
            "tokens": dict(tokens),
            "padding_overhead_prefill": round(tokens["prefill_padded"] / max(1, prefilled), 2),
            "decode_rows_per_forward": round(shapes["decode_rows"] / max(1, shapes["decode_forwards"]), 1),
            "decode_attended_per_forward": round(shapes["decode_attended"] / max(1, shapes["decode_forwards"])),
            "prefill_tokens_per_forward": round(prefilled / max(1, shapes["prefill_forwards"])),
            "processes": len(profs),
            "ms_per_forward_in_run": {k: round(1e3 * seconds[s] / max(1, shapes[k + "_forwards"]), 1)
                                      for k, s in (("decode", "steps"), ("prefill", "prefills"))},
            "ms_per_forward_alone": ({k: round(1e3 * replay["by_kind"][k] / max(1, shapes[k + "_forwards"]), 1)
                                      for k in ("decode", "prefill")} if replay else None),
            "batcher_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "batcher_seconds_note": "the model thread's time: waiting = no request pending (the GPU idle "
                                    "unless an earlier launch still runs); steps/prefills = launching "
                                    "forwards; picks = device choice and the one host sync per batch",
            "replay_seconds_by_kind": replay["by_kind"] if replay else None,
            "forward_cost_model": {kind: forward_cost_model(replay, kind) for kind in ("decode", "prefill")},
            "forward_cost_model_note": "the replayed forwards fitted as ms = fixed_ms + ns_per_row_token_position "
                                       "x rows x tokens x attended positions (benchmarks/gpu_grid.py forward_cost_model)",
            "attempt_seconds_summed": {k: round(stats[k], 1) for k in
                                       ("seconds_prefill", "seconds_guided", "seconds_sampling", "seconds_executing",
                                        "seconds_total") if k in stats},
            "executions": stats.get("executions"),
            "executions_per_second": round(stats.get("executions", 0) / wall, 1),
        },
        "parity": [p for p in ([parity_greedy(db, agents[0], Path(args.cpu_greedy))] if args.cpu_greedy else [])
                   + ([parity_egcfg(db, meta["agents"], Path(args.cpu_egcfg))] if args.cpu_egcfg else [])],
        "targets": TARGETS,
        "command": calls[0]["command"], "calls_commands": list(dict.fromkeys(c["command"] for c in calls)),
        "date": datetime.fromtimestamp(calls[0]["start"], timezone.utc).replace(microsecond=0).isoformat(),
        "machine": calls[0]["machine"], "model": args.model_name or meta.get("model"),
        "summarised_by": "python benchmarks/gpu_grid.py " + " ".join(sys.argv[2:]),
    }
    db.close()
    if args.note:
        section["note"] = args.note
    speed = ROOT / "benchmarks" / "results" / "speed.json"
    data = json.loads(speed.read_text())
    data[args.section] = section
    speed.write_text(json.dumps(data, indent=1) + "\n")
    write_speed_md(data)
    print(json.dumps({k: v for k, v in section.items() if k not in ("first_k_agents_over_planned", "profile")}, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("run")
    r.add_argument("--agents", type=int, default=16)
    r.add_argument("--model", required=True)
    r.add_argument("--concurrency", type=int, default=256)
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--limit-seconds", type=float, default=540)
    r.add_argument("--benchmark", default="mbpp", help="what egcfg bench runs (humaneval-plus, mbpp-plus, ...)")
    p = sub.add_parser("replay")
    p.add_argument("run")
    p.add_argument("--model", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("run")
    s.add_argument("--planned", type=int, help="tasks planned (default: the run's own task list)")
    s.add_argument("--cpu-greedy")
    s.add_argument("--cpu-egcfg")
    s.add_argument("--section", default="gpu_grid")
    s.add_argument("--note")
    s.add_argument("--model-name", help="the model by file name and sha256 (the run knows only its path there)")
    args, extra = ap.parse_known_args()  # (run: what follows `--` goes to egcfg bench)
    if extra and (args.cmd != "run" or extra[0] != "--"):
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra[1:]
    return {"run": cmd_run, "replay": cmd_replay, "summarize": cmd_summarize}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
