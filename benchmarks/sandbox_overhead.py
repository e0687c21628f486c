"""Per-run cost of the sandbox, with and without isolation, cold and with pre-started interpreters.

    .venv/bin/python benchmarks/sandbox_overhead.py [--runs 60] [--out benchmarks/results/sandbox_overhead]

For each way of running a tiny traced program (`def f(x): return x + 1` called with `f(1)`) it
reports the mean and median milliseconds per run when runs come one after another, and the
throughput of a batch run in parallel (as the engine runs a line's candidate x test pairs). The
baseline "bare process" is `python -I -S -c pass` through subprocess: the cost of any fresh process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = "def f(x):\n    return x + 1\n"


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)  # let pre-started interpreters come up, as model work does between runs
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/sandbox_overhead")
    args = parser.parse_args()
    from egcfg.execution.sandbox import Job, Limits, Sandbox, _python, isolation

    rows = []
    bare = timed(lambda: subprocess.run([_python(), "-I", "-S", "-c", "pass"], check=True), args.runs)
    rows.append({"way": "bare process (python -I -S -c pass), no sandbox", "mean_ms": statistics.mean(bare),
                 "median_ms": statistics.median(bare), "batch_runs_per_s": None})
    # The syscall filter's share of each run: what the tracer does to install it (import ctypes,
    # two prctl calls, read /proc/self/status), timed inside fresh interpreters like the sandbox's.
    from egcfg.execution import seccomp
    from egcfg.execution.sandbox import TRACER

    probe = ("import sys, time; sys.path.insert(0, sys.argv[1]); import tracer; t = time.perf_counter(); "
             "tracer.install_filter(bytes.fromhex(sys.argv[2])); print((time.perf_counter() - t) * 1000)")
    filt = [float(subprocess.run([_python(), "-I", "-S", "-c", probe, str(TRACER.parent), seccomp.filter_hex()],
                                 check=True, capture_output=True, text=True).stdout) for _ in range(args.runs)]
    rows.append({"way": f"seccomp filter install, a part of every sandboxed run below ({len(seccomp.filter_program()) // 8} BPF "
                        f"instructions, ctypes import included)", "mean_ms": statistics.mean(filt),
                 "median_ms": statistics.median(filt), "batch_runs_per_s": None})
    modes = ["rlimits"] + (["bubblewrap"] if isolation() == "bubblewrap" else [])
    for mode in modes:
        for warm in (0, None):
            with Sandbox(Limits(), mode=mode, warm=warm) as sandbox:
                sandbox.run(PROGRAM, "f(1)")  # first run pays one-off costs
                times = timed(lambda: sandbox.run(PROGRAM, "f(1)"), args.runs)
                assert sandbox.run(PROGRAM, "f(1)").value == "2"
                jobs = [Job(PROGRAM, invocation=f"f({i})") for i in range(args.runs)]
                t0 = time.perf_counter()
                results = sandbox.run_many(jobs)
                rate = len(jobs) / (time.perf_counter() - t0)
                assert all(r.ok for r in results)
            label = f"{mode}, {'cold spawn' if warm == 0 else 'pre-started'}"
            if mode == "rlimits":
                label += " (no isolation: limits only)"
            rows.append({"way": label, "mean_ms": statistics.mean(times), "median_ms": statistics.median(times),
                         "batch_runs_per_s": rate})
    for row in rows:
        for key in ("mean_ms", "median_ms", "batch_runs_per_s"):
            if row[key] is not None:
                row[key] = round(row[key], 1)
        print(json.dumps(row), flush=True)
    from egcfg.bench.store import provenance

    meta = {**provenance("python benchmarks/sandbox_overhead.py " + " ".join(sys.argv[1:])),
            "runs": args.runs, "program": PROGRAM}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Sandbox overhead per run", "", f"- command: `{meta['command']}`", f"- date: {meta['date']}",
             f"- machine: {meta['machine']}", f"- program: a traced call of a two-line function, {args.runs} runs each", "",
             "| way | mean ms / run (sequential) | median ms | runs/s in a parallel batch |", "|---|---|---|---|"]
    lines += [f"| {r['way']} | {r['mean_ms']} | {r['median_ms']} | {r['batch_runs_per_s'] or '-'} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
