"""Reports of a finished (or partly finished) run: pass@1 on hidden tests, the greedy baseline on
the same tasks, RSR, per-gamma and per-agent contributions, and cost."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from .protocol import rsr
from .store import Store

COST_KEYS = ("tokens_decoded", "tokens_prefilled", "candidate_tokens", "executions", "seconds_total")


def _pct(num: int, den: int) -> float | None:
    return round(100.0 * num / den, 2) if den else None


def first_k_agents(meta: dict, attempts: list[dict], task_ids: set[str]) -> list[dict]:
    """pass@1 on the finished tasks had only the first k agents run, k = 1..N: the final program
    picked (by the run's protocol) among those agents' attempts, with the attempts and generated
    tokens (guided + candidates) they spent per task. Read off the one run: the agents ran in
    this order and the later ones only where the earlier failed, so the curve is the run's own."""
    from ..solver import pick_final
    from .runner import schedule_order

    agents = meta.get("agents", [])
    if not agents or not task_ids:
        return []
    order = schedule_order({a["name"]: a["gammas"] for a in agents})
    judge = "passed_hidden" if meta.get("protocol") == "paper" else "passed_visible"
    by_task: dict[str, list[dict]] = defaultdict(list)
    for a in attempts:
        by_task[a["task_id"]].append(a)
    curve = []
    for k in range(1, len(agents) + 1):
        first = {a["name"] for a in agents[:k]}
        solved = spent = tokens = 0
        for task in task_ids:
            mine = sorted((r for r in by_task.get(task, []) if r["agent"] in first), key=order)
            spent += len(mine)
            tokens += sum(r["stats"].get("tokens_decoded", 0) + r["stats"].get("candidate_tokens", 0) for r in mine)
            if mine:
                final = pick_final(mine, passed=lambda r: r[judge], tests_passed=lambda r: r["tests_passed"])
                solved += bool(final["passed_hidden"])
        n = len(task_ids)
        curve.append({"agents": k, "solved": solved, "attempts": spent, "pass_at_1": _pct(solved, n),
                      "attempts_per_task": round(spent / n, 2), "generated_tokens_per_task": round(tokens / n, 1)})
    return curve


def summarize(store: Store) -> dict:
    meta = store.meta()
    tasks = store.tasks()
    attempts = store.attempts()
    done = {t["task_id"] for t in tasks}
    attempts = [a for a in attempts if a["task_id"] in done]
    agents = [a["name"] for a in meta.get("agents", [])] or sorted({a["agent"] for a in attempts})
    n = len(tasks)
    planned = max(len(meta.get("task_ids", [])), n)
    solved = sum(t["passed_hidden"] for t in tasks)

    # Baseline: the first agent's gamma-0 attempt (plain greedy, same prompt) on the same tasks.
    first = agents[0] if agents else None
    greedy = {a["task_id"]: a for a in attempts if a["agent"] == first and a["gamma"] == 0.0}
    base = None
    if n and len(greedy) == n and all(g["passed_hidden"] is not None for g in greedy.values()):
        base = _pct(sum(g["passed_hidden"] for g in greedy.values()), n)
    accuracy = _pct(solved, n)

    per_gamma = defaultdict(lambda: {"attempts": 0, "passed_hidden": 0, "final_from": 0, "final_solved": 0})
    for a in attempts:
        row = per_gamma[a["gamma"]]
        row["attempts"] += 1
        row["passed_hidden"] += bool(a["passed_hidden"])
    per_agent = defaultdict(lambda: {"final_from": 0, "final_solved": 0, "attempts": 0})
    for a in attempts:
        per_agent[a["agent"]]["attempts"] += 1
    for t in tasks:
        if t["final_gamma"] is not None:
            per_gamma[t["final_gamma"]]["final_from"] += 1
            per_gamma[t["final_gamma"]]["final_solved"] += t["passed_hidden"]
            per_agent[t["final_agent"]]["final_from"] += 1
            per_agent[t["final_agent"]]["final_solved"] += t["passed_hidden"]
    for row in per_gamma.values():
        row["attempt_pass_rate"] = _pct(row["passed_hidden"], row["attempts"])
    cost = {k: round(sum(t["stats"].get(k, 0) for t in tasks) / n, 2) if n else None for k in COST_KEYS}
    # The median is robust to one task that took long for reasons outside the method (a paused run).
    cost["median_seconds"] = round(statistics.median(t["stats"].get("seconds_total", 0.0) for t in tasks), 2) if n else None
    return {
        "run": str(store.folder),
        "benchmark": meta.get("benchmark"), "protocol": meta.get("protocol"), "method": meta.get("method"),
        "model": meta.get("model"), "model_sha256": meta.get("model_sha256"), "agents": len(agents), "command": meta.get("command"), "date": meta.get("date"),
        "machine": meta.get("machine"),
        "tasks": n, "tasks_planned": planned, "finished": n >= planned, "solved": solved, "pass_at_1": accuracy,
        # A run stopped part-way left its hardest tasks unfinished: the rate over the finished ones
        # flatters it, so the bound over every planned task (unfinished counted as failed) goes beside it.
        "pass_at_1_bound_over_planned": _pct(solved, planned),
        "baseline_pass_at_1": base, "rsr": round(rsr(accuracy, base), 2) if (base is not None and accuracy is not None and rsr(accuracy, base) is not None) else None,
        "visible_pass_rate": _pct(sum(t["passed_visible"] for t in tasks), n),
        # The reference implementation's count: a task counts if any attempt of any agent at any
        # gamma passes its hidden tests (the paper protocol's headline; an upper bound otherwise).
        "any_attempt_pass_at_1": _pct(len({a["task_id"] for a in attempts if a["passed_hidden"]}), n),
        "first_k_agents": first_k_agents(meta, attempts, done),
        "per_gamma": {str(g): v for g, v in sorted(per_gamma.items())},
        "per_agent": dict(per_agent),
        "cost_per_task": cost,
        "extensions": extensions(meta, attempts),
        # a run made by ``report --rescore --as`` (rescore_as.py): whose attempts, scored how
        "rescored_from": meta.get("rescored_from"),
    }


def extensions(meta: dict, attempts: list[dict]) -> list[str]:
    """What the run did beyond the paper's method, said in every report (empty: the paper's method)."""
    agents = [a for a in meta.get("agents", []) if isinstance(a, dict)]
    out = []
    if meta.get("method") == "egcfg" and any(a.get("accept_candidates") for a in agents):
        n = sum(a["stop_reason"] == "candidate" for a in attempts)
        out.append(f"accept-candidates (a sampled candidate that passes every visible test is the attempt's program: "
                   f"{n} attempts ended so; --no-accept-candidates is the paper's method)")
    if meta.get("method") == "egcfg" and any(a.get("resample_duplicates") for a in agents):
        out.append("resample-duplicates (candidates that repeat a program are drawn again)")
    return out


def headline(s: dict) -> str:
    """pass@1 as every report states it: with a run stopped part-way, of the finished tasks and as
    the bound over all planned tasks."""
    if s.get("finished", True):
        return f"{s['pass_at_1']}%"
    return (f"{s['pass_at_1']}% of the {s['tasks']} finished tasks; at least {s['pass_at_1_bound_over_planned']}% "
            f"of all {s['tasks_planned']} planned (unfinished counted as failed): the run stopped part-way")


def rescored_line(r: dict) -> str:
    """What a run made by ``report --rescore --as`` is, in one line."""
    left = len(r.get("left_out_missing") or []) + len(r.get("left_out_different_inputs") or [])
    return (f"the attempts of the {r['benchmark']} run {Path(r['run']).name} (its command above), every one scored "
            f"on these hidden tests ({r['command']}, {r['date']}): the same prompts and visible tests, checked "
            f"per task" + (f"; {left} task(s) of it left out (not here, or other inputs)" if left else ""))


def format_text(s: dict) -> str:
    lines = [
        f"run {s['run']}: {s['benchmark']} | protocol {s['protocol']} | method {s['method']} | {s['agents']} agent(s) | model {s['model']}",
        f"tasks {s['tasks']}/{s['tasks_planned']}  pass@1 (hidden tests, {s['protocol']}) {headline(s)}"
        + (f"  greedy baseline {s['baseline_pass_at_1']}%  RSR " + (f"{s['rsr']}%" if s["rsr"] is not None else "n/a") if s["baseline_pass_at_1"] is not None else ""),
        f"visible tests passed by the final program: {s['visible_pass_rate']}%",
        "per gamma: " + "; ".join(f"{g}: final for {v['final_from']} tasks ({v['final_solved']} solved), "
                                  f"attempts {v['attempts']} pass {v['attempt_pass_rate']}%" for g, v in s["per_gamma"].items()),
        "per agent: " + "; ".join(f"{a}: final for {v['final_from']} ({v['final_solved']} solved)" for a, v in s["per_agent"].items()),
        "cost per task: " + ", ".join(f"{k} {v}" for k, v in s["cost_per_task"].items()),
        f"the paper's count (any attempt of any agent passes the hidden tests): {s['any_attempt_pass_at_1']}%",
    ]
    lines += [f"beyond the paper's method: {e}" for e in s.get("extensions") or []]
    if s.get("rescored_from"):
        lines.append(rescored_line(s["rescored_from"]))
    if len(s.get("first_k_agents") or []) > 1:
        lines.append("first k agents: " + "; ".join(f"{r['agents']}: {r['pass_at_1']}% ({r['attempts_per_task']} attempts, "
                                                   f"{r['generated_tokens_per_task']} tokens/task)" for r in s["first_k_agents"]))
    return "\n".join(lines)


def format_markdown(s: dict) -> str:
    rows = [
        f"# {s['benchmark']}: {s['method']}, {s['agents']} agent(s), protocol {s['protocol']}", "",
        f"- command: `{s['command']}`", f"- date: {s['date']}", f"- machine: {s['machine']}",
        f"- model: {s['model']}" + (f" (sha256 {s['model_sha256']})" if s.get("model_sha256") else ""),
        *[f"- beyond the paper's method: {e}" for e in s.get("extensions") or []],
        *([f"- {rescored_line(s['rescored_from'])}"] if s.get("rescored_from") else []), "",
        "| tasks | pass@1 (hidden) | greedy baseline | RSR | visible pass | s/task (mean, median) | executions/task | tokens decoded/task |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['tasks']} of {s['tasks_planned']} | {headline(s)} | {s['baseline_pass_at_1']} | {s['rsr']} | {s['visible_pass_rate']} | "
        f"{s['cost_per_task']['seconds_total']}, {s['cost_per_task']['median_seconds']} | {s['cost_per_task']['executions']} | {s['cost_per_task']['tokens_decoded']} |",
        "", f"The paper's count (a task counts if any attempt of any agent at any gamma passes its hidden tests): "
            f"{s.get('any_attempt_pass_at_1')}%",
    ]
    if len(s.get("first_k_agents") or []) > 1:
        rows += ["", "pass@1 against attempts spent, had only the first k agents run:", "",
                 "| first k agents | pass@1 (hidden) | attempts/task | generated tokens/task |", "|---|---|---|---|"]
        rows += [f"| {r['agents']} | {r['pass_at_1']} | {r['attempts_per_task']} | {r['generated_tokens_per_task']} |"
                 for r in s["first_k_agents"]]
    return "\n".join(rows) + "\n"
