"""egcfg report RUN --rescore --as SIBLING --out NEW: a run's attempts scored on a sibling benchmark's
hidden tests (bench/rescore_as.py), on a made-up MBPP run and MBPP-ET file (no model)."""

import json
import shutil
import sqlite3

from conftest import ROOT

FIXTURE = ROOT / "tests" / "data" / "mbpp_tiny.jsonl"


def _data(tmp_path):
    """mbpp.jsonl (the tiny fixture) and an MBPP-ET file beside it: task 11 gets an extra assert that
    the run's final program fails, 12 a changed prompt, 13 is not in it; 14 is the same plus one
    assert its final program passes."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "mbpp.jsonl")
    rows = {r["task_id"]: r for r in map(json.loads, FIXTURE.read_text().splitlines())}
    et = [dict(rows[11], test_list=rows[11]["test_list"] + ["assert biggest([]) is None"]),
          dict(rows[12], text="Write a function to reverse a string, twice."),
          dict(rows[14], test_list=rows[14]["test_list"] + ["assert is_even(10)"])]
    (folder / "MBPP_ET.jsonl").write_text("".join(json.dumps(r) + "\n" for r in et))
    return folder


def _run(tmp_path):
    """A finished MBPP run of two agents on tasks 11-14 (honest protocol)."""
    from egcfg.bench.store import Store
    from egcfg.engine import Attempt, Stats

    store = Store(tmp_path / "run")
    agents = [{"name": n, "gammas": [0.0, 1.0]} for n in ("one", "two")]
    store.set_meta(agents=agents, protocol="honest", task_ids=["Mbpp/11", "Mbpp/12", "Mbpp/13", "Mbpp/14"],
                   benchmark="mbpp", method="egcfg", command="egcfg bench mbpp ...", model="m.gguf")
    programs = {"Mbpp/11": "def biggest(xs):\n    return max(xs)\n", "Mbpp/12": "def rev(s):\n    return s[::-1]\n",
                "Mbpp/13": "def vowels(s):\n    return 0\n", "Mbpp/14": "def is_even(n):\n    return n % 2 == 0\n"}
    for pos, (tid, code) in enumerate(programs.items()):
        # agent one's gamma 0 fails its visible tests (a wrong program), its gamma 1 passes
        for gamma, text, ok in ((0.0, "def nothing():\n    pass\n", False), (1.0, code, True)):
            store.add_attempt(tid, "one", Attempt(gamma=gamma, code=text, passed=ok, tests_passed=3 * ok, tests_total=3,
                                                  stop_reason="eos", stats=Stats()), [])
            store.set_attempt_hidden(tid, "one", gamma, ok)
        store.add_task(tid, pos, {"agent": "one", "gamma": 1.0, "code": code}, True,
                       {"passed": True, "status": "completed", "detail": ""}, {})
    store.close()
    return tmp_path / "run"


def test_a_run_is_scored_as_its_sibling_benchmark_task_by_task(egcfg_cli, tmp_path):
    data, run = _data(tmp_path), _run(tmp_path)
    out = tmp_path / "as-et"
    res = egcfg_cli("report", str(run), "--rescore", "--as", "mbpp-et", "--data", str(data), "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr[-800:]
    result = json.loads(res.stdout)
    assert result["tasks"] == 2 and result["left_out_missing"] == ["Mbpp/13"]
    assert result["left_out_different_inputs"] == ["Mbpp/12"]
    assert (result["pass_at_1_from"], result["pass_at_1_as"]) == (100.0, 50.0)
    db = sqlite3.connect(out / "results.sqlite")
    tasks = {t: (ok, code) for t, ok, code in db.execute("SELECT task_id, passed_hidden, code FROM tasks")}
    assert tasks == {"Mbpp/11": (0, "def biggest(xs):\n    return max(xs)\n"),  # max([]) raises: fails the ET assert
                     "Mbpp/14": (1, "def is_even(n):\n    return n % 2 == 0\n")}
    # every attempt scored again on the ET tests (the wrong program fails them, as before)
    assert sorted(db.execute("SELECT task_id, gamma, passed_hidden FROM attempts")) == [
        ("Mbpp/11", 0.0, 0), ("Mbpp/11", 1.0, 0), ("Mbpp/14", 0.0, 0), ("Mbpp/14", 1.0, 1)]
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    db.close()
    assert meta["benchmark"] == "mbpp-et" and meta["task_ids"] == ["Mbpp/11", "Mbpp/14"]
    assert meta["command"] == "egcfg bench mbpp ..." and meta["model"] == "m.gguf"  # the programs' provenance
    assert meta["rescored_from"]["benchmark"] == "mbpp" and meta["rescored_from"]["left_out_missing"] == ["Mbpp/13"]
    # the new folder is a run like any other
    report = egcfg_cli("report", str(out))
    assert report.returncode == 0 and "mbpp-et" in report.stdout, report.stderr[-800:]
    assert "the attempts of the mbpp run run" in report.stdout and "1 task(s) of it left out" not in report.stdout
    assert "2 task(s) of it left out" in report.stdout
    again = egcfg_cli("report", str(run), "--rescore", "--as", "mbpp-et", "--data", str(data), "--out", str(out))
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_rescore_as_errors_are_one_line(egcfg_cli, tmp_path):
    data, run = _data(tmp_path), _run(tmp_path)
    cases = [
        (("--as", "mbpp-et"), "go together"),  # no --out
        (("--out", str(tmp_path / "x")), "go together"),
        (("--as", "nope", "--out", str(tmp_path / "x")), "not a benchmark"),
        (("--as", "mbpp", "--out", str(tmp_path / "x")), "already"),
    ]
    for extra, words in cases:
        res = egcfg_cli("report", str(run), "--rescore", "--data", str(data), *extra)
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
    export = tmp_path / "e.json"
    export.write_text("{}")
    res = egcfg_cli("report", str(export), "--rescore", "--as", "mbpp-et", "--out", str(tmp_path / "y"))
    assert res.returncode == 2 and "run folder" in res.stderr and "Traceback" not in res.stderr
