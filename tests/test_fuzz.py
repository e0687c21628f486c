"""Fuzzing: a few hundred random and malformed programs, inputs and task files through the sandbox
(as `egcfg trace` runs them), `egcfg trace` itself, the task loader, `egcfg solve` and the solver.
Nothing may come out but clean outcomes and one-line errors. Seeded: a failure names its case."""

import json
import random
import subprocess
import sys

import pytest

from conftest import ROOT
from egcfg import Config, EgcfgError, load_tasks, solve
from egcfg.execution.render import render_run
from egcfg.execution.sandbox import Job
from fakes import ScriptedModel

OUTCOMES = {"returned", "completed", "raised", "exited", "timeout", "crashed"}
FRAGMENTS = [
    "def f(x):\n    return x\n", "def f(*a, **k):\n    yield from a\n", "x = 1\n", "print('hi')\n",
    "import sys\nprint(sys.stdin.read()[:20])\n", "raise ValueError('bad')\n", "while False:\n    pass\n",
    "class A:\n    def __repr__(self):\n        return 'A' * 10 ** 5\n", "lambda: (yield)\n", "def g(\n",
    "    indented = 1\n", "\tmixed\n  tabs\n", "\x00\x01\x02", "é✓𝄞" * 50, "\ud800", "'''unterminated\n",
    "import os\nos.write(1, bytes(range(256)))\n", "print('\\x1b[31m\\x07', end='')\n", "1/0\n",
    "exec('x = ' * 200 + '1')\n", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
    "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe' * 1000)\n", "def f(x):\n    return f(x)\n",
    "x = '" + "a" * 20000 + "'\n", "if True:\nprint(1)\n", "async def h():\n    await h()\n",
    "import sys\nsys.stdout = None\n", "del __builtins__\n", "globals().clear()\n", "exit(3)\n",
]
CALLS = [None, "f(1)", "f()", "f(", "g(2)", "f(*range(10**6))", "1 +", "__import__('os').getpid()",
         "f('\\x1b]0;t\\x07')", "f(" + "[" * 300 + "]" * 300 + ")", "\x00", "é()"]


def random_program(rng: random.Random) -> str:
    parts = rng.choices(FRAGMENTS, k=rng.randint(0, 5))
    if rng.random() < 0.2:  # raw noise
        parts.append("".join(chr(rng.choice([rng.randint(0, 0x7f), rng.randint(0x80, 0x2fff)]))
                             for _ in range(rng.randint(1, 200))))
    return "".join(parts)


def random_stdin(rng: random.Random) -> str:
    return rng.choice(["", "1 2 3\n", "\x00\x1b[2J", "é\n" * 1000, "".join(
        chr(rng.randint(0, 0x24f)) for _ in range(rng.randint(0, 500)))])


def test_random_programs_and_inputs_give_clean_outcomes(sandbox):
    rng = random.Random(20261201)
    jobs = [Job(random_program(rng), invocation=rng.choice(CALLS), stdin=random_stdin(rng)) for _ in range(240)]
    for start in range(0, len(jobs), 40):
        batch = jobs[start:start + 40]
        for i, (job, result) in enumerate(zip(batch, sandbox.run_many(batch))):
            case = f"case {start + i}: {job!r:.300}"
            assert result.status in OUTCOMES, case
            assert isinstance(result.stdout, str) and isinstance(result.events, list), case
            label = f"Invocation: {job.invocation}" if job.invocation else "Program run"
            assert isinstance(render_run(job.program, result, label), str), case


