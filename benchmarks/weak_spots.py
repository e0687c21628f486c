"""The method's weak spots and the control at equal compute, measured side by side (issue 17, items 3-4).

Variants of one EG-CFG agent (the paper grid's first), same tasks, same prompt, same model, run at
the same time on one GPU (so their wall times are not comparable; their tokens are):

    egcfg       the defaults: gamma schedule 0, 0.5, 1, 3; candidates as drawn
    sampling    the control at equal compute (bench --method sampling): the same schedule's attempts,
                each gamma > 0 attempt a whole program sampled at the agent's temperature, no guidance
    resample2   --resample-duplicates 2: candidates that repeat a program are drawn again (2 rounds)
    accept      --accept-candidates (an extension of the method): a sampled candidate that passes
                every visible test ends the attempt as its program
    gamma5      --gamma 0,0.25,0.5,0.75,1 (one attempt more; no gamma above 1)
    accept_gamma5  both of the last two

Every variant's first attempt is the same greedy program (gamma 0), so greedy pass@1 is the baseline
of every row. Honest protocol: an attempt counts only if it passes the visible tests; pass@1 is the
hidden-test verdict of the first such program (or of the last attempt).

    python benchmarks/weak_spots.py run RUN --model 'hf:/root/m/model.gguf?n_ctx=4096' --limit 200 \\
        --concurrency 32 --limit-seconds 480 -- --data /root/data        # on the GPU machine
    python benchmarks/weak_spots.py summarize --split "selection=RUN" --split "all=RUN+RUN2"   # here

``summarize`` compares the variants on the tasks every variant finished: pass@1 and greedy pass@1,
tasks won after greedy failed, attempts and generated / prefilled tokens per task, and for each
variant against ``egcfg`` the tasks only one of the two solved (a sign test says whether the
difference is beyond sampling noise).
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {
    "egcfg": [],
    "sampling": ["--method", "sampling"],
    "resample2": ["--resample-duplicates", "2"],
    "accept": ["--accept-candidates"],
    "gamma5": ["--gamma", "0,0.25,0.5,0.75,1"],
    "accept_gamma5": ["--accept-candidates", "--gamma", "0,0.25,0.5,0.75,1"],
}


def cmd_run(args) -> int:
    """Every variant at once, each through gpu_grid.py run (its own nvidia-smi log, SIGTERM at the
    time limit, resumable), in RUN/<variant>."""
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"weak_spots.py: unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    procs = []
    for name in names:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_grid.py"), "run", str(run / name), "--agents", "1",
               "--model", args.model, "--concurrency", str(args.concurrency), "--workers", "1",
               "--limit-seconds", str(args.limit_seconds), "--", "--limit", str(args.limit), *args.extra,
               *VARIANTS[name]]
        procs.append((name, subprocess.Popen(cmd)))
    rc = 0
    for name, proc in procs:
        rc |= proc.wait()
    return rc


def _load(folder: Path) -> dict:
    db = sqlite3.connect(f"file:{folder / 'results.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        tasks = {r["task_id"]: dict(r) for r in db.execute("SELECT * FROM tasks")}
        attempts: dict[str, list[dict]] = {}
        for r in db.execute("SELECT task_id, agent, gamma, passed_visible, passed_hidden, stop_reason, stats "
                            "FROM attempts ORDER BY created"):
            attempts.setdefault(r["task_id"], []).append(dict(r))
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    finally:
        db.close()
    calls = [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines() if line.strip()] \
        if (folder / "calls.jsonl").exists() else []
    return {"tasks": tasks, "attempts": attempts, "meta": meta, "calls": calls}


def attempt_tokens(attempts: list[dict]) -> tuple[int, int]:
    """Generated (guided steps and candidates) and prefilled tokens of attempt rows (their stats)."""
    generated = prefilled = 0
    for a in attempts:
        s = json.loads(a["stats"])
        generated += s.get("tokens_decoded", 0) + s.get("candidate_tokens", 0)
        prefilled += s.get("tokens_prefilled", 0)
    return generated, prefilled


def sign_test(a_only: int, b_only: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if neither is better."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * p)


def _merge(folders: list[Path]) -> dict:
    """One variant's runs over several folders (e.g. two task ranges) as one run."""
    out = {"tasks": {}, "attempts": {}, "meta": {}, "calls": []}
    for folder in folders:
        r = _load(folder)
        out["tasks"].update(r["tasks"])
        out["attempts"].update(r["attempts"])
        out["meta"] = out["meta"] or r["meta"]
        out["calls"] += r["calls"]
    return out


