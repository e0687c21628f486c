"""Fork servers (execution/forkserver.py, tracer.serve): runs forked from one confined interpreter
must be as separate from each other as runs in fresh sandboxes, and give the same results."""

import pytest

from egcfg.execution import forkserver
from egcfg.execution.sandbox import Job, Limits, Sandbox, isolation

pytestmark = pytest.mark.skipif(isolation() != "bubblewrap", reason="fork servers run in bubblewrap mode only")


@pytest.fixture
def one():
    """One thread, so every run goes to the same server while it lives."""
    with Sandbox(Limits(timeout=1.0), workers=1) as sb:
        assert sb.fork_server
        yield sb


PROGRAMS = [
    Job("def f(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n", invocation="f([1, 2, 3])"),
    Job("def f(n):\n    return 10 // n\n", invocation="f(0)"),
    Job("import sys\nn = int(sys.stdin.readline())\nprint(n * 2)\n", stdin="21\n"),
    Job("import sys\nsys.exit(3)\n"),
    Job("import os\nos._exit(4)\n"),
    Job("print('x' * 10000)\n", trace=False),
    Job("def f():\n    while True:\n        pass\n", invocation="f()"),
]


def _comparable(r):
    d = r.to_dict()
    d.pop("seconds")
    return d


def test_a_served_run_gives_what_a_fresh_sandbox_gives():
    with Sandbox(Limits(timeout=1.0), workers=1) as served, \
            Sandbox(Limits(timeout=1.0), workers=1, fork_server=False) as fresh:
        assert served.fork_server and not fresh.fork_server
        for job in PROGRAMS:
            a, b = served.run_job(job), fresh.run_job(job)
            if a.status == "timeout":  # (how far a loop got in 1 s differs from run to run)
                assert b.status == "timeout" and a.events[:5] == b.events[:5]
                continue
            assert _comparable(a) == _comparable(b), job.program


def test_a_run_sees_no_file_an_earlier_run_left(one):
    first = one.run("open('/tmp/left', 'w').write('x')\nopen('here', 'w').write('y')\nimport os\nos.mkdir('/tmp/d')\n"
                    "open('/tmp/d/f', 'w').write('z')\nos.chmod('/tmp/d', 0)\n", trace=False)
    assert first.status == "completed", first
    second = one.run("import os\nprint(sorted(os.listdir('/tmp')), os.listdir('.'))\n", trace=False)
    assert second.stdout.strip() == "['run'] []"


def test_no_process_of_an_earlier_run_survives_into_the_next(one):
    daemon = ("import os, subprocess\nsubprocess.Popen(['sleep', '30'])\n"
              "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('sleep', ['sleep', '31'])\n"
              "    os._exit(0)\n")
    assert one.run(daemon, trace=False).status == "completed"
    listing = one.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getpid(), "
                      "os.getppid())\n", trace=False)
    pids, me, parent = listing.stdout.rsplit(" ", 2)
    assert sorted(eval(pids)) == sorted({1, int(parent), int(me)})  # bwrap's init, the server, this run


def test_changes_to_the_interpreter_do_not_reach_the_next_run(one):
    assert one.run("import builtins, sys\nbuiltins.len = None\nsys.modules['json'] = None\nimport os\n"
                   "os.environ['X'] = '1'\n", trace=False).status == "completed"
    second = one.run("import json, os\nprint(len('abc'), 'X' in os.environ, json.dumps([1]))\n", trace=False)
    assert second.stdout.strip() == "3 False [1]"


def test_a_run_cannot_read_its_server_through_proc(one):
    probe = one.run("import os\nppid = os.getppid()\nout = []\n"
                    "for what in ('fd', 'mem', 'environ', 'maps'):\n"
                    "    try:\n        os.listdir(f'/proc/{ppid}/fd') if what == 'fd' else open(f'/proc/{ppid}/{what}', 'rb').read(1)\n"
                    "        out.append(what)\n    except OSError:\n        pass\nprint(out)\n", trace=False)
    assert probe.stdout.strip() == "[]"


@pytest.mark.parametrize("attack", ["os.kill(os.getppid(), signal.SIGKILL)", "os.kill(-1, signal.SIGKILL)",
                                    "os.kill(os.getppid(), signal.SIGSTOP)"])
def test_a_run_that_breaks_its_server_loses_only_itself(one, attack):
    broken = one.run(f"import os, signal\n{attack}\nimport time\ntime.sleep(0.5)\n", trace=False)
    assert broken.status in ("crashed", "timeout")
    after = one.run("def f(x):\n    return x + 1\n", "f(1)")
    assert after.status == "returned" and after.value == "2"


def test_servers_are_replaced_after_their_share_of_jobs(one, monkeypatch):
    monkeypatch.setattr(forkserver, "JOBS_PER_SERVER", 2)
    starts = []
    real = forkserver.ForkServer.__init__

    def counting(self, cmd):
        starts.append(1)
        real(self, cmd)

    monkeypatch.setattr(forkserver.ForkServer, "__init__", counting)
    results = [one.run("def f():\n    return 1\n", "f()") for _ in range(5)]
    assert all(r.value == "1" for r in results) and len(starts) >= 2


def test_the_fork_server_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("EGCFG_FORK_SERVER", "0")
    with Sandbox(Limits(timeout=1.0), workers=1, warm=0) as sb:
        assert not sb.fork_server
        assert sb.run("def f():\n    return 5\n", "f()").value == "5"


def test_the_server_refuses_to_serve_outside_its_own_pid_namespace(tmp_path):
    import subprocess
    import sys

    from egcfg.execution.sandbox import TRACER, _tracer_args

    got = subprocess.run([sys.executable, "-I", "-S", str(TRACER), "serve", *_tracer_args(Limits(), None, cpu=60)],
                         input=b"", capture_output=True, timeout=30, cwd=tmp_path)
    assert got.returncode != 0 and b"PID namespace" in got.stderr


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="the uid drop happens only when egcfg runs as root")
def test_many_servers_at_once_do_not_share_one_process_limit():
    # Each idle server is a process; were they all one uid, RLIMIT_NPROC (which counts a uid's
    # processes machine-wide) would refuse their forks once there are more servers than the limit.
    with Sandbox(Limits(timeout=2.0, processes=4), workers=8) as sb:
        slow = [Job(f"import time\ntime.sleep(0.3)\n# {i}\n", trace=False) for i in range(8)]
        assert {r.status for r in sb.run_many(slow)} == {"completed"}
        again = sb.run_many([Job(f"import threading\nt = threading.Thread(target=print, args=({i},))\nt.start()\n"
                                 f"t.join()\n", trace=False) for i in range(8)])
        assert [r.status for r in again] == ["completed"] * 8, again[0]
        assert [r.stdout.strip() for r in again] == [str(i) for i in range(8)]


def test_a_job_that_never_reached_its_server_goes_to_another(one, monkeypatch):
    assert one.run("def f():\n    return 1\n", "f()").value == "1"
    (server,) = one._servers
    import os

    os.killpg(server.proc.pid, 9)  # it ends between two jobs (after its last answer) ...
    server.proc.wait()
    monkeypatch.setattr(forkserver.ForkServer, "alive", property(lambda self: True))  # ... unnoticed
    again = one.run("def f():\n    return 2\n", "f()")
    assert again.status == "returned" and again.value == "2"
