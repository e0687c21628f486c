"""Benchmark runs: hidden tests are never executed during generation, a killed run resumes with
nothing lost or duplicated, reports and the HTML page (checked in headless Chromium), agents."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from egcfg import Config, task_from_dict
from egcfg.agents import STYLES, TEMPERATURES, HORIZONS, FirstPass, load_grid, paper_grid
from egcfg.errors import EgcfgError

FIXTURE = Path(__file__).parent / "data" / "mbpp_tiny.jsonl"
MARKER = "HIDDEN_TEST_MARKER_7f3a"


class RecordingSandbox:
    """Wraps a sandbox and remembers the text of everything it was asked to run."""

    def __init__(self, inner):
        self.inner = inner
        self.seen = []
        self.limits = inner.limits

    def run(self, program, invocation=None, stdin="", trace=True, timeout=None, prelude=""):
        self.seen.append("\n".join([prelude, program, invocation or "", stdin]))
        return self.inner.run(program, invocation, stdin, trace, timeout, prelude)

    def run_job(self, job):
        return self.run(job.program, job.invocation, job.stdin, job.trace, job.timeout, job.prelude)

    def run_many(self, jobs):
        return [self.run_job(job) for job in jobs]


def test_agent_grid():
    grid = paper_grid()
    assert len(grid) == len(TEMPERATURES) * len(HORIZONS) * len(STYLES) == 48
    assert len({a.name for a in grid}) == 48
    assert {a.config.gammas for a in grid} == {(0.0, 0.5, 1.0, 3.0)} and {a.config.candidates for a in grid} == {3}
    first = grid[:4]
    assert len({a.config.temperature for a in first}) > 1 and len({a.config.prompt_style for a in first}) == 2
    assert len({a.config.horizon for a in first}) > 1


def test_grid_file(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps([{"name": "a", "temperature": 0.9, "gammas": [0, 1]}, {"horizon": 2}]))
    agents = load_grid(path)
    assert agents[0].name == "a" and agents[0].config.gammas == (0.0, 1.0) and agents[1].config.horizon == 2
    path.write_text(json.dumps([{"temprature": 1}]))
    with pytest.raises(EgcfgError, match="unknown field"):
        load_grid(path)


@pytest.mark.model
def test_generation_never_executes_hidden_tests(model, sandbox, tmp_path):
    from egcfg.agents import Agent
    from egcfg.bench.runner import _Worker, finalize
    from egcfg.bench.store import Store

    task = task_from_dict({
        "task_id": "secret", "prompt": "Return the absolute value of x.", "entry_point": "absolute",
        "tests": ["assert absolute(-3) == 3", "assert absolute(2) == 2"],
        "hidden_tests": [f"assert absolute(-7) == 7  # {MARKER}", f"assert absolute(0) == 0  # {MARKER}"],
    })
    worker = _Worker.__new__(_Worker)
    worker.model = model
    worker.sandbox = RecordingSandbox(sandbox)
    agent = Agent("a", Config(gammas=(1.0, 3.0), candidates=2, horizon=1, max_tokens=96))
    store = Store(tmp_path / "run")
    worker.run_unit(store, task, agent, [agent], "honest", FirstPass())
    assert worker.sandbox.seen, "generation ran nothing"
    assert not any(MARKER in text for text in worker.sandbox.seen)
    # Scoring, after generation, is where the hidden tests run.
    scorer = RecordingSandbox(sandbox)
    finalize(store, task, 0, [agent], "honest", scorer)
    assert any(MARKER in text for text in scorer.seen)
    store.close()


def _bench(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "egcfg", "bench", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _rows(db, query):
    con = sqlite3.connect(db)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


@pytest.mark.model
def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, model_path):
    out = tmp_path / "run"
    db = out / "results.sqlite"
    args = ["mbpp", "--data", str(FIXTURE), "--method", "baseline", "--out", str(out), "--no-progress", "--max-tokens", "96"]
    proc = _bench(args, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if db.exists() and _rows(db, "SELECT count(*) FROM sqlite_master WHERE name='tasks'")[0][0] \
                and _rows(db, "SELECT count(*) FROM tasks")[0][0] >= 1:
            break
        if proc.poll() is not None:
            pytest.fail(f"bench ended before it could be killed: {proc.stderr.read()[-500:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no cleanup of any kind
    proc.wait()
    before = _rows(db, "SELECT task_id, created FROM tasks")
    attempts_before = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert 1 <= len(before) < 4
    # Starting again without --resume is refused: results are never overwritten.
    again = _bench(args)
    assert again.wait() == 2 and "--resume" in again.stderr.read()
    resumed = _bench(args + ["--resume"])
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-800:]
    after = _rows(db, "SELECT task_id, created FROM tasks")
    assert sorted(t for t, _ in after) == ["Mbpp/11", "Mbpp/12", "Mbpp/13", "Mbpp/14"]
    assert set(before) <= set(after)  # finished tasks kept as they were
    attempts_after = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert set(attempts_before) <= set(attempts_after)
    assert len(attempts_after) == len({(t, a, g) for t, a, g, _ in attempts_after}) == 4
    assert "pass@1 (hidden tests, honest)" in stdout

    # The report of the finished run, as text, JSON and a self-contained HTML page.
    rep = subprocess.run([sys.executable, "-m", "egcfg", "report", str(out), "--json", "--html", str(tmp_path / "r.html")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    summary = json.loads(rep.stdout)
    solved = _rows(db, "SELECT sum(passed_hidden) FROM tasks")[0][0]
    assert summary["tasks"] == 4 and summary["pass_at_1"] == pytest.approx(25.0 * solved)
    assert summary["protocol"] == "honest" and summary["method"] == "baseline"
    assert summary["baseline_pass_at_1"] == summary["pass_at_1"]  # the baseline run is its own baseline
    check_html_in_chromium(tmp_path / "r.html", ["Mbpp/11", "Mbpp/14", "pass@1 (hidden tests)"])


def check_html_in_chromium(page: Path, must_contain: list[str]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed for this test (scripts/setup.sh installs it)"
    profile = page.parent / "chromium-profile"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={profile}"]
    dom = subprocess.run(common + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    for text in must_contain:
        assert text in dom.stdout, text
    assert dom.stdout.count("<img") == 2 and "data:image/png;base64," in dom.stdout
    shot = page.parent / "page.png"
    subprocess.run(common + [f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000  # something was rendered


@pytest.mark.model
def test_parallel_agent_workers(tmp_path, model_path):
    """Two worker processes, two agents per task: attempts stored by the workers, one final per task."""
    out = tmp_path / "par"
    args = ["mbpp", "--data", str(FIXTURE), "--tasks", "Mbpp/12,Mbpp/13", "--agents", "2", "--workers", "2",
            "--gamma", "0,1", "--max-tokens", "64", "--out", str(out), "--no-progress"]
    proc = _bench(args)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-800:]
    db = out / "results.sqlite"
    assert sorted(r[0] for r in _rows(db, "SELECT task_id FROM tasks")) == ["Mbpp/12", "Mbpp/13"]
    agents = {r[0] for r in _rows(db, "SELECT agent FROM attempts")}
    assert agents <= {a.name for a in paper_grid(2)} and agents
    # gamma 0 is computed once per prompt style and task; nothing is stored twice
    keys = _rows(db, "SELECT task_id, agent, gamma FROM attempts")
    assert len(keys) == len(set(keys))


@pytest.mark.model
def test_paper_protocol_is_recorded_and_scores_every_attempt(tmp_path, model_path):
    out = tmp_path / "paper"
    proc = _bench(["mbpp", "--data", str(FIXTURE), "--tasks", "Mbpp/11", "--method", "baseline", "--protocol", "paper",
                   "--max-tokens", "64", "--out", str(out), "--no-progress"])
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-800:]
    assert "protocol paper" in stdout
    db = out / "results.sqlite"
    # under `paper`, attempts are judged on hidden tests while generating: the score is stored with them
    assert _rows(db, "SELECT count(*) FROM attempts WHERE passed_hidden IS NULL")[0][0] == 0


@pytest.mark.model
def test_a_failing_attempt_is_recorded_and_the_run_goes_on(model_path, sandbox, tmp_path):
    """A backend error (here: a context too small for the prompt) becomes a stored attempt."""
    from egcfg.agents import Agent
    from egcfg.bench.runner import _Worker, finalize
    from egcfg.bench.store import Store
    from egcfg.lm.llamacpp import LlamaCppModel

    small = LlamaCppModel(model_path, n_ctx=128)
    worker = _Worker.__new__(_Worker)
    worker.model, worker.sandbox = small, sandbox
    task = task_from_dict({"task_id": "t", "prompt": "Return 1.", "entry_point": "one", "tests": ["assert one() == 1"]})
    agent = Agent("a", Config(gammas=(0.0, 1.0), max_tokens=32))
    store = Store(tmp_path / "run")
    worker.run_unit(store, task, agent, [agent], "honest", FirstPass())
    rows = store.attempts("t")
    assert [r["gamma"] for r in rows] == [0.0, 1.0]
    assert all(r["stop_reason"].startswith("error:") and r["tests_total"] == 1 for r in rows)
    finalize(store, task, 0, [agent], "honest", sandbox)
    assert store.tasks()[0]["passed_hidden"] == 0
    store.close()
    small.close()


@pytest.mark.model
def test_concurrent_tasks_share_one_hf_model(tmp_path, model_path):
    """--concurrency: tasks in threads over one transformers model; same programs as one at a time."""
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    rows = {}
    for name, extra in (("seq", []), ("conc", ["--concurrency", "3"]),
                        ("procs", ["--concurrency", "2", "--workers", "2"]),
                        ("procs-no-server", ["--concurrency", "2", "--workers", "2"])):
        out = tmp_path / name
        # procs: two model servers, one per worker (server=2); one server for two workers is run by
        # the test below
        spec = "hf:embedded?n_ctx=2048" + {"procs": "&server=2", "procs-no-server": "&server=off"}.get(name, "")
        proc = _bench(["mbpp", "--data", str(FIXTURE), "--tasks", "Mbpp/11,Mbpp/12,Mbpp/13", "--method", "baseline",
                       "--max-tokens", "48", "--model", spec, "--out", str(out), "--no-progress", *extra])
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-800:]
        assert "(transformers)" in stdout
        rows[name] = sorted(_rows(out / "results.sqlite", "SELECT task_id, code, passed_hidden FROM tasks"))
    assert len(rows["conc"]) == 3
    assert rows["conc"] == rows["seq"]  # float32 on CPU: batching rows together changes nothing
    assert rows["procs"] == rows["seq"]  # two processes of two task threads: each task stored once
    assert rows["procs-no-server"] == rows["seq"]
    # Each worker had its model server (hf_server.py, server=2): two profiles, each of a server that
    # ran forwards; with server=off each worker had its own model in its own process.
    served = [json.loads(p.read_text()) for p in (tmp_path / "procs").glob("profile-*.json")]
    assert len(served) == 2 and all(p["model"]["server"] is True and p["forwards"] > 0 for p in served)
    assert len(list((tmp_path / "procs-no-server").glob("profile-*.json"))) == 2


@pytest.mark.model
def test_a_model_server_left_without_tasks_ends_quietly_and_resume_may_change_server(tmp_path, model_path):
    """One task, two workers of two task threads with a model server each: the worker without the
    task finds only end marks, closes, and its server ends by itself (exit code 0) while the other
    still runs; that is not a failure (a full GPU run stopped so at its last two tasks: the test
    fails without the exit-code check). --resume may change server=N (how
    the forwards are placed), not an option that changes results (n_ctx)."""
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    out = tmp_path / "one"
    args = ["mbpp", "--data", str(FIXTURE), "--tasks", "Mbpp/11", "--gamma", "1", "--max-tokens", "96",
            "--workers", "2", "--concurrency", "2", "--out", str(out), "--no-progress"]
    proc = _bench(args + ["--model", "hf:embedded?n_ctx=2048&server=2"])
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-800:]
    assert len(_rows(out / "results.sqlite", "SELECT task_id FROM tasks")) == 1
    proc = _bench(args + ["--resume", "--model", "hf:embedded?server=1&n_ctx=2048"])
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-800:]
    proc = _bench(args + ["--resume", "--model", "hf:embedded?n_ctx=1024&server=2"])
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 2 and "model_spec" in stderr and "Traceback" not in stderr, stderr[-800:]


@pytest.mark.model
def test_candidates_and_lines_stepped_in_the_model_server_equal_the_session_driven_loop(tmp_path, model_path):
    """EG-CFG through the model server (--workers 2): the server's batcher steps each refresh's
    candidates and each decoded line itself, with the attempt's generator pickled there and its
    state handed back. The attempts equal those of one process whose sessions drive candidates and
    lines token by token (candidates=session, lines=session)."""
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    found = {}
    for name, spec, extra in (("server", "hf:embedded?n_ctx=2048", ["--workers", "2"]),
                              ("session", "hf:embedded?n_ctx=2048&candidates=session&lines=session", [])):
        out = tmp_path / name
        proc = _bench(["mbpp", "--data", str(FIXTURE), "--tasks", "Mbpp/12,Mbpp/14", "--gamma", "1", "--max-tokens", "40",
                       "--no-accept-candidates",
                       "--model", spec, "--out", str(out), "--no-progress", *extra])
        _, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-800:]
        rows = _rows(out / "results.sqlite", "SELECT task_id, code, stats FROM attempts ORDER BY task_id")
        found[name] = [(t, code, json.loads(st)["candidate_tokens"], json.loads(st)["refreshes"]) for t, code, st in rows]
    assert found["server"] == found["session"]
    # candidates were sampled, at several lines (the generator's hand-back is checked in test_hf)
    assert all(tokens > 0 for _, _, tokens, _ in found["server"]) and max(n for *_, n in found["server"]) > 1


def test_concurrency_flag_is_checked(egcfg_cli, tmp_path):
    res = egcfg_cli("bench", "mbpp", "--data", str(FIXTURE), "--concurrency", "0", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "at least 1" in res.stderr and "Traceback" not in res.stderr


def test_bad_bench_settings_exit_2_with_one_line(egcfg_cli, tmp_path):
    grid = tmp_path / "grid.json"
    cases = [("--limit must be at least 1", None, ["--limit", "0"]),
             ("candidates (--candidates) must be an int", '[{"candidates": 2.5}]', ["--agents-file", str(grid)]),
             ("gammas must be a list of numbers", '[{"gammas": "0,1"}]', ["--agents-file", str(grid)]),
             ("must be a finite number", '[{"temperature": 1e999}]', ["--agents-file", str(grid)])]
    for words, content, extra in cases:
        if content:
            grid.write_text(content)
        res = egcfg_cli("bench", "mbpp", "--data", str(FIXTURE), *extra, "--out", str(tmp_path / "x"))
        assert res.returncode == 2, res.stderr
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_model_that_fails_in_the_workers_stops_the_run_and_leaves_the_folder_reusable(egcfg_cli, tmp_path):
    """A file that passes the spec check (GGUF magic) but not llama.cpp: each worker process fails
    to load it. The run must end with that one-line error (a multiprocessing Pool would respawn
    workers forever), and its folder, holding no attempt, may be used by the next run."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(4096))
    out = tmp_path / "run"
    args = ("bench", "mbpp", "--data", str(FIXTURE), "--limit", "1", "--agents", "2", "--workers", "2",
            "--model", str(bad), "--out", str(out), "--no-progress")
    for _ in range(2):  # the second time: not "already holds a run"
        res = egcfg_cli(*args, timeout=300)
        assert res.returncode == 2, res.stderr[-800:]
        assert "worker process could not start" in res.stderr and "Traceback" not in res.stderr, res.stderr[-800:]
    missing = egcfg_cli("bench", "mbpp", "--data", str(FIXTURE), "--limit", "1", "--model", str(tmp_path / "none.gguf"),
                        "--out", str(tmp_path / "never"))
    assert missing.returncode == 2 and "neither an embedded model" in missing.stderr
    assert not (tmp_path / "never").exists()  # checked before the run folder is made


