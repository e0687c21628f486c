"""Score a run's final programs again, from scratch: ``egcfg report RUN --rescore``.

RUN is a run folder or an exported run (benchmarks/export.py: ``runs/<name>.json``, which carries
every task's final program). Each final program runs on its task's hidden tests in the sandbox, as
the run scored it (execution/checks.score_hidden), and the new verdicts are set beside the stored
ones: anyone holding an export and the benchmark's data can check its pass@1 without trusting it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EgcfgError
from .datasets import LOADERS, load_benchmark


def finals(run: Path) -> tuple[str, list[dict]]:
    """(benchmark, [{"task_id", "code", "passed_hidden"}]) of a run folder or an export."""
    if run.is_file():
        try:
            data = json.loads(run.read_text())
            benchmark = data["summary"]["benchmark"]
            rows = [{"task_id": t["task_id"], "code": t["final_code"], "passed_hidden": bool(t["passed_hidden"])}
                    for t in data["tasks"]]
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise EgcfgError(f"{run}: not a readable export ({exc})") from None
        except (KeyError, TypeError) as exc:
            raise EgcfgError(f"{run}: not an export with final programs (missing {exc})") from None
        return benchmark, rows
    from .store import Store

    store = Store(run, create=False, read_only=True)
    try:
        benchmark = store.meta().get("benchmark")
        rows = [{"task_id": t["task_id"], "code": t["code"], "passed_hidden": bool(t["passed_hidden"])}
                for t in store.tasks()]
    finally:
        store.close()
    return benchmark, rows


def rescore(run: str | Path, data: str | None = None, workers: int = 2) -> dict:
    """Re-run every final program on its hidden tests; the new verdicts beside the stored ones."""
    from concurrent.futures import ThreadPoolExecutor

    from ..execution.checks import score_hidden
    from ..execution.sandbox import Limits, Sandbox

    run = Path(run)
    if not run.exists():
        raise EgcfgError(f"{run}: no such run folder or export")
    benchmark, rows = finals(run)
    if benchmark not in LOADERS:
        raise EgcfgError(f"{run}: benchmark {benchmark!r} is not one egcfg can load ({', '.join(LOADERS)})")
    tasks = {t.task_id: t for t in load_benchmark(benchmark, data)}
    missing = [r["task_id"] for r in rows if r["task_id"] not in tasks]
    if missing:
        raise EgcfgError(f"{len(missing)} task(s) of the run are not in {benchmark} as loaded (e.g. {missing[0]}): "
                         "give the data the run used with --data")
    with Sandbox(Limits(), warm=0) as sandbox, ThreadPoolExecutor(workers) as pool:
        verdicts = list(pool.map(lambda r: score_hidden(r["code"], tasks[r["task_id"]], sandbox), rows))
    changed = [{"task_id": r["task_id"], "stored": r["passed_hidden"], "now": v["passed"], "status": v["status"]}
               for r, v in zip(rows, verdicts) if v["passed"] != r["passed_hidden"]]
    n = len(rows)
    return {"run": str(run), "benchmark": benchmark, "tasks": n,
            "pass_at_1_stored": round(100 * sum(r["passed_hidden"] for r in rows) / n, 2) if n else None,
            "pass_at_1_rescored": round(100 * sum(v["passed"] for v in verdicts) / n, 2) if n else None,
            "changed": changed}


def format_rescore(r: dict) -> str:
    lines = [f"re-scored {r['tasks']} final programs of {r['run']} ({r['benchmark']}, hidden tests, in the sandbox): "
             f"pass@1 {r['pass_at_1_rescored']}% (stored: {r['pass_at_1_stored']}%)"]
    if r["changed"]:
        lines.append(f"{len(r['changed'])} verdict(s) differ from the stored ones:")
        lines += [f"  {c['task_id']}: stored {'pass' if c['stored'] else 'fail'}, now "
                  f"{'pass' if c['now'] else 'fail'} ({c['status']})" for c in r["changed"]]
    else:
        lines.append("every verdict equals the stored one")
    return "\n".join(lines)
