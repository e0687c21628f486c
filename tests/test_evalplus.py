"""humaneval-plus and mbpp-plus: evalplus's loaders on the shared release files, and the hidden-test
harness in the sandbox (canonical solutions pass, wrong ones fail, EvalPlus's float tolerance and
time limits), with its allclose checked against numpy's own."""

import gzip
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from egcfg.bench.datasets import load_benchmark
from egcfg.bench.evalplus_harness import _egcfg_allclose
from egcfg.errors import EgcfgError
from egcfg.execution.checks import check_visible, score_hidden
from egcfg.execution.sandbox import Limits, Sandbox
from egcfg.results import Stats

EVALPLUS = ROOT.parent / "shared" / "data" / "evalplus"
needs_data = pytest.mark.skipif(not EVALPLUS.is_dir(), reason=f"EvalPlus release files not found at {EVALPLUS}")


def _rows(name: str) -> dict:
    with gzip.open(EVALPLUS / name, "rt") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


@pytest.fixture(scope="module")
def he():
    return {t.task_id: t for t in load_benchmark("humaneval-plus", EVALPLUS)}


@pytest.fixture(scope="module")
def mbpp():
    return {t.task_id: t for t in load_benchmark("mbpp-plus", EVALPLUS)}


@pytest.fixture(scope="module")
def scorer():
    with Sandbox(Limits(), warm=0) as sb:
        yield sb


def test_allclose_is_numpys_for_what_evalplus_compares():
    """unsafe_execute calls np.allclose only on values of the same type (and length, for lists and
    tuples); on those the sandbox's pure-Python version gives numpy's answer, raising included."""
    rng = random.Random(7)
    numbers = [1.0, 1.0000001, 1.00001, 0.0, -0.0, 1e-7, 3, 2 ** 53 + 1, True, False, float("inf"),
               float("-inf"), float("nan"), 1 + 2j, 1e300, -5, 2 ** 70, 1.5]

    def value(depth=0):
        r = rng.random()
        if depth < 2 and r < 0.4:
            seq = [value(depth + 1) for _ in range(rng.randint(0, 3))]
            return tuple(seq) if rng.random() < 0.3 else seq
        return rng.choice(["a", None]) if r < 0.5 else rng.choice(numbers)

    def outcome(f, a, b, atol):
        try:
            return bool(f(a, b, rtol=1e-07, atol=atol))
        except Exception:
            return "raises"

    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(12000):
            a, b = value(), value()
            if isinstance(a, list) and rng.random() < 0.5:  # near misses of a float list
                b = [x * (1 + rng.choice([0, 1e-8, 1e-6, 1e-3])) if isinstance(x, float) else x for x in a]
            if type(a) != type(b) or (isinstance(a, (list, tuple)) and len(a) != len(b)):
                continue
            atol = rng.choice([1e-6, 1e-4])
            compared += 1
            assert outcome(_egcfg_allclose, a, b, atol) == outcome(np.allclose, a, b, atol), (a, b, atol)
    assert compared > 2000


@needs_data
def test_loaders_read_the_release_files(he, mbpp):
    assert len(he) == 164 and len(mbpp) == 378
    t = he["HumanEval/0"]
    assert t.tests == load_benchmark("humaneval")[0].tests and t.answer_start.startswith("from typing import List")
    assert t.metadata["plus_inputs"] == 999 and t.hidden_timeout > 60 and t.hidden_memory_mb >= 1024
    m = mbpp["Mbpp/2"]
    assert m.prompt == "Write a function to find the shared elements from the given two lists."
    assert m.tests[0] == "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)" and len(m.tests) == 3
    # Mbpp/120's asserts use math.isclose without importing math; Mbpp/82 imports it itself.
    assert mbpp["Mbpp/120"].test_setup == "import math" and mbpp["Mbpp/82"].test_setup == "import math"
    assert mbpp["Mbpp/793"].metadata["plus_inputs"] == 0  # its plus_input is {} in v0.2.0