def compare(folders: list[Path]) -> dict:
    """The variants found in every one of ``folders`` compared on the tasks they all finished."""
    names = [n for n in VARIANTS if all((f / n / "results.sqlite").exists() for f in folders)]
    if "egcfg" not in names:
        sys.exit(f"weak_spots.py: no egcfg variant in {', '.join(map(str, folders))}")
    runs = {name: _merge([f / name for f in folders]) for name in names}
    common = sorted(set.intersection(*(set(r["tasks"]) for r in runs.values())),
                    key=lambda t: (t.rsplit("/", 1)[0], int(t.rsplit("/", 1)[1]) if t.rsplit("/", 1)[1].isdigit() else 0, t))
    if not common:
        sys.exit("weak_spots.py: no task finished by every variant")
    rows = []
    solved = {}
    for name, r in runs.items():
        passed = {t for t in common if r["tasks"][t]["passed_hidden"]}
        solved[name] = passed
        greedy = {t for t in common if any(a["gamma"] == 0 and a["passed_hidden"] for a in r["attempts"].get(t, []))}
        atts = [a for t in common for a in r["attempts"].get(t, [])]
        generated, prefilled = attempt_tokens(atts)
        stops = {}
        for a in atts:
            stops[a["stop_reason"]] = stops.get(a["stop_reason"], 0) + 1
        resampled = sum(json.loads(a["stats"]).get("candidates_resampled", 0) for a in atts)
        rows.append({
            "variant": name, "flags": " ".join(VARIANTS[name]) or "(defaults)", "tasks": len(common),
            "pass_at_1": round(100 * len(passed) / len(common), 1),
            "greedy_pass_at_1": round(100 * len(greedy) / len(common), 1),
            "won_after_greedy_failed": len(passed - greedy),
            "attempts_per_task": round(len(atts) / len(common), 2),
            "generated_tokens_per_task": round(generated / len(common)),
            "prefilled_tokens_per_task": round(prefilled / len(common)),
            "candidates_resampled": resampled,
            "accepted_candidates": stops.get("candidate", 0),
            "tasks_finished": len(r["tasks"]),
            "commands": sorted({c["command"] for c in r["calls"]}),
        })
    base = solved["egcfg"]
    for row in rows:
        mine = solved[row["variant"]]
        row["only_this"] = len(mine - base)
        row["only_egcfg"] = len(base - mine)
        row["sign_test_p"] = round(sign_test(len(mine - base), len(base - mine)), 3)
    meta, calls = runs["egcfg"]["meta"], runs["egcfg"]["calls"]
    return {"tasks_compared": len(common), "first_task": common[0], "last_task": common[-1],
            "model": f"{Path(str(meta.get('model', ''))).name} (sha256 {meta.get('model_sha256', '?')})",
            "machine": calls[0]["machine"] if calls else meta.get("machine", ""),
            "date": datetime.fromtimestamp(calls[0]["start"], timezone.utc).isoformat(timespec="seconds") if calls else "",
            "rows": rows}


def cmd_summarize(args) -> int:
    splits = {}
    for spec in args.split:
        label, _, folders = spec.partition("=")
        if not folders:
            sys.exit(f"weak_spots.py: --split wants LABEL=RUN[+RUN...], not {spec!r}")
        splits[label] = compare([Path(f) for f in folders.split("+")])
    out = {
        "protocol": "honest (an attempt counts only if it passes the visible tests; pass@1 on the hidden tests)",
        "benchmark": "mbpp (test split)", "agent": "the paper grid's first (one agent)",
        "note": "the variants of a split ran at the same time on one GPU: compare their tokens, not their wall "
                "times; only_this / only_egcfg: tasks one of the two solved, with a two-sided sign test",
        "summarized_by": "python benchmarks/weak_spots.py summarize " + " ".join(sys.argv[2:]),
        "splits": splits,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# Weak spots and the sampling control ({out['benchmark']}, {out['agent']})", "",
             f"{out['protocol']}. {out['note']}.", ""]
    for label, sp in splits.items():
        lines += [f"## {label}: {sp['tasks_compared']} tasks ({sp['first_task']} .. {sp['last_task']})", "",
                  f"Model {sp['model']}; {sp['machine']}; {sp['date']}.", "",
                  "| variant | flags | pass@1 | greedy | won after greedy failed | only this / only egcfg (sign p) "
                  "| attempts/task | generated tok/task | prefilled tok/task |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sp["rows"]:
            lines.append(f"| {r['variant']} | `{r['flags']}` | {r['pass_at_1']}% | {r['greedy_pass_at_1']}% | "
                         f"{r['won_after_greedy_failed']} | {r['only_this']} / {r['only_egcfg']} ({r['sign_test_p']}) | "
                         f"{r['attempts_per_task']} | {r['generated_tokens_per_task']:,} | {r['prefilled_tokens_per_task']:,} |")
        lines.append("")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("run")
    r.add_argument("--model", required=True)
    r.add_argument("--limit", type=int, default=200)
    r.add_argument("--concurrency", type=int, default=32)
    r.add_argument("--limit-seconds", type=int, default=480)
    r.add_argument("--variants", help="comma list (default: all)")
    s = sub.add_parser("summarize")
    s.add_argument("--split", action="append", required=True, metavar="LABEL=RUN[+RUN...]",
                   help="a comparison over the variants in RUN (several joined with +), repeatable")
    s.add_argument("--name", default="weak_spots", help="output file stem in benchmarks/results")
    args, extra = parser.parse_known_args()  # (run: what follows `--` goes to egcfg bench)
    if extra and (args.cmd != "run" or extra[0] != "--"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra[1:]
    return cmd_run(args) if args.cmd == "run" else cmd_summarize(args)


if __name__ == "__main__":
    sys.exit(main())