def _one_line_error(res) -> bool:
    """The run ended in one error line (after, at most, one line per malformed task it skipped)."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    return (bool(lines) and lines[-1].startswith("egcfg: error: ") and "Traceback" not in res.stderr
            and all(line.startswith(("egcfg: error: ", "egcfg: skipping ")) for line in lines))


def test_random_programs_through_egcfg_trace(tmp_path):
    rng = random.Random(7)
    for i in range(24):
        path = tmp_path / f"p{i}.py"
        raw = random_program(rng).encode("utf-8", "surrogatepass")
        if i % 6 == 0:  # not text at all
            raw = bytes(rng.randint(0, 255) for _ in range(300))
        path.write_bytes(raw)
        args = [sys.executable, "-m", "egcfg", "trace", str(path), "--timeout", "1"]
        call = rng.choice(CALLS)
        if call and "\x00" not in call:
            args += ["--call", call]
        if i % 2:
            args.append("--json")
        res = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=60, cwd=ROOT,
                             input=random_stdin(rng))
        case = f"case {i}: {raw[:200]!r} call {call!r}"
        assert res.returncode in (0, 1, 2), case
        assert "Traceback" not in res.stderr, case + res.stderr[-500:]
        if res.returncode == 2:
            assert _one_line_error(res), case + res.stderr[-500:]
        elif "--json" in args:
            assert json.loads(res.stdout)["status"] in OUTCOMES, case
        assert "\x1b" not in res.stdout, case


VALID = {"task_id": "t", "prompt": "Return x.", "entry_point": "f", "tests": ["assert f(1) == 1"]}


def mutate(rng: random.Random) -> object:
    task = dict(VALID)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(["task_id", "prompt", "entry_point", "tests", "hidden_tests", "io_tests",
                          "hidden_io_tests", "test_setup", "unknown_field"])
        task[key] = rng.choice([None, 0, -1.5, float("nan"), True, "", " ", "x" * 10000, "\x00\x1b]0;t\x07",
                                [], [None], ["assert"], ["assert f(1) =="], ["def x(:"], [{"input": 1}],
                                [{"input": "1", "output": "1"}], [{"input": "1"}], {"a": 1}, "f g", "é✓",
                                ["assert f(1) == 1", 3]])
        if rng.random() < 0.2:
            task.pop(key, None)
    shape = rng.random()
    if shape < 0.15:
        return [task, dict(VALID, task_id="ok")]
    if shape < 0.2:
        return [task] * 2  # duplicate ids
    return task


def random_task_file(rng: random.Random, path) -> None:
    kind = rng.random()
    if kind < 0.1:
        path.write_bytes(bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 400))))
    elif kind < 0.2:
        path.write_text(json.dumps(mutate(rng))[: rng.randint(0, 60)])  # truncated JSON
    elif kind < 0.25:
        path.write_text(rng.choice(["", "null", "42", '"s"', "[]", "[[]]", "{}", "[1, 2]", "NaN", "[" * 5000]))
    else:
        path.write_text(json.dumps(mutate(rng), allow_nan=True))


def test_random_task_files_load_or_fail_in_one_line(tmp_path):
    rng = random.Random(11)
    loaded = 0
    for i in range(300):
        path = tmp_path / f"t{i}.json"
        random_task_file(rng, path)
        skipped = []
        try:
            tasks = load_tasks(path, on_invalid=skipped.append)
        except EgcfgError as exc:
            assert "\n" not in str(exc) and str(exc), f"case {i}: {path.read_bytes()[:200]!r}"
            continue
        assert all("\n" not in message for message in skipped), f"case {i}"
        for task in tasks:
            task.validate()
        loaded += bool(tasks)
    assert loaded > 20  # the mutations also produce usable tasks, which the solver test below takes


def test_random_tasks_through_solve_with_a_scripted_model(sandbox, tmp_path):
    """Tasks that load, with programs that break in every way, through the whole solver: a result or
    a one-line error, never anything else."""
    rng = random.Random(5)
    solved = 0
    for i in range(80):
        path = tmp_path / f"t{i}.json"
        random_task_file(rng, path)
        try:
            tasks = load_tasks(path, on_invalid=lambda message: None)
        except EgcfgError:
            continue
        for task in tasks[:1]:
            program = random_program(rng)
            script = [ch for ch in ("def f(x):\n" + program)[:300]] + ["```"]
            config = Config(gammas=(0.0, 1.0), candidates=2, horizon=1, max_tokens=120, run_timeout=1.0)
            try:
                result = solve(task, model=ScriptedModel(script), config=config, sandbox=sandbox)
            except EgcfgError as exc:
                assert "\n" not in str(exc), f"case {i}"
                continue
            assert isinstance(result.passed, bool) and isinstance(result.code, str), f"case {i}"
            solved += 1
    assert solved >= 10


@pytest.mark.parametrize("seed", range(12))
def test_malformed_task_files_through_egcfg_solve(tmp_path, seed):
    """Files the loader refuses as a whole: `egcfg solve` exits 2 with one line, before any model loads."""
    rng = random.Random(1000 + seed)
    path = tmp_path / "tasks.json"
    for _ in range(200):  # find a file this seed's generator makes that does not load at all
        random_task_file(rng, path)
        try:
            load_tasks(path, on_invalid=lambda message: None)
        except EgcfgError:
            break
    else:
        pytest.fail("no malformed file generated")
    res = subprocess.run([sys.executable, "-m", "egcfg", "solve", str(path)], capture_output=True, text=True,
                         errors="replace", timeout=120, cwd=ROOT)
    assert res.returncode == 2 and _one_line_error(res), res.stderr[-500:]
