"""`egcfg bench --ray`: the agent grid on a real Ray cluster of two nodes on this machine's loopback
(a head started with `ray start --head` and a second node joining it, one CPU each, started once for
this module), with the embedded model on the CPU: the same stored attempts as the local runner,
cancellation across workers, a worker killed mid-unit, a driver killed and resumed on a new
cluster, and the one-line errors."""

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, free_port

FIXTURE = Path(__file__).parent / "data" / "mbpp_tiny.jsonl"
# Ray rewrites 127.0.0.1 and localhost into the machine's network address (so that other machines
# can reach a node); any other loopback address is taken as given, which keeps the test cluster's
# traffic on the loopback interface.
NODE_IP = "127.0.0.2"
RAY = str(Path(sys.executable).parent / "ray")
# Opposite signs: greedy decoding fails a visible test, EG-CFG at gamma 1 passes (as in the demo).
OPPOSITE = {"task_id": 15, "text": "Write a python function to check whether the given two integers have opposite "
            "sign or not.", "code": "def opposite_signs(x, y):\n    return (x ^ y) < 0",
            "test_list": ["assert opposite_signs(1, -2) == True", "assert opposite_signs(3, 2) == False",
                          "assert opposite_signs(-10, -10) == False"], "test_setup_code": "", "challenge_test_list": []}


def _node(env, log, *extra):
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", NODE_IP,
                             "--object-store-memory", str(80 * 2**20), "--disable-usage-stats",
                             "--include-log-monitor=false", "--dashboard-agent-listen-port", str(free_port()), *extra],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _alive_nodes(address: str, env: dict) -> int:
    probe = ("import ray, logging; ray.init(address=%r, logging_level=logging.ERROR, log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    return int(res.stdout.strip() or 0) if res.returncode == 0 else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each on 127.0.0.2, with a token of their own (Ray's token
    authentication: only this module's drivers can use them). Stopped by ending the two
    `ray start --block` processes, which end their node's processes; `ray stop` would end every Ray
    cluster on the machine."""
    temp = tempfile.mkdtemp(prefix="egcfg-ray-", dir="/tmp")  # (short: Ray's socket paths have a length limit)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    log = open(Path(temp) / "nodes.log", "w")
    port = free_port()
    address = f"{NODE_IP}:{port}"
    started = time.time()
    nodes = [_node(env, log, "--head", "--port", str(port), "--include-dashboard=false", "--dashboard-port",
                   str(free_port()), "--temp-dir", temp)]
    try:
        deadline = time.time() + 120
        while _alive_nodes(address, env) < 1:
            assert time.time() < deadline and nodes[0].poll() is None, (Path(temp) / "nodes.log").read_text()[-2000:]
            time.sleep(0.5)
        nodes.append(_node(env, log, "--address", address))
        while _alive_nodes(address, env) < 2:
            assert time.time() < deadline and nodes[1].poll() is None, (Path(temp) / "nodes.log").read_text()[-2000:]
            time.sleep(0.5)
        data = tmp_path_factory.mktemp("ray-data") / "mbpp_ray.jsonl"
        rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
        data.write_text("\n".join(json.dumps(r) for r in rows + [OPPOSITE]) + "\n")
        print(f"\nray test cluster: 2 nodes up in {time.time() - started:.1f} s, "
              f"{_tree_rss_mb([p.pid for p in nodes]):.0f} MB resident")
        yield SimpleNamespace(address=address, env=env, roots=[p.pid for p in nodes], data=data)
    finally:
        for proc in reversed(nodes):
            proc.terminate()
        for proc in nodes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _descendants(roots: list[int]) -> list[int]:
    tree, seen, todo = _children(), [], list(roots)
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += tree.get(pid, [])
    return seen


def _tree_rss_mb(roots: list[int]) -> float:
    total = 0
    for pid in _descendants(roots):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _unit_workers(cluster) -> list[int]:
    """The cluster's egcfg worker processes (Ray titles an actor's process ray::<class>)."""
    found = []
    for pid in _descendants(cluster.roots):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::UnitWorker"):
                found.append(pid)
        except OSError:
            pass
    return found


def _bench(cluster, args, env=None, verbose=True):
    return subprocess.Popen([sys.executable, "-m", "egcfg", *(["-vv"] if verbose else []), "bench", *args], cwd=ROOT,
                            env=env or cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _run(cluster, args, env=None, timeout=600, verbose=False):
    proc = _bench(cluster, args, env, verbose)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _rows(db: Path, sql: str) -> list:
    if not db.exists():  # (not created yet)
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:  # (its tables not created yet)
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("egcfg: error: ") and "Traceback" not in err, err[-1500:]
    return lines[0]


class _Lines:
    """A running command's stderr, read line by line in a thread (its log says where units run)."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        self.thread.start()

    def text(self) -> str:
        return "".join(self.lines)


