"""How reports state pass@1 when a run stopped part-way (no model)."""

from egcfg.bench.report import headline
from conftest import ROOT


def test_a_partial_run_says_so_with_the_bound_over_all_planned_tasks():
    done = {"finished": True, "pass_at_1": 55.0, "tasks": 100, "tasks_planned": 100, "pass_at_1_bound_over_planned": 55.0}
    assert headline(done) == "55.0%"
    partial = {"finished": False, "pass_at_1": 81.4, "tasks": 86, "tasks_planned": 100, "pass_at_1_bound_over_planned": 70.0}
    text = headline(partial)
    assert "81.4% of the 86 finished tasks" in text and "at least 70.0% of all 100 planned" in text
    assert "stopped part-way" in text


def test_a_run_names_its_model_by_file_and_sha256_not_by_path(tmp_path):
    import hashlib

    from egcfg.cli import model_identity
    from egcfg.models import MODELS

    spec = next(iter(MODELS.values()))
    assert model_identity("embedded")[1] in {m.sha256 for m in MODELS.values()}
    assert model_identity(next(iter(MODELS))) == (spec.filename, spec.sha256)
    weights = tmp_path / "deep" / "place" / "my-model.gguf"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not really weights")
    assert model_identity(str(weights)) == ("my-model.gguf", hashlib.sha256(b"not really weights").hexdigest())
    assert model_identity(str(tmp_path / "deep")) == ("deep", None)  # a transformers folder: no hash


def _export(path, tasks, benchmark="mbpp"):
    import json

    path.write_text(json.dumps({"summary": {"benchmark": benchmark}, "tasks": tasks}))
    return path


def test_an_export_is_scored_again_from_scratch(egcfg_cli, tmp_path):
    """egcfg report EXPORT --rescore runs every final program on its hidden tests in the sandbox
    and sets the new verdicts beside the stored ones: a tampered verdict shows."""
    import json
    from pathlib import Path

    data = str(Path(__file__).parent / "data" / "mbpp_tiny.jsonl")
    export = _export(tmp_path / "run.json", [
        {"task_id": "Mbpp/11", "final_code": "def biggest(xs):\n    return max(xs)\n", "passed_hidden": True},
        {"task_id": "Mbpp/12", "final_code": "def nothing():\n    pass\n", "passed_hidden": True},  # claims a pass
    ])
    res = egcfg_cli("report", str(export), "--rescore", "--data", data)
    assert res.returncode == 0, res.stderr
    assert "pass@1 50.0% (stored: 100.0%)" in res.stdout and "Mbpp/12: stored pass, now fail" in res.stdout
    res = egcfg_cli("report", str(export), "--rescore", "--data", data, "--json")
    out = json.loads(res.stdout)
    assert out["pass_at_1_rescored"] == 50.0 and [c["task_id"] for c in out["changed"]] == ["Mbpp/12"]


def test_rescore_errors_are_one_line(egcfg_cli, tmp_path):
    from pathlib import Path

    data = str(Path(__file__).parent / "data" / "mbpp_tiny.jsonl")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    cases = [([str(tmp_path / "nope.json"), "--rescore"], "no such run folder or export"),
             ([str(bad_json), "--rescore"], "not a readable export"),
             ([str(_export(tmp_path / "old.json", [{"task_id": "Mbpp/11", "passed_hidden": True}])), "--rescore"],
              "not an export with final programs"),
             ([str(_export(tmp_path / "other.json", [{"task_id": "Mbpp/999", "final_code": "x = 1", "passed_hidden": False}])),
               "--rescore", "--data", data], "not in mbpp as loaded"),
             ([str(bad_json)], "is a file: an exported run is scored again with --rescore")]
    for args, words in cases:
        res = egcfg_cli("report", *args)
        assert res.returncode == 2 and words in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_reports_give_the_papers_count_and_pass_at_1_against_attempts_spent(tmp_path):
    """Task a: agent 1 passes. Task b: agent 1 fails its visible tests (but one attempt passes
    the hidden ones), agent 2 passes. Honest pass@1 with the first agent alone 50%, with both
    100%; the paper's count (any attempt passes hidden) is 100% either way."""
    from egcfg.bench.report import format_markdown, format_text, summarize
    from egcfg.bench.store import Store
    from egcfg.engine import Attempt, Stats

    store = Store(tmp_path / "run")
    agents = [{"name": n, "gammas": [0.0, 1.0]} for n in ("one", "two")]
    store.set_meta(agents=agents, protocol="honest", task_ids=["a", "b"], benchmark="mbpp", method="egcfg")

    def attempt(task, agent, gamma, visible, hidden, tokens=10):
        st = Stats()
        st.tokens_decoded = tokens
        store.add_attempt(task, agent, Attempt(gamma=gamma, code="x = 1\n", passed=visible, tests_passed=int(visible),
                                               tests_total=1, stop_reason="eos", stats=st), [])
        store.set_attempt_hidden(task, agent, gamma, hidden)

    attempt("a", "one", 0.0, True, True)
    attempt("b", "one", 0.0, False, False)  # (the honest pick among failures: the earliest)
    attempt("b", "one", 1.0, False, True)   # visible fail, hidden pass: counted by the paper's count only
    attempt("b", "two", 0.0, True, True)
    store.add_task("a", 0, {"agent": "one", "gamma": 0.0, "code": "x"}, True, {"passed": True, "status": "ok", "detail": ""}, {})
    store.add_task("b", 1, {"agent": "two", "gamma": 0.0, "code": "x"}, True, {"passed": True, "status": "ok", "detail": ""}, {})
    s = summarize(store)
    store.close()
    assert s["any_attempt_pass_at_1"] == 100.0
    assert [(r["agents"], r["pass_at_1"], r["attempts_per_task"], r["generated_tokens_per_task"])
            for r in s["first_k_agents"]] == [(1, 50.0, 1.5, 15.0), (2, 100.0, 2.0, 20.0)]
    assert "| 1 | 50.0 | 1.5 | 15.0 |" in format_markdown(s) and "first k agents: 1: 50.0%" in format_text(s)


