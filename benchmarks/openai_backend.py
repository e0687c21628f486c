"""EG-CFG through an OpenAI-compatible server vs the direct llama.cpp backend, same model, same tasks.

    .venv/bin/python benchmarks/openai_backend.py --limit 20 --data ../shared/data [--gamma 0,1]

Starts llama-cpp-python's own server (``python -m llama_cpp.server``) on 127.0.0.1 with the
embedded model and this machine's cores, runs ``egcfg bench mbpp`` (one agent, default settings
but the gamma schedule) once through ``--model openai:<server>`` and once directly, one after the
other, and writes
benchmarks/results/openai_backend.{json,md}: pass@1 (hidden tests, honest protocol), seconds per
task and the server requests made. Run folders go to runs/openai-backend/ (resumable: an
interrupted comparison continues where it stopped; the wall time then covers the last call only).

Why gamma 0,1 by default: through that server a gamma 0.5 or 3 attempt costs ~10x the direct one
on this 2-core machine (measured on Mbpp/13: 475 s vs 45 s at gamma 0.5), because the server keeps
one prompt cache (each switch between p_sol and p_dyn re-reads the signal) and sorts the vocabulary
in Python for every token with log-probs; the default schedule over 20 tasks would take hours here.
Gamma 0 and 1 exercise the drafts, the server's candidates and the traces without log-probs.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EGCFG = [sys.executable, "-m", "egcfg"]


def start_server(model: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "qwen2.5-coder-0.5b",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--logits_all", "true", "--n_threads", str(threads),
           "--n_threads_batch", str(threads)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited; see {log}")
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not come up in 2 minutes")


def bench(name: str, out: Path, args, extra: list[str]) -> dict:
    folder = out / name
    cmd = EGCFG + ["bench", "mbpp", "--data", args.data, "--limit", str(args.limit), "--gamma", args.gamma,
                   "--out", str(folder), "--no-progress", *extra]
    if (folder / "results.sqlite").exists():
        cmd.append("--resume")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: egcfg bench failed: {proc.stderr.strip()[-500:]}")
    db = sqlite3.connect(folder / "results.sqlite")
    tasks, passed, seconds = db.execute(
        "SELECT count(*), sum(passed_hidden), sum(json_extract(stats, '$.seconds_total')) FROM tasks").fetchone()
    greedy = db.execute("SELECT count(*), sum(passed_hidden) FROM attempts WHERE gamma = 0").fetchone()
    verdicts = dict(db.execute("SELECT task_id, passed_hidden FROM tasks"))
    db.close()
    return {"backend": name, "command": " ".join(cmd[2:]), "tasks": tasks, "pass_at_1": round(100.0 * passed / tasks, 2),
            "greedy_pass_at_1": round(100.0 * (greedy[1] or 0) / greedy[0], 2) if greedy[0] else None,
            "seconds_per_task": round(seconds / tasks, 1), "wall_seconds_this_call": round(wall, 1),
            "verdicts": verdicts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=20, help="first N MBPP test tasks")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--gamma", default="0,1", help="gamma schedule of both runs (default 0,1; see above)")
    ap.add_argument("--port", type=int, default=8391)
    ap.add_argument("--out", default=str(ROOT / "runs" / "openai-backend"))
    args = ap.parse_args()
    from egcfg.bench.store import provenance
    from egcfg.models import resolve_model_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = resolve_model_path("embedded")
    threads = os.cpu_count() or 1
    server = start_server(model, args.port, threads, out / "server.log")
    try:
        remote = bench("openai", out, args, ["--model", f"openai:http://127.0.0.1:{args.port}/v1",
                                             "--model-name", "qwen2.5-coder-0.5b"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    direct = bench("direct", out, args, [])
    same = sum(remote["verdicts"][t] == direct["verdicts"].get(t) for t in remote["verdicts"])
    meta = {**provenance("python benchmarks/openai_backend.py " + " ".join(sys.argv[1:])),
            "model": model.name, "server": f"llama-cpp-python {__import__('llama_cpp').__version__} server, "
                                          f"n_threads {threads}, n_ctx 8192 (logits_all, one request at a time)"}
    rows = [remote, direct]
    result = {"meta": meta, "rows": [{k: v for k, v in r.items() if k != "verdicts"} for r in rows],
              "same_verdict_tasks": same, "slowdown": round(remote["seconds_per_task"] / direct["seconds_per_task"], 2)}
    dest = ROOT / "benchmarks" / "results" / "openai_backend"
    dest.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# EG-CFG through an OpenAI-compatible server vs direct llama.cpp", "",
             f"- command: `{meta['command']}`", f"- date: {meta['date']}; machine: {meta['machine']}",
             f"- model: {meta['model']}; server: {meta['server']}", "",
             "| backend | tasks | pass@1 (hidden, honest) | greedy pass@1 | s/task |", "|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['tasks']} | {r['pass_at_1']}% | {r['greedy_pass_at_1']}% | {r['seconds_per_task']} |"
              for r in rows]
    lines += ["", f"Same verdict on {same} of {remote['tasks']} tasks; the server path is {result['slowdown']}x slower."]
    dest.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