def _wait(predicate, proc, timeout=300, what=""):
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"bench ended before {what}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


ATTEMPTS = ("SELECT task_id, agent, gamma, code, passed_visible, tests_passed, tests_total, stop_reason, lines "
            "FROM attempts ORDER BY task_id, agent, gamma")
TASKS = ("SELECT task_id, final_agent, final_gamma, code, passed_visible, passed_hidden, hidden_status FROM tasks "
         "ORDER BY task_id")


@pytest.mark.model
def test_results_equal_the_local_runner(cluster, tmp_path, model_path):
    """Two Ray workers on two nodes store the attempts a local run of the same settings stores:
    the greedy one and the guided gamma 1 one (code, verdicts, stop reasons, and the line-by-line
    record of candidates, traces and chosen lines), and the same final programs and hidden verdicts."""
    args = ["mbpp", "--data", str(cluster.data), "--tasks", "Mbpp/11,Mbpp/15", "--gamma", "0,1", "--max-tokens", "128",
            "--no-progress"]
    code, _, err = _run(cluster, args + ["--out", str(tmp_path / "local")])
    assert code == 0, err[-1500:]
    code, out, err = _run(cluster, args + ["--out", str(tmp_path / "ray"), "--ray", cluster.address, "--workers", "2"])
    assert code == 0, err[-1500:]
    assert "pass@1 (hidden tests, honest)" in out
    local, ray = (_rows(tmp_path / name / "results.sqlite", ATTEMPTS) for name in ("local", "ray"))
    assert [(r[0], r[2]) for r in local] == [("Mbpp/11", 0.0), ("Mbpp/15", 0.0), ("Mbpp/15", 1.0)]
    assert json.loads(local[2][8]), "the gamma 1 attempt was guided line by line"
    assert ray == local
    assert _rows(tmp_path / "ray" / "results.sqlite", TASKS) == _rows(tmp_path / "local" / "results.sqlite", TASKS)
    meta = dict(_rows(tmp_path / "ray" / "results.sqlite", "SELECT key, value FROM meta"))
    assert "Ray 2." in json.loads(meta["machine"]) and "2 node(s)" in json.loads(meta["machine"])