def test_every_report_says_when_a_run_went_beyond_the_papers_method(tmp_path):
    """--accept-candidates (on by default) is an extension of the method: the text, markdown and
    HTML reports name it, with the attempts it ended; a run with the paper's settings says nothing."""
    from egcfg.bench.html import write_html
    from egcfg.bench.report import format_markdown, format_text, summarize
    from egcfg.bench.store import Store
    from egcfg.engine import Attempt, Stats

    for accept in (True, False):
        store = Store(tmp_path / f"run-{accept}")
        store.set_meta(agents=[{"name": "one", "gammas": [0.0, 1.0], "accept_candidates": accept}], protocol="honest",
                       task_ids=["a"], benchmark="mbpp", method="egcfg")
        store.add_attempt("a", "one", Attempt(gamma=0.0, code="x = 1\n", passed=False, tests_passed=0, tests_total=1,
                                              stop_reason="eos", stats=Stats()), [])
        store.add_attempt("a", "one", Attempt(gamma=1.0, code="x = 2\n", passed=True, tests_passed=1, tests_total=1,
                                              stop_reason="candidate" if accept else "eos", stats=Stats()), [])
        store.add_task("a", 0, {"agent": "one", "gamma": 1.0, "code": "x = 2\n"}, True,
                       {"passed": True, "status": "ok", "detail": ""}, {})
        s = summarize(store)
        write_html(store, s, tmp_path / f"{accept}.html")
        store.close()
        said = [format_text(s), format_markdown(s), (tmp_path / f"{accept}.html").read_text()]
        if accept:
            assert s["extensions"] and "1 attempts ended so" in s["extensions"][0]
            assert all("beyond the paper" in text and "accept-candidates" in text for text in said)
        else:
            assert s["extensions"] == [] and not any("beyond the paper" in text for text in said)


def test_the_summary_sets_each_egcfg_run_beside_its_controls_on_the_same_tasks(tmp_path, monkeypatch):
    """benchmarks/export.py: an EG-CFG row gets the sampling control and the greedy run exported on
    exactly its tasks (same model and protocol, as many agents for the control), with tokens per
    task; a control on other tasks is not set beside it."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import export

    out = tmp_path / "results" / "runs"
    out.mkdir(parents=True)
    monkeypatch.setattr(export, "OUT", out)
    monkeypatch.setattr(export, "ROOT", tmp_path / "root")
    (tmp_path / "root" / "benchmarks" / "results").mkdir(parents=True)

    def write(name, method, tasks, rate, decoded, agents=1, fmt=None, benchmark="mbpp"):
        # (fmt None: an agent recorded before prompt formats existed, which ran one-shot)
        configs = [{"name": "a"} if fmt is None else {"name": "a", "prompt_format": fmt}]
        summary = {"benchmark": benchmark, "protocol": "honest", "method": method, "agents": agents, "model": "m.gguf",
                   "tasks": len(tasks), "tasks_planned": len(tasks), "pass_at_1": rate, "baseline_pass_at_1": 30.0,
                   "rsr": None, "run": name, "cost_per_task": {"tokens_decoded": decoded, "candidate_tokens": 5.0},
                   "agent_configs": configs}
        (out / f"{name}.json").write_text(json.dumps({"summary": summary, "tasks": [{"task_id": t} for t in tasks]}))

    write("eg", "egcfg", ["a", "b"], 50.0, 100.0, fmt="auto")
    write("ctl", "sampling", ["a", "b"], 60.0, 20.0)
    write("ctl-other-tasks", "sampling", ["a", "c"], 10.0, 20.0)
    write("ctl-more-agents", "sampling", ["a", "b"], 70.0, 20.0, agents=3)
    write("ctl-other-prompt", "sampling", ["a", "b"], 80.0, 20.0, fmt="zero-shot")
    write("greedy", "baseline", ["b", "a"], 30.0, 10.0, fmt="one-shot")
    # on HumanEval, auto is evalplus: an evalplus control counts, a one-shot one does not
    write("he-eg", "egcfg", ["h"], 50.0, 100.0, fmt="auto", benchmark="humaneval")
    write("he-ctl-one-shot", "sampling", ["h"], 90.0, 20.0, fmt="one-shot", benchmark="humaneval")
    write("he-ctl", "sampling", ["h"], 40.0, 20.0, fmt="evalplus", benchmark="humaneval")
    rows = {r["run"]: r for r in export.rebuild_summary()}
    assert rows["eg"]["sampling_control"] == {"run": "ctl", "pass_at_1": 60.0, "generated_tokens_per_task": 25.0}
    assert rows["eg"]["greedy_run"]["run"] == "greedy" and rows["eg"]["generated_tokens_per_task"] == 105.0
    assert "sampling_control" not in rows["ctl"]
    assert rows["he-eg"]["prompt"] == "evalplus" and rows["he-eg"]["sampling_control"]["run"] == "he-ctl"
    md = (tmp_path / "root" / "benchmarks" / "results" / "summary.md").read_text()
    assert "| eg | mbpp | one-shot | 2 | 1 | 50.0 | 105.0 | 30.0 | 60.0 | 25.0 |" in md