@needs_data
def test_canonical_solutions_pass_and_wrong_ones_fail(he, mbpp, scorer):
    hrows, mrows = _rows("HumanEvalPlus-v0.1.10.jsonl.gz"), _rows("MbppPlus-v0.2.0.jsonl.gz")
    canon = {**{k: r["prompt"] + r["canonical_solution"] for k, r in hrows.items()},
             **{k: r["canonical_solution"] for k, r in mrows.items()}}
    tasks = {**he, **mbpp}
    # find_zero's oracle (|poly(xs, x)| <= atol; evalplus 0.3.1 fails it for every program), set
    # equality (Mbpp/2), the not-None rule (Mbpp/...: check_str), a special oracle (Mbpp/581).
    ids = ["HumanEval/0", "HumanEval/32", "Mbpp/2", "Mbpp/581"]
    for task_id in ids:
        verdict = score_hidden(canon[task_id], tasks[task_id], scorer)
        assert verdict["passed"], (task_id, verdict)
    wrong = {
        "HumanEval/0": "def has_close_elements(numbers, threshold):\n    return False\n",
        "Mbpp/2": "def similar_elements(a, b):\n    return tuple(set(a) | set(b))\n",
        "HumanEval/32": "import math\ndef poly(xs, x):\n    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n"
                        "def find_zero(xs):\n    return 0.5\n",
    }
    for task_id, code in wrong.items():
        verdict = score_hidden(code, tasks[task_id], scorer)
        assert not verdict["passed"] and "expected" in verdict["detail"], (task_id, verdict)
    # Set equality: another order of the same elements passes (the tuple asserts shown would not).
    assert score_hidden("def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n",
                        tasks["Mbpp/2"], scorer)["passed"]
    # No function of that name at all.
    assert "defines no function" in score_hidden("x = 1\n", tasks["Mbpp/2"], scorer)["detail"]
    # The visible tests are the base asserts, which the canonical solutions pass (Mbpp/120 with its import).
    for task_id in ["Mbpp/2", "Mbpp/120", "Mbpp/82", "HumanEval/0"]:
        assert all(r["passed"] for r in check_visible(canon[task_id], tasks[task_id], scorer, Stats())), task_id


@needs_data
def test_float_tolerance(he, scorer):
    # HumanEval/2 returns floats with atol 0: EvalPlus enforces 1e-6 (absolute) + 1e-7 (relative).
    task = he["HumanEval/2"]
    ok = score_hidden("def truncate_number(number):\n    return number % 1.0 + 1e-9\n", task, scorer)
    assert ok["passed"], ok
    off = score_hidden("def truncate_number(number):\n    return number % 1.0 + 1e-5\n", task, scorer)
    assert not off["passed"] and "expected" in off["detail"]
    # The tolerance applies only to the same type: an int for a float fails where == fails.
    assert not score_hidden("def truncate_number(number):\n    return int(number % 1.0 + 1e-9)\n", task, scorer)["passed"]


@needs_data
def test_time_limits(he, scorer):
    """Each call gets max(1 s, 4 x the reference's time on that input): a call of 1.3 s fails,
    one of 0.5 s passes (HumanEval/0's reference takes microseconds)."""
    body = ("import time\n_calls = []\ndef has_close_elements(numbers, threshold):\n"
            "    if not _calls:\n        _calls.append(1)\n        time.sleep({})\n"
            "    s = sorted(numbers)\n    return any(b - a < threshold for a, b in zip(s, s[1:]))\n")
    slow = score_hidden(body.format(1.3), he["HumanEval/0"], scorer)
    assert not slow["passed"] and "over its time limit of 1.00 s" in slow["detail"], slow
    assert score_hidden(body.format(0.5), he["HumanEval/0"], scorer)["passed"]


@needs_data
def test_one_line_errors(tmp_path, egcfg_cli):
    with pytest.raises(EgcfgError, match="no such file"):
        load_benchmark("humaneval-plus", tmp_path / "absent.jsonl.gz")
    with pytest.raises(EgcfgError, match="none of"):
        load_benchmark("mbpp-plus", tmp_path)
    with pytest.raises(EgcfgError, match="main format"):
        load_benchmark("humaneval-plus", EVALPLUS / "HumanEvalPlus-OriginFmt-v0.1.10.jsonl.gz")
    with pytest.raises(EgcfgError, match="not HumanEval"):
        load_benchmark("humaneval-plus", EVALPLUS / "MbppPlus-v0.2.0.jsonl.gz")
    (tmp_path / "MbppPlus.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(EgcfgError, match="cannot be read"):
        load_benchmark("mbpp-plus", tmp_path)
    with pytest.raises(EgcfgError, match="give --data"):
        load_benchmark("mbpp-plus")
    r = egcfg_cli("bench", "humaneval-plus", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no such file" in r.stderr, r.stderr
