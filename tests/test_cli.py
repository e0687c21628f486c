"""The command line, through the real entry point in a subprocess."""

import json

import pytest

from conftest import ROOT


def test_trace_prints_the_trace(tmp_path, egcfg_cli):
    prog = tmp_path / "p.py"
    prog.write_text("def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n")
    out = egcfg_cli("trace", str(prog), "--call", "f(3)")
    assert out.returncode == 0, out.stderr
    assert "call f(n=3)" in out.stdout and "Result: returned 3" in out.stdout


def test_trace_failure_hang_and_crash_are_outcomes(tmp_path, egcfg_cli):
    cases = {
        "raise ValueError('boom')\n": "raised ValueError: boom",
        "while True:\n    pass\n": "timed out",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n": "crashed",
    }
    for source, words in cases.items():
        prog = tmp_path / "bad.py"
        prog.write_text(source)
        out = egcfg_cli("trace", str(prog), "--timeout", "0.5")
        assert out.returncode == 1, (source, out.stderr)
        assert words in out.stdout
        assert "Traceback" not in out.stderr


def test_trace_json_and_stdin(tmp_path, egcfg_cli):
    prog = tmp_path / "echo.py"
    prog.write_text("name = input()\nprint('hi', name)\n")
    out = egcfg_cli("trace", str(prog), "--stdin", "bob\n", "--json")
    data = json.loads(out.stdout)
    assert data["status"] == "completed" and data["stdout"].strip() == "hi bob"
    assert data["isolation"] in ("bubblewrap", "rlimits")


def test_usage_errors_exit_2_with_one_line(tmp_path, egcfg_cli):
    bad = tmp_path / "bad.json"
    bad.write_text('{"task_id": "x", "prompt": "p", "entry_point": "f", "tests": ["assert f( =="]}')
    for args in (["solve", str(bad)], ["solve"], ["solve", "--prompt", "p"], ["trace", str(tmp_path / "none.py")],
                 ["solve", "--gamma", "abc", "--prompt", "p"], ["solve", str(tmp_path / "missing.json")],
                 ["solve", "--gamma", "nan", "--prompt", "p", "--entry-point", "f", "--test", "assert f()"],
                 ["solve", "--timeout", "inf", "--prompt", "p", "--entry-point", "f", "--test", "assert f()"],
                 ["trace", str(bad), "--timeout", "nan"], ["trace", str(bad), "--timeout", "1e12"],
                 ["model", "path", "--name", "nope"]):
        out = egcfg_cli(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_doctor_json(egcfg_cli, model_path):
    out = egcfg_cli("doctor", "--json")
    data = json.loads(out.stdout)
    assert data["model_path"] == str(model_path)
    assert data["model_sha256_ok"] is True
    assert data["sandbox_isolation"] in ("bubblewrap", "rlimits")
    assert data["llama_cpp_python"]
    assert out.returncode == 0


@pytest.mark.model
def test_solve_json_one_off(egcfg_cli, model_path):
    out = egcfg_cli("solve", "--prompt", "Return the larger of two numbers.", "--entry-point", "bigger",
                    "--test", "assert bigger(1, 2) == 2", "--test", "assert bigger(5, 3) == 5",
                    "--gamma", "1", "--candidates", "2", "--horizon", "1", "--max-tokens", "120", "--json")
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout)
    for key in ("code", "passed", "stats"):
        assert key in data
    for key in ("executions", "refreshes", "tokens_decoded", "tokens_prefilled", "candidate_tokens",
                "seconds_sampling", "seconds_execution", "seconds_guided"):
        assert key in data["stats"]
    assert data["stats"]["refreshes"] > 0
    assert out.returncode == (0 if data["passed"] else 1)
    assert "def bigger(" in data["code"]


@pytest.mark.model
def test_a_malformed_task_in_a_list_is_reported_and_skipped(tmp_path, egcfg_cli, model_path):
    tasks = [
        {"task_id": "broken-tests", "prompt": "p", "entry_point": "f", "tests": ["assert f(1) =="]},
        {"task_id": "no-entry-point", "prompt": "p", "tests": ["assert f(1) == 1"]},
        {"task_id": "good", "prompt": "Return the larger of two numbers.", "entry_point": "bigger",
         "tests": ["assert bigger(1, 2) == 2"]},
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    out = egcfg_cli("solve", str(path), "--gamma", "0", "--max-tokens", "60", "--json")
    assert "skipping" in out.stderr and "broken-tests" not in out.stdout
    assert "'broken-tests'" in out.stderr and "not valid Python" in out.stderr
    assert "'no-entry-point': missing field 'entry_point'" in out.stderr
    data = json.loads(out.stdout)
    assert data["task_id"] == "good" and "def bigger(" in data["code"]
    assert out.returncode == 1  # skipped tasks are not solved


@pytest.mark.model
def test_a_task_that_fails_does_not_lose_the_others(tmp_path, egcfg_cli, model_path):
    """A task whose prompt outgrows the context fails alone (refused before any prefill); the next
    task is solved and both appear in the JSON output."""
    tasks = [
        {"task_id": "huge", "prompt": "Return the larger of two numbers. " + "word " * 9000, "entry_point": "bigger",
         "tests": ["assert bigger(1, 2) == 2"]},
        {"task_id": "good", "prompt": "Return the larger of two numbers.", "entry_point": "bigger",
         "tests": ["assert bigger(1, 2) == 2"]},
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    out = egcfg_cli("solve", str(path), "--gamma", "0", "--max-tokens", "60", "--json")
    assert "egcfg: error: task huge: a sequence would exceed the model context" in out.stderr
    data = json.loads(out.stdout)
    assert [d["task_id"] for d in data] == ["huge", "good"]
    assert data[0]["passed"] is False and "context" in data[0]["error"]
    assert "def bigger(" in data[1]["code"]
    assert out.returncode == 1


@pytest.mark.model
def test_solve_says_when_its_program_is_an_accepted_candidate(egcfg_cli, model_path):
    """The demo task: by default a sampled candidate that passes every visible test is the
    program, and solve says so (an extension of the method); --no-accept-candidates decodes on
    (the paper's method) and says nothing of it."""
    task = str(ROOT / "examples" / "opposite_signs.json")
    default = egcfg_cli("solve", task)
    paper = egcfg_cli("solve", task, "--no-accept-candidates")
    assert default.returncode == 0 and paper.returncode == 0, default.stderr[-500:] + paper.stderr[-500:]
    assert "a sampled candidate that passed every visible test" in default.stdout
    assert "sampled candidate" not in paper.stdout and "PASSED" in paper.stdout


def test_spec_identity_leaves_out_only_the_scheduling_options():
    """--resume compares model specs by what decides results: server=N and the batcher's sizes
    may change between calls, the order of options does not matter, the rest must match."""
    from egcfg.lm import spec_identity

    base = spec_identity("hf:/m/model.gguf?n_ctx=4096&server=3")
    assert spec_identity("hf:/m/model.gguf?server=1&n_ctx=4096") == base
    assert spec_identity("hf:/m/model.gguf?n_ctx=4096&max_rows=512&batch_wait=0.002") == base
    for other in ("hf:/m/model.gguf?n_ctx=2048&server=3", "hf:/m/model.gguf?n_ctx=4096&kernels=torch",
                  "hf:/m/other.gguf?n_ctx=4096", "llamacpp:/m/model.gguf"):
        assert spec_identity(other) != base, other
