"""Faults during long runs: a full disk, a read-only run folder, a corrupted results database and two
runs on one folder each end in one line that says what to do; a run killed with SIGKILL while
several worker processes and task threads are busy resumes with nothing lost or duplicated."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

FIXTURE = Path(__file__).parent / "data" / "mbpp_tiny.jsonl"
ALL_TASKS = ["Mbpp/11", "Mbpp/12", "Mbpp/13", "Mbpp/14"]
BASE = ["mbpp", "--data", str(FIXTURE), "--method", "baseline", "--no-progress", "--max-tokens", "96"]


def _bench(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "egcfg", "bench", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _run(args, timeout=600):
    proc = _bench(args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("egcfg: error: ") and "Traceback" not in err, err[-800:]
    return lines[0]


def _rows(db: Path, sql: str) -> list:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _live_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are not zombies (a zombie is dead, only not yet
    reaped by init)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def _wait_for_rows(proc, db: Path, table: str, n: int, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if db.exists() and _rows(db, f"SELECT count(*) FROM {table}")[0][0] >= n:
                return
        except sqlite3.Error:
            pass  # not created yet
        if proc.poll() is not None:
            pytest.fail(f"bench ended early: {proc.stderr.read()[-800:]}")
        time.sleep(0.2)
    pytest.fail(f"bench stored no row of {table} in time")


def _wait_for_tasks(proc, db: Path, n: int, timeout: float = 600) -> None:
    _wait_for_rows(proc, db, "tasks", n, timeout)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` at ``path`` (root only: mounting needs CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small file system")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no space left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)


def test_a_corrupted_results_database_is_one_line(tmp_path, egcfg_cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.sqlite").write_bytes(b"this is not SQLite\x00" * 300)
    for extra in ([], ["--resume"]):
        code, _, err = _run(BASE + ["--out", str(run), *extra])
        line = _one_error_line(err)
        assert code == 2 and "not a readable results database (corrupted?)" in line and "move it aside" in line
    res = egcfg_cli("report", str(run))
    assert res.returncode == 2 and "corrupted?" in _one_error_line(res.stderr)


def test_a_read_only_run_folder_is_one_line(tmp_path):
    from egcfg.bench.store import Store

    mount = tmp_path / "ro"
    with small_filesystem(mount, "4m"):
        run = mount / "run"
        store = Store(run)
        store.set_meta(benchmark="mbpp")
        store.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, _, err = _run(BASE + ["--out", str(run), "--resume"])
        assert code == 2 and "is not writable here" in _one_error_line(err)
        code, _, err = _run(BASE + ["--out", str(mount / "new")])
        assert code == 2 and "is not writable here" in _one_error_line(err)
        # Reading needs no writes: the report of a run on read-only media works.
        rep = subprocess.run([sys.executable, "-m", "egcfg", "report", str(run)], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
        assert rep.returncode == 0 and rep.stdout.startswith(f"run {run}: mbpp"), rep.stderr[-500:]


def test_a_full_disk_at_the_start_is_one_line(tmp_path):
    mount = tmp_path / "full"
    with small_filesystem(mount, "256k"):
        fill(mount / "filler")
        code, _, err = _run(BASE + ["--out", str(mount / "run")])
        line = _one_error_line(err)
        assert code == 2 and "is full" in line and "--resume" in line


def test_two_runs_cannot_write_one_folder(tmp_path):
    from egcfg.bench.store import Store

    run = tmp_path / "run"
    holder = Store(run, writer=True)  # another process's run, as far as the kernel's lock is concerned
    try:
        holder.set_meta(benchmark="mbpp")
        code, _, err = _run(BASE + ["--out", str(run), "--resume"])
        assert code == 2 and "is being written by another egcfg bench" in _one_error_line(err)
    finally:
        holder.close()


@pytest.mark.model
def test_two_real_runs_on_one_folder(tmp_path, model_path):
    run = tmp_path / "run"
    first = _bench(BASE + ["--out", str(run), "--tasks", "Mbpp/11,Mbpp/12"])
    try:
        deadline = time.time() + 120
        while not (run / "results.sqlite").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        code, _, err = _run(BASE + ["--out", str(run), "--tasks", "Mbpp/11,Mbpp/12", "--resume"])
        assert code == 2 and "is being written by another egcfg bench" in _one_error_line(err)
        assert first.wait(timeout=600) == 0, first.stderr.read()[-800:]
    finally:
        if first.poll() is None:
            first.kill()
    assert sorted(r[0] for r in _rows(run / "results.sqlite", "SELECT task_id FROM tasks")) == ["Mbpp/11", "Mbpp/12"]


@pytest.mark.model
def test_a_disk_that_fills_up_mid_run_loses_nothing(tmp_path, model_path):
    """The disk fills while tasks are being stored: the run stops with one line; stored rows are
    intact, and once space is freed --resume finishes with nothing lost or duplicated."""
    mount = tmp_path / "disk"
    with small_filesystem(mount, "8m"):
        run = mount / "run"
        db = run / "results.sqlite"
        proc = _bench(BASE + ["--out", str(run)])
        _wait_for_tasks(proc, db, 1)
        fill(mount / "filler")
        out, err = proc.communicate(timeout=600)
        stored = _rows(db, "SELECT task_id, created FROM tasks")
        if proc.returncode == 0:  # (every task was stored before the disk filled: nothing to test)
            pytest.skip("the run finished before the disk was full")
        line = _one_error_line(err)
        assert proc.returncode == 2 and "is full" in line and "--resume" in line
        os.remove(mount / "filler")
        code, out, err = _run(BASE + ["--out", str(run), "--resume"])
        assert code == 0, err[-800:]
        after = _rows(db, "SELECT task_id, created FROM tasks")
        assert set(stored) <= set(after) and sorted(t for t, _ in after) == ALL_TASKS
        keys = _rows(db, "SELECT task_id, agent, gamma FROM attempts")
        assert len(keys) == len(set(keys)) == 4


@pytest.mark.model
def test_sigkill_with_busy_workers_resumes_without_loss_or_duplicates(tmp_path, model_path):
    """--workers 4 --concurrency 8 on the llama.cpp backend, the whole process group killed hard
    while the workers are busy; the resumed run stores every task once and keeps what was stored."""
    run = tmp_path / "run"
    db = run / "results.sqlite"
    args = BASE + ["--out", str(run), "--workers", "4", "--concurrency", "8", "--agents", "2", "--gamma", "0,1",
                   "--no-accept-candidates"]  # (the paper's method: a heavier run, still busy when killed)
    args[args.index("--method") + 1] = "egcfg"
    proc = _bench(args, start_new_session=True)
    _wait_for_tasks(proc, db, 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # (workers die with the group)
    tasks_before = _rows(db, "SELECT task_id, created FROM tasks")
    attempts_before = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert 1 <= len(tasks_before) < len(ALL_TASKS)
    code, out, err = _run(args + ["--resume"], timeout=900)
    assert code == 0, err[-800:]
    tasks_after = _rows(db, "SELECT task_id, created FROM tasks")
    attempts_after = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert sorted(t for t, _ in tasks_after) == ALL_TASKS
    assert set(tasks_before) <= set(tasks_after) and set(attempts_before) <= set(attempts_after)
    keys = [(t, a, g) for t, a, g, _ in attempts_after]
    assert len(keys) == len(set(keys))
    # every finished task's final program is one of its stored attempts
    for task_id, code_ in _rows(db, "SELECT task_id, code FROM tasks"):
        assert code_ in {c for (c,) in _rows(db, f"SELECT code FROM attempts WHERE task_id = '{task_id}'")} | {""}


@pytest.mark.model
def _signal_while_working(proc, db: Path, sig) -> None:
    """Send ``sig`` to a run that is verifiably still working. The run's process group is
    stopped first, so that what is checked (the run alive, tasks left) still holds when the signal
    arrives: otherwise a run that finishes its last task just then exits 0 and the test says
    nothing about signals."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        assert proc.poll() is None, "the run ended before it was signalled"
        done = _rows(db, "SELECT count(*) FROM tasks")[0][0] if db.exists() else 0
        assert done < len(ALL_TASKS), "every task was stored before the signal"
        proc.send_signal(sig)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def test_sigint_stops_worker_processes_even_where_it_was_ignored(tmp_path, model_path):
    """A run started with SIGINT ignored (as a script's background job is, or the GPU tool's
    commands) still stops on `kill -INT` and on SIGTERM, its worker processes with it, within a
    minute, and says so in one line; what it stored stays and --resume finishes the run. (Two
    fresh runs, so that each signal finds work left: a resumed run may have only its last task.)"""
    for sig in (signal.SIGINT, signal.SIGTERM):
        run = tmp_path / sig.name
        db = run / "results.sqlite"
        # (the paper's method: accepted candidates would finish the tasks before the signals)
        args = BASE + ["--out", str(run), "--workers", "2", "--concurrency", "2", "--agents", "2", "--gamma", "0,1",
                       "--no-accept-candidates"]
        args[args.index("--method") + 1] = "egcfg"
        proc = _bench(args, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if sig == signal.SIGINT:  # stopped mid-run: one attempt stored, so most tasks are left
            _wait_for_rows(proc, db, "attempts", 1)
        else:  # stopped while it loads its models or runs its first units
            time.sleep(2.0)
        _signal_while_working(proc, db, sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and err.strip().splitlines()[-1] == "egcfg: interrupted", err[-800:]
        deadline = time.time() + 10  # (multiprocessing's resource tracker ends on its own, just after)
        while _live_in_group(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        left = _live_in_group(proc.pid)
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in left]
        code, _, err = _run(args + ["--resume"], timeout=900)
        assert code == 0, err[-800:]
        assert sorted(t for (t,) in _rows(db, "SELECT task_id FROM tasks")) == ALL_TASKS


@pytest.mark.model
def test_a_killed_model_server_stops_the_run_in_one_line_and_resume_finishes(tmp_path, model_path):
    """--workers with a transformers model: one model server process serves the workers
    (hf_server.py). Killed hard mid-run, the run stops with one line instead of hanging on its
    workers' calls, keeps what it stored, and --resume (with a new server) finishes it. A model
    the server cannot load is one line as well."""
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    run = tmp_path / "run"
    db = run / "results.sqlite"
    args = BASE + ["--out", str(run), "--workers", "2", "--concurrency", "2", "--model", "hf:embedded?n_ctx=1024"]
    proc = _bench(args, start_new_session=True)
    deadline = time.time() + 300
    while not list(run.glob("profile-*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    server = int(next(run.glob("profile-*.json")).name.split("-")[1])
    time.sleep(3.0)  # (the workers are mid-unit, waiting on the server)
    os.kill(server, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "model server" in _one_error_line(err), err[-800:]
    deadline = time.time() + 10
    while _live_in_group(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not _live_in_group(proc.pid)
    code, _, err = _run(args + ["--resume"], timeout=900)
    assert code == 0, err[-800:]
    assert sorted(t for (t,) in _rows(db, "SELECT task_id FROM tasks")) == ALL_TASKS
    bad = BASE + ["--out", str(tmp_path / "bad"), "--workers", "2", "--concurrency", "2",
                  "--model", "hf:embedded?n_ctx=1024&graphs=on&device=cpu"]
    code, _, err = _run(bad)
    assert code == 2 and "graphs=on needs a CUDA device" in _one_error_line(err)
