"""What one sandboxed run costs: CPU (all processes it involves: bubblewrap, the interpreter, the
tracer, egcfg's side) and wall time, fork server against a fresh sandbox per run, side by side.

CPU is read from a cgroup this process moves itself into (cgroup v1 cpuacct or v2 cpu.stat), so
processes in other sessions and PID namespaces are counted too; without cgroup access it falls
back to the whole machine's busy time (/proc/stat), which counts everything else as well (said in
the output). Runs go one at a time (one thread), so wall time is latency, not throughput.

    python benchmarks/sandbox_cost.py [--runs 200] [--out benchmarks/results/sandbox_cost]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from egcfg.execution.sandbox import Job, Limits, Sandbox, isolation  # noqa: E402

# A typical MBPP candidate and visible test (traced), and the same checked untraced.
CANDIDATE = ("def max_sum(arr, n):\n    best = [0] * n\n    for i in range(n):\n        best[i] = arr[i]\n"
             "        for j in range(i):\n            if arr[j] < arr[i]:\n                best[i] = max(best[i], best[j] + arr[i])\n"
             "    return max(best)\n")
CALL = "max_sum([1, 15, 51, 45, 33, 100, 12, 18, 9], 9)"
CASES = {
    "traced candidate": lambda i: Job(CANDIDATE + f"# {i}\n", invocation=CALL),
    "untraced check": lambda i: Job(CANDIDATE + f"# {i}\nassert {CALL} == 167\n", trace=False),
}


class CpuMeter:
    """CPU milliseconds used by this process and everything it starts."""

    def __init__(self):
        self.how, self._read = "machine", None
        for base, name, read in (
                ("/sys/fs/cgroup/cpuacct", "cpuacct.usage", lambda p: int(p.read_text()) / 1e6),
                ("/sys/fs/cgroup", "cpu.stat",
                 lambda p: int(next(line.split()[1] for line in p.read_text().splitlines()
                                    if line.startswith("usage_usec"))) / 1e3)):
            group = Path(base) / f"egcfg-sandbox-cost-{os.getpid()}"
            try:
                group.mkdir(exist_ok=True)
                (group / "cgroup.procs").write_text(str(os.getpid()))
                read(group / name)
            except (OSError, StopIteration, ValueError):
                continue
            self.how, self._read, self._file = f"cgroup {base}", read, group / name
            atexit.register(_leave, group)
            break

    def ms(self) -> float:
        if self._read is not None:
            return self._read(self._file)
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return (sum(vals) - vals[3] - vals[4]) * 1000 / os.sysconf("SC_CLK_TCK")


def measure(sandbox: Sandbox, make, runs: int, meter: CpuMeter) -> dict:
    sandbox.run_many([make(-i - 1) for i in range(5)])  # (servers or warm processes up)
    time.sleep(0.3)
    cpu0, t0 = meter.ms(), time.perf_counter()
    statuses = [sandbox.run_job(make(i)).status for i in range(runs)]
    wall = time.perf_counter() - t0
    time.sleep(0.3)  # (what the last run left being torn down)
    cpu = meter.ms() - cpu0
    return {"runs": runs, "cpu_ms_per_run": round(cpu / runs, 2), "wall_ms_per_run": round(wall * 1000 / runs, 2),
            "statuses": sorted(set(statuses))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sandbox_cost"))
    args = ap.parse_args()
    if isolation() != "bubblewrap":
        print("sandbox_cost: bubblewrap is not usable here; fork servers need it", file=sys.stderr)
        return 2
    meter = CpuMeter()
    rows = []
    for case, make in CASES.items():
        for served in (True, False):
            with Sandbox(Limits(timeout=2.0), workers=1, fork_server=served) as sb:
                row = {"case": case, "path": "fork server" if served else "fresh sandbox", **measure(sb, make, args.runs, meter)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"rows": rows, "cpu_measured_by": meter.how,
           "command": "python benchmarks/sandbox_cost.py " + " ".join(sys.argv[1:]),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
                      f"{_cpu_model()}", "python": platform.python_version()}
    Path(args.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# Sandbox cost per run ({out['date']}, {out['machine']})", "",
             f"`{out['command']}`; CPU from {meter.how}; one run at a time.", "",
             "| case | path | CPU ms / run | wall ms / run | statuses |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['path']} | {r['cpu_ms_per_run']} | {r['wall_ms_per_run']} | {', '.join(r['statuses'])} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


def _leave(group: Path) -> None:
    """Back to the parent group, and the measuring group removed."""
    try:
        (group.parent / "cgroup.procs").write_text(str(os.getpid()))
        group.rmdir()
    except OSError:
        pass


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


if __name__ == "__main__":
    sys.exit(main())