@pytest.mark.model
def test_the_sampling_method_runs_the_agents_schedule_with_sampled_attempts(tmp_path):
    """bench --method sampling: the same agents and schedule slots as EG-CFG (gamma 0 greedy and
    shared by the agents of a prompt style, every other slot one sampled program), the first to
    pass the visible tests wins; the run says it is the sampling control, and resumes. A run folder
    begun before a setting existed resumes with the value it ran with (its default then)."""
    out = tmp_path / "s"
    args = ["mbpp", "--data", str(FIXTURE), "--tasks", "Mbpp/12", "--method", "sampling", "--agents", "2",
            "--gamma", "0,1", "--max-tokens", "4", "--out", str(out), "--no-progress"]  # (too short to pass)
    proc = _bench(args)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-800:]
    meta = dict(_rows(out / "results.sqlite", "SELECT key, value FROM meta"))
    assert json.loads(meta["method"]) == "sampling"
    assert all(a["sampling_control"] for a in json.loads(meta["agents"]))
    attempts = _rows(out / "results.sqlite", "SELECT agent, gamma, stats FROM attempts ORDER BY agent, gamma")
    assert sorted({g for _, g, _ in attempts}) == [0.0, 1.0] and len({a for a, g, _ in attempts if g == 1.0}) == 2
    for agent, gamma, stats in attempts:
        assert json.loads(stats)["refreshes"] == 0  # no guidance anywhere
    # an older run's meta without the newer settings: --resume fills their defaults
    db = sqlite3.connect(out / "results.sqlite")
    agents = json.loads(meta["agents"])
    for a in agents:
        a.pop("prompt_format")
        a.pop("accept_candidates")  # (a default that changed since: such a run ran without it)
    db.execute("UPDATE meta SET value = ? WHERE key = 'agents'", (json.dumps(agents),))
    db.commit()
    db.close()
    proc = _bench(args + ["--resume"])  # today's defaults would mix two methods (two prompts) in one run: refused
    _, stderr = proc.communicate(timeout=600)
    last = stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--no-accept-candidates" in last and "--prompt-format one-shot" in last, stderr[-800:]
    proc = _bench(args + ["--resume", "--no-accept-candidates", "--prompt-format", "one-shot"])
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-800:]
