"""How reports state pass@1 when a run stopped part-way (no model)."""

from egcfg.bench.report import headline


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
