"""`egcfg report RUN --html FILE`: one self-contained page (plots inlined as PNG, no network).

Sections: the headline numbers, pass rate vs gamma, pass rate vs cost, and a per-task view of the
line-by-line guidance (candidates, the traces the model saw, the chosen line) for every attempt.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from .report import headline
from .store import Store


def _plot_png(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=110)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _gamma_plot(summary: dict) -> str:
    gammas = list(summary["per_gamma"])
    rates = [summary["per_gamma"][g]["attempt_pass_rate"] or 0 for g in gammas]

    def draw(ax):
        ax.bar([str(g) for g in gammas], rates, color="#4c72b0")
        ax.set_xlabel("gamma")
        ax.set_ylabel("attempts passing hidden tests (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Pass rate vs gamma")

    return _plot_png(draw)


def _cost_plot(tasks: list[dict]) -> str:
    costs = sorted((t["stats"].get("seconds_total", 0.0), t["passed_hidden"]) for t in tasks)

    def draw(ax):
        xs, ys, solved = [], [], 0
        for i, (cost, passed) in enumerate(costs, 1):
            solved += passed
            xs.append(cost)
            ys.append(100.0 * solved / len(costs))
        ax.step(xs, ys, where="post", color="#dd8452")
        ax.set_xlabel("seconds spent on the task (tasks sorted by cost)")
        ax.set_ylabel("tasks solved within that cost (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Pass rate vs cost")

    return _plot_png(draw)


def _esc(text) -> str:
    return html.escape(str(text if text is not None else ""))


def _task_section(task: dict, attempts: list[dict]) -> str:
    verdict = "solved" if task["passed_hidden"] else "failed"
    parts = [f'<details class="task {verdict}" id="{_esc(task["task_id"])}"><summary>{_esc(task["task_id"])}: '
             f'<b>{verdict}</b> (final: agent {_esc(task["final_agent"])}, gamma {_esc(task["final_gamma"])})</summary>',
             f'<pre class="code">{_esc(task["code"])}</pre>']
    for att in attempts:
        hidden = {None: "not scored", 1: "passes hidden", 0: "fails hidden"}[att["passed_hidden"]]
        parts.append(f'<div class="attempt"><h4>agent {_esc(att["agent"])}, gamma {att["gamma"]:g}: '
                     f'{att["tests_passed"]}/{att["tests_total"]} visible, {hidden}, stop: {_esc(att["stop_reason"])}</h4>')
        for line in att["lines"]:
            parts.append(f'<div class="line"><div>line {line["line"]}: {len(line["candidates"])} candidate(s); chosen '
                         f'{"(guided)" if line["guided"] else "(unguided)"}: <code>{_esc(line["chosen"])}</code></div>')
            if line.get("signal"):
                parts.append(f'<details><summary>traces the model saw</summary><pre class="signal">{_esc(line["signal"])}</pre></details>')
            parts.append("</div>")
        parts.append(f'<details><summary>program</summary><pre class="code">{_esc(att["code"])}</pre></details></div>')
    parts.append("</details>")
    return "\n".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.solved>summary b{color:#2a7a2a}.failed>summary b{color:#b22}.attempt{margin-left:1.5em}
.line{margin-left:1em;border-left:3px solid #ddd;padding-left:.6em}img{margin:.5em 1em .5em 0}"""


def _agents_plot(curve: list[dict]) -> str:
    """pass@1 against attempts spent: one point per first-k-agents prefix of the grid."""
    def draw(ax):
        xs = [r["attempts_per_task"] for r in curve]
        ax.plot(xs, [r["pass_at_1"] or 0 for r in curve], marker="o", color="#55a868")
        for r, x in zip(curve, xs):
            ax.annotate(str(r["agents"]), (x, r["pass_at_1"] or 0), textcoords="offset points", xytext=(3, -10), fontsize=7)
        ax.set_xlabel("attempts per task (first k agents; k at each point)")
        ax.set_ylabel("pass@1, hidden tests (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Pass rate vs attempts spent")

    return _plot_png(draw)


def write_html(store: Store, summary: dict, path: Path) -> None:
    tasks = store.tasks()
    attempts = store.attempts()
    by_task: dict[str, list[dict]] = {}
    for att in attempts:
        by_task.setdefault(att["task_id"], []).append(att)
    head = [("benchmark", summary["benchmark"]), ("protocol", summary["protocol"]), ("method", summary["method"]),
            ("agents", summary["agents"]), ("model", summary["model"]),
            *[("beyond the paper's method", e) for e in summary.get("extensions") or []],
            ("tasks", f'{summary["tasks"]} of {summary["tasks_planned"]}'),
            ("pass@1 (hidden tests)", headline(summary)), ("greedy baseline", summary["baseline_pass_at_1"]),
            ("RSR", summary["rsr"]), ("the paper's count (any attempt passes hidden)", summary.get("any_attempt_pass_at_1")),
            ("seconds per task", summary["cost_per_task"]["seconds_total"]),
            ("command", summary["command"]), ("date", summary["date"]), ("machine", summary["machine"])]
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in head)
    plots = ""
    if tasks:
        plots = (f'<img alt="pass rate vs gamma" src="data:image/png;base64,{_gamma_plot(summary)}">'
                 f'<img alt="pass rate vs cost" src="data:image/png;base64,{_cost_plot(tasks)}">')
        curve = summary.get("first_k_agents") or []
        if len(curve) > 1:
            plots += f'<img alt="pass rate vs attempts spent" src="data:image/png;base64,{_agents_plot(curve)}">'
            plots += ("<table id='first-k'><tr><th>first k agents</th><th>pass@1 (hidden)</th><th>attempts/task</th>"
                      "<th>generated tokens/task</th></tr>" + "".join(
                          f"<tr><td>{r['agents']}</td><td>{r['pass_at_1']}</td><td>{r['attempts_per_task']}</td>"
                          f"<td>{r['generated_tokens_per_task']}</td></tr>" for r in curve) + "</table>")
    body = "\n".join(_task_section(t, by_task.get(t["task_id"], [])) for t in tasks)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>egcfg report: {_esc(summary['benchmark'])}</title>"
            f"<style>{STYLE}</style></head><body><h1>egcfg report: {_esc(summary['benchmark'])} "
            f"({_esc(summary['protocol'])} protocol)</h1><table id='summary'>{rows}</table><h2>Plots</h2>{plots}"
            f"<h2>Tasks</h2><p>Click a task for its attempts and the line-by-line guidance.</p>{body}</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