@pytest.mark.model
def test_a_pass_stops_the_tasks_other_units_on_other_workers(cluster, tmp_path, model_path):
    """Two agents of one task run side by side on the two workers: a greedy one that passes in a
    few seconds, and a slow one whose guided schedule would take far longer. The pass stops the slow
    one at a line boundary: it stored nothing, and its worker says it was stopped after it began."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"name": "fast", "gammas": [0], "max_tokens": 96},
                                {"name": "slow", "gammas": [1, 3], "prompt_style": "long-code", "max_tokens": 512}]))
    code, _, err = _run(cluster, ["mbpp", "--data", str(cluster.data), "--tasks", "Mbpp/11", "--agents-file", str(grid),
                                  "--out", str(tmp_path / "run"), "--no-progress", "--ray", cluster.address,
                                  "--workers", "2"], verbose=True)
    assert code == 0, err[-1500:]
    assert _rows(tmp_path / "run" / "results.sqlite", "SELECT agent, gamma, passed_visible FROM attempts") == \
        [("fast", 0.0, 1)]
    assert "Mbpp/11, agent slow: stopped on" in err, err[-1500:]
    ran = {line.split("(pid ")[1].split(")")[0] for line in err.splitlines() if "Mbpp/11, agent" in line and ": on " in line}
    assert len(ran) == 2, "the two agents ran on two workers"


@pytest.mark.model
def test_a_worker_killed_mid_unit_loses_nothing(cluster, tmp_path, model_path):
    """The worker running a task's gamma 1 attempt is killed (SIGKILL) after its greedy attempt was
    stored: Ray restarts it, the unit runs again (reusing the stored greedy attempt), the run ends
    normally with every task, nothing stored before the kill changed and nothing stored twice.
    (Under the paper protocol: hidden verdicts are sent back as they are made.)"""
    db = tmp_path / "run" / "results.sqlite"
    proc = _bench(cluster, ["mbpp", "--data", str(cluster.data), "--tasks", "Mbpp/15,Mbpp/11,Mbpp/12", "--gamma", "0,1",
                            "--max-tokens", "128", "--protocol", "paper", "--out", str(tmp_path / "run"), "--no-progress",
                            "--ray", cluster.address, "--workers", "2"])
    log = _Lines(proc)
    try:
        _wait(lambda: _rows(db, "SELECT 1 FROM attempts WHERE task_id = 'Mbpp/15' AND gamma = 0"), proc,
              what="the greedy attempt of Mbpp/15")
        where = [line for line in log.lines if "Mbpp/15, agent" in line and ": on " in line]
        pid = int(where[-1].split("(pid ")[1].split(")")[0])
        assert pid in _unit_workers(cluster)
        before = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log.thread.join(timeout=10)
    assert proc.returncode == 0, log.text()[-1500:]
    assert "Mbpp/15, agent t0.7-d2-s3-instruct: its Ray worker died mid-unit; it runs again" in log.text()
    after = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert set(before) <= set(after)
    keys = [row[:3] for row in after]
    assert len(keys) == len(set(keys))
    assert ("Mbpp/15", "t0.7-d2-s3-instruct", 1.0) in keys  # the lost attempt, made again
    assert sorted(t for (t,) in _rows(db, "SELECT task_id FROM tasks")) == ["Mbpp/11", "Mbpp/12", "Mbpp/15"]
    assert not _rows(db, "SELECT 1 FROM attempts WHERE passed_hidden IS NULL")


@pytest.mark.model
def test_a_killed_driver_resumes_on_a_new_cluster(cluster, tmp_path, model_path):
    """The driver is killed (SIGKILL) mid-run: its workers end with it (Ray ends a job's actors),
    and --resume on a new cluster (--ray local, started by the driver on this machine) finishes the
    run, keeping everything stored and storing nothing twice."""
    db = tmp_path / "run" / "results.sqlite"
    args = ["mbpp", "--data", str(cluster.data), "--tasks", "Mbpp/11,Mbpp/15,Mbpp/12,Mbpp/13", "--gamma", "0,1",
            "--max-tokens", "128", "--out", str(tmp_path / "run"), "--no-progress", "--workers", "2"]
    proc = _bench(cluster, args + ["--ray", cluster.address], verbose=False)
    try:
        _wait(lambda: _rows(db, "SELECT 1 FROM tasks"), proc, what="a finished task")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _wait(lambda: not _unit_workers(cluster), None, timeout=60, what="the workers to end with their driver")
    tasks_before = _rows(db, "SELECT task_id, created FROM tasks")
    attempts_before = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert 1 <= len(tasks_before) < 4
    code, out, err = _run(cluster, args + ["--ray", "local", "--resume"])
    assert code == 0, err[-1500:]
    assert sorted(t for t, _ in _rows(db, "SELECT task_id, created FROM tasks")) == \
        ["Mbpp/11", "Mbpp/12", "Mbpp/13", "Mbpp/15"]
    assert set(tasks_before) <= set(_rows(db, "SELECT task_id, created FROM tasks"))
    attempts_after = _rows(db, "SELECT task_id, agent, gamma, created FROM attempts")
    assert set(attempts_before) <= set(attempts_after)
    keys = [row[:3] for row in attempts_after]
    assert len(keys) == len(set(keys))


def test_ray_errors_are_one_line(cluster, tmp_path):
    """No cluster at the address (given, or found by `auto` in $RAY_ADDRESS), a malformed address,
    a cluster without the CPUs or GPUs asked for, and a model the workers cannot load: one line
    each, exit 2; none of them leaves a run folder behind but the last (which holds no attempt)."""
    base = ["mbpp", "--data", str(cluster.data), "--tasks", "Mbpp/11", "--method", "baseline", "--no-progress"]
    nobody = f"{NODE_IP}:{free_port()}"
    cases = [(["--ray", nobody], None, f"no Ray cluster reachable at {nobody}"),
             (["--ray", "auto"], {"RAY_ADDRESS": nobody}, f"no Ray cluster reachable at {nobody} (--ray auto"),
             (["--ray", "nowhere"], None, "expected auto, local or HOST:PORT"),
             (["--ray", cluster.address, "--workers", "3"], None, "has room for 2 of the 3 workers asked for"),
             (["--ray", cluster.address, "--ray-gpus-per-worker", "0.5"], None, "has room for 0 of the 1 workers"),
             (["--ray-gpus-per-worker", "1"], None, "--ray-gpus-per-worker is for --ray")]
    for i, (extra, env, words) in enumerate(cases):
        out = tmp_path / f"run{i}"
        code, _, err = _run(cluster, base + extra + ["--out", str(out)], env=dict(cluster.env, **(env or {})), timeout=120)
        assert code == 2 and words in _one_error_line(err), (extra, err[-1500:])
        assert not out.exists()
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(4096))
    code, _, err = _run(cluster, base + ["--model", str(bad), "--ray", cluster.address, "--out", str(tmp_path / "bad")],
                        timeout=300)
    assert code == 2 and "a Ray worker could not load the model" in _one_error_line(err), err[-1500:]
    assert not _rows(tmp_path / "bad" / "results.sqlite", "SELECT 1 FROM attempts")
