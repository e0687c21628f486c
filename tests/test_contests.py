"""codecontests: the loader on the shared train-split file (visible = the statement's examples,
multiple-answer and reference-failing problems excluded, float tolerances), the output checkers,
and stdin/stdout judging in the sandbox (stdin a regular file, long outputs, exit(0), time limits)."""

import gzip
import json

import pytest

from conftest import ROOT
from egcfg.bench.contests import classify, load_codecontests, split_statement
from egcfg.bench.datasets import load_benchmark
from egcfg.errors import EgcfgError
from egcfg.execution.checks import io_output_matches, score_hidden
from egcfg.task import IOTest, Task, task_from_dict

CONTESTS = ROOT.parent / "shared" / "data" / "codecontests_train"
needs_data = pytest.mark.skipif(not CONTESTS.is_dir(), reason=f"CodeContests file not found at {CONTESTS}")


@pytest.fixture(scope="module")
def rows():
    with gzip.open(CONTESTS / "codecontests_train250.jsonl.gz", "rt") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


@pytest.fixture(scope="module")
def tasks():
    return {t.task_id: t for t in load_benchmark("codecontests", CONTESTS)}


def test_checkers():
    assert io_output_matches("1 2\n3\n", "1 2 \n3", "lines") and not io_output_matches("1  2\n3", "1 2\n3", "lines")
    assert io_output_matches("1  2\n\n3  ", "1 2 3\n", "tokens") and not io_output_matches("1 2", "1 2 3", "tokens")
    # testlib's doubleCompare: absolute or relative error at most EPS.
    assert io_output_matches("0.1500000001 YES", "0.15 YES", "float:1e-06")
    assert io_output_matches("1000000.5", "1000000.0", "float:1e-06")  # relative error 5e-7
    assert not io_output_matches("0.1501", "0.15", "float:1e-06")
    assert not io_output_matches("0.15 NO", "0.15 YES", "float:1e-06")
    assert not io_output_matches("nan", "0.5", "float:1e-06") and not io_output_matches("0.15", "0.15 1", "float:1e-06")
    assert io_output_matches("1", "1.000000000", "float:1e-09") and not io_output_matches("1.00000001", "1", "float:1e-09")


@needs_data
def test_loader_keeps_judgeable_problems(rows, tasks):
    verdicts = {k: classify(r) for k, r in rows.items()}
    kept = [k for k, v in verdicts.items() if v["kept"]]
    assert len(rows) == 250 and list(tasks) == kept and len(kept) == 168
    assert sum(t.checker == "tokens" for t in tasks.values()) == 145
    assert sum(t.checker.startswith("float:") for t in tasks.values()) == 23
    reasons = [v["reason"] for v in verdicts.values() if not v["kept"]]
    assert sum(r.startswith("reference solution fails") for r in reasons) == 41
    assert sum(r.startswith("flagged multiple-answer") for r in reasons) == 41
    # "If there are several answers, you can print any": excluded, not judged by tokens.
    assert verdicts["cluster1/1294_c_product_of_three_numbers_4292"]["kept"] is False
    # A stated tolerance of 10^{-9} ("10 - 9" in the flattened statement) becomes the checker's.
    assert tasks["cluster6/540_d_bad_luck_island_6817"].checker == "float:1e-09"
    assert len(load_codecontests(CONTESTS, include_excluded=True)) == 250
    for task_id, t in tasks.items():
        statement, examples = split_statement(rows[task_id]["description"])
        # Visible = the statement's examples (public tests); hidden = the rest; the prompt shows the
        # statement without its examples section, the visible tests after it.
        assert len(t.io_tests) == len(examples) >= 1 and len(t.io_tests) + len(t.hidden_io_tests) == len(rows[task_id]["tests"])
        assert t.prompt == statement and "\nExamples\n" not in t.prompt and t.hidden_timeout == 10.0
        assert all(x.input.endswith("\n") for x in t.io_tests + t.hidden_io_tests)


@needs_data
def test_reference_solutions_pass_and_wrong_programs_fail(rows, tasks, sandbox):
    # 1249_B1 uses PyRival's FastIO (os.fstat(0).st_size on stdin, file.mode, os.write to stdout's
    # fileno); 913_B ends with exit(); 540_D prints reals (tolerance 1e-9).
    for task_id in ["cluster2/1249_b1_books_exchange_easy_version_7099", "cluster0/913_b_christmas_spruce_7977",
                    "cluster6/540_d_bad_luck_island_6817"]:
        verdict = score_hidden(rows[task_id]["reference_solution_py3"], tasks[task_id], sandbox)
        assert verdict["passed"], (task_id, verdict)
    wrong = score_hidden("print(0)\n", tasks["cluster0/913_b_christmas_spruce_7977"], sandbox)
    assert not wrong["passed"] and wrong["status"] == "wrong answer" and "expected" in wrong["detail"]
    assert not score_hidden("exit(1)\n", tasks["cluster0/913_b_christmas_spruce_7977"], sandbox)["passed"]


def test_judging_in_the_sandbox(sandbox):
    # stdin is a regular file: its size can be asked.
    r = sandbox.run("import os\nprint(len(os.read(0, os.fstat(0).st_size)))\n", stdin="abc\n", trace=False)
    assert r.stdout.strip() == "4"
    # The whole output is judged, not the few thousand characters a traced run keeps.
    long = Task("long", "Print 20000 ones.", io_tests=(IOTest("", "1 " * 20000),), checker="tokens")
    assert score_hidden("print(' '.join(['1'] * 20000))\n", long, sandbox)["passed"]
    assert not score_hidden("print(' '.join(['1'] * 19999))\n", long, sandbox)["passed"]
    # A task's hidden_timeout is each hidden run's limit.
    slow = Task("slow", "Sleep.", io_tests=(IOTest("", "1"),), hidden_timeout=0.5)
    assert score_hidden("import time\ntime.sleep(3)\nprint(1)\n", slow, sandbox)["status"] == "timeout"
    assert score_hidden("print(1)\n", slow, sandbox)["passed"]


def test_errors(tmp_path):
    with pytest.raises(EgcfgError, match="no such file"):
        load_benchmark("codecontests", tmp_path / "absent.jsonl.gz")
    (tmp_path / "codecontests_train250.jsonl").write_text('{"task_id": "x"}\n')
    with pytest.raises(EgcfgError, match="not the codecontests_train format"):
        load_benchmark("codecontests", tmp_path)
    with pytest.raises(EgcfgError, match="give --data"):
        load_benchmark("codecontests")
    with pytest.raises(EgcfgError, match="checker"):
        Task("t", "p", io_tests=(IOTest("", ""),), checker="float:2").validate()
    # Task files may name a checker too.
    io = {"task_id": "t", "prompt": "Echo.", "io_tests": [{"input": "1\n", "output": "1\n"}]}
    assert task_from_dict(dict(io, checker="float:1e-6")).checker == "float:1e-6"
    with pytest.raises(EgcfgError, match="checker"):
        task_from_dict(dict(io, checker="exact"))
