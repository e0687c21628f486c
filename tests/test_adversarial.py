"""Hostile programs: the host must be unaffected and egcfg must keep working.

Each program runs through `egcfg trace` (the CLI, exactly as candidates run) and, all together,
through the engine's execution path, next to a benign program whose result must not be lost.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT

MARK = uuid.uuid4().hex[:8]
HOST_TMP = Path("/tmp") / f"egcfg-canary-{MARK}"
HOME_FILE = Path.home() / f"egcfg-pwned-{MARK}"
PROJECT_FILE = ROOT / f"PWNED-{MARK}"
SLEEP = 4000 + int(MARK, 16) % 900  # a sleep duration no other process uses
SECRET = f"s3cret-{MARK}"


# Kernel interfaces the seccomp filter closes, with arguments that would do something if allowed
# (x86-64 syscall numbers; the programs call them raw, so no C library wrapper can hide a refusal).
SYSCALL_NUMBERS = {
    "unshare": 272, "setns": 308, "clone": 56, "clone3": 435, "io_uring_setup": 425, "keyctl": 250,
    "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "userfaultfd": 323,
    "personality": 135, "chroot": 161, "open_by_handle_at": 304, "socket": 41,
    "shmget": 29, "semget": 64, "msgget": 68, "mq_open": 240,
}
SYSCALLS = {  # name -> arguments
    "unshare": (0x10000000,), "setns": (0, 0x10000000), "clone": (0x10000000 | 17, 0, 0, 0, 0),
    "clone3": (0, 0), "io_uring_setup": (8, 0), "keyctl": (0, -3, 0), "add_key": (0, 0, 0, 0, -3),
    "request_key": (0, 0, 0, -3), "bpf": (0, 0, 0), "perf_event_open": (0, 0, -1, -1, 0), "ptrace": (16, 1, 0, 0),
    "process_vm_readv": (1, 0, 0, 0, 0, 0), "process_vm_writev": (1, 0, 0, 0, 0, 0), "mount": (0, 0, 0, 0, 0),
    "umount2": (0, 0), "pivot_root": (0, 0), "kexec_load": (0, 0, 0, 0), "kexec_file_load": (-1, -1, 0, 0, 0),
    "init_module": (0, 0, 0), "finit_module": (-1, 0, 0), "userfaultfd": (0,), "personality": (0x0400000,),
    "chroot": (0,), "open_by_handle_at": (-1, 0, 0), "socket": (2, 1, 0),
    "shmget": (0, 4096, 0o1600), "semget": (0, 1, 0o1600), "msgget": (0, 0o1600), "mq_open": (0, 0o100, 0o600, 0),
}
# What each must answer: EPERM from the filter (clone3: ENOSYS, so the C library uses clone).
SYSCALL_ERRNO = {name: 38 if name == "clone3" else 1 for name in SYSCALLS}
_SYSCALL = (
    "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    f"NUMBERS = {SYSCALL_NUMBERS!r}\n"
    "def call(name, *args):\n"
    "    r = libc.syscall(ctypes.c_long(NUMBERS[name]), *[ctypes.c_long(a) for a in args])\n"
    "    if r < 0:\n"
    "        raise OSError(ctypes.get_errno(), 'refused: ' + name)\n"
)


def hostile_programs(port: int) -> dict[str, tuple[str, str | None]]:
    """name -> (program, invocation)."""
    return {
        "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", None),
        "thread_bomb": ("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()\n", None),
        "memory_bomb_one_block": ("x = bytearray(50 * 1024 ** 3)\n", None),
        "memory_bomb_growing": ("chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)\n", None),
        "infinite_loop": ("def f():\n    while True:\n        pass\n", "f()"),
        "deep_recursion": ("def f(n):\n    return f(n + 1)\n", "f(0)"),
        "c_stack_overflow": ("import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return f(n + 1)\nf(0)\n", None),
        "write_home": (f"import os\nopen(os.path.expanduser('~/egcfg-pwned-{MARK}'), 'w').write('x')\n"
                       f"open('{HOME_FILE}', 'w').write('x')\n", None),
        "write_host_tmp": (f"open('{HOST_TMP}', 'w').write('pwned')\n", None),
        "write_project": (f"open('{PROJECT_FILE}', 'w').write('pwned')\n", None),
        "delete_files": (f"import os, shutil\nos.remove('{HOST_TMP}')\nshutil.rmtree('{ROOT / 'src'}')\n", None),
        "delete_system": ("import shutil\nshutil.rmtree('/usr/share', ignore_errors=False)\n", None),
        "read_host_env": ("import os\nprint(dict(os.environ))\nprint(open('/proc/1/environ').read())\n", None),
        "read_host_files": (f"print(open('{ROOT / 'README.md'}').read())\nprint(open('/etc/passwd').read())\n", None),
        "connect_localhost": (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.send(b'hi')\n", None),
        "spawn_shell_background": (f"import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep {SLEEP} &'])\n"
                                   f"subprocess.Popen(['sleep', '{SLEEP}'])\n", None),
        "daemon_own_session": (f"import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                               f"        os.execvp('sleep', ['sleep', '{SLEEP}'])\n    os._exit(0)\n", None),
        "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", None),
        "kill_everything": ("import os, signal\nos.kill(-1, signal.SIGKILL)\n", None),
        "ignore_sigterm": ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n", None),
        "cancel_timer": ("import signal\nsignal.setitimer(signal.ITIMER_REAL, 0)\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n", None),
        "os_exit_mid_trace": ("def f(n):\n    import os\n    total = n\n    os._exit(0)\n", "f(3)"),
        "sys_exit_mid_trace": ("def f(n):\n    import sys\n    sys.exit(0)\n", "f(3)"),
        "disable_tracer": ("import sys\ndef f(n):\n    sys.settrace(None)\n    return n * 2\n", "f(4)"),
        "replace_tracer": ("import sys\ndef f(n):\n    sys.settrace(lambda *a: None)\n    return n\n", "f(1)"),
        "replace_builtins": ("import builtins\nbuiltins.repr = None\nbuiltins.print = None\nbuiltins.str = None\ndef f():\n    return [1, 2]\n", "f()"),
        "hostile_repr": ("class X:\n    def __repr__(self):\n        raise SystemExit(0)\ndef f():\n    x = X()\n    return x\n", "f()"),
        "ctypes_segfault": ("import ctypes\nctypes.string_at(0)\n", None),
        "huge_print": ("print('x' * 10 ** 8)\n", None),
        "endless_print": ("while True:\n    print('y' * 1000)\n", None),
        "raw_fd_flood": ("import os\nwhile True:\n    os.write(1, b'z' * 65536)\n    os.write(2, b'e' * 65536)\n", None),
        "endless_stdin": ("import sys\nwhile True:\n    sys.stdin.read(1)\n", None),
        "huge_file": ("with open('/tmp/big', 'wb') as f:\n    while True:\n        f.write(b'0' * 10 ** 6)\n", None),
        "raise_limits": ("import resource\nresource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n", None),
        "close_result_pipe": ("import os\nfor fd in range(3, 256):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\n", None),
        # Writes past the private /tmp's size (64 MiB) in many files, each under the per-file cap.
        "tmp_flood_many_files": ("for i in range(32):\n    with open('/tmp/f%d' % i, 'wb') as f:\n"
                                 "        f.write(b'0' * (8 << 20))\n", None),
        "nested_userns_then_mount_and_net": (
            _SYSCALL + "call('unshare', 0x10000000)\ncall('unshare', 0x20000 | 0x40000000)\n", None),
        **{f"syscall_{name}": (_SYSCALL + f"call({name!r}, *{args!r})\n", None) for name, args in SYSCALLS.items()},
    }


EXPECTED_NOT_OK = {
    # Programs that must never count as a clean run.
    "fork_bomb", "thread_bomb", "memory_bomb_one_block", "memory_bomb_growing", "infinite_loop", "deep_recursion",
    "c_stack_overflow", "write_project", "delete_files", "delete_system",
    "read_host_files", "connect_localhost", "ignore_sigterm", "cancel_timer", "os_exit_mid_trace",
    "sys_exit_mid_trace", "ctypes_segfault", "endless_print", "raw_fd_flood", "endless_stdin", "huge_file",
    "raise_limits", "close_result_pipe", "tmp_flood_many_files", "nested_userns_then_mount_and_net",
    *(f"syscall_{name}" for name in SYSCALLS),
}


def _sandbox_setup() -> tuple[str, bool]:
    """(mode, whether candidates run as a user other than the one running the tests)."""
    from egcfg.execution.sandbox import isolation, sandbox_user

    mode = isolation()
    return mode, mode == "bubblewrap" or sandbox_user(mode).startswith("uid 65534")


MODE, SEPARATE_USER = _sandbox_setup()
if not SEPARATE_USER:
    # rlimits fallback run by an unprivileged user (or by root with EGCFG_SANDBOX=rlimits-unsafe and
    # no possible drop): candidates run as the tests' own user, so these programs really would delete
    # the project, kill pytest or fork-bomb the machine. Nothing here would be a meaningful check.
    pytestmark = pytest.mark.skip(reason=f"sandbox {MODE} runs candidates as the invoking user")

# What the rlimits fallback (even as uid 65534) does not isolate: see the module doc of sandbox.py.
NOT_ISOLATED_BY_RLIMITS = {
    "read_host_files": "no file-system isolation: world-readable files stay readable",
    "tmp_flood_many_files": "no private tmpfs: files go to the scratch directory, 16 MiB each, with no total cap",
    "daemon_own_session": "no PID namespace: a process that starts its own session outlives the run",
    "kill_everything": "no PID namespace: kill(-1) as uid 65534 reaches every process of that uid on the host",
}


def applies(name: str) -> bool:
    return MODE == "bubblewrap" or name not in NOT_ISOLATED_BY_RLIMITS


@pytest.fixture(scope="module")
def listener():
    """A TCP server on 127.0.0.1 that records every connection it gets."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    got = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                got.append(conn.recv(16))
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], got
    stop.set()
    thread.join(2)
    server.close()


@pytest.fixture(scope="module")
def canaries():
    HOST_TMP.write_text("canary")
    yield
    HOST_TMP.unlink(missing_ok=True)


def leftover_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"sleep {SLEEP}" in cmd:
                found.append(f"{entry.name}: {cmd}")
    return found


def assert_host_unaffected(got_connections):
    assert HOST_TMP.read_text() == "canary"
    assert not HOME_FILE.exists()
    assert not PROJECT_FILE.exists()
    assert (ROOT / "src" / "egcfg" / "engine.py").is_file()
    assert Path("/usr/share").is_dir()
    assert got_connections == []
    time.sleep(0.1)
    assert leftover_processes() == []


def run_cli(tmp_path, name, program, call):
    path = tmp_path / f"{name}.py"
    path.write_text(program)
    args = [sys.executable, "-m", "egcfg", "trace", str(path), "--json", "--timeout", "1"]
    if call:
        args += ["--call", call]
    env = dict(os.environ, EGCFG_TEST_SECRET=SECRET)
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


@pytest.mark.parametrize("name", sorted(hostile_programs(0)))
def test_hostile_program_through_cli(name, tmp_path, listener, canaries):
    if not applies(name):
        pytest.skip(f"not isolated in {MODE} mode: {NOT_ISOLATED_BY_RLIMITS[name]}")
    if name.startswith("syscall_") and platform.machine() != "x86_64":
        pytest.skip("the syscall numbers are x86-64's")
    port, got = listener
    program, call = hostile_programs(port)[name]
    out = run_cli(tmp_path, name, program, call)
    # egcfg itself survived and reported an outcome (1 = the program did not finish cleanly).
    assert out.returncode in (0, 1), (out.returncode, out.stderr[-500:])
    assert "Traceback" not in out.stderr
    data = json.loads(out.stdout)
    assert data["status"] in ("returned", "completed", "raised", "exited", "timeout", "crashed")
    if name in EXPECTED_NOT_OK:
        assert data["status"] not in ("returned", "completed"), data
    assert SECRET not in out.stdout
    assert len(out.stdout) < 400_000  # outputs are capped
    if name == "disable_tracer":
        assert data["status"] == "returned" and data["value"] == "8"
    if name.startswith("syscall_") or name == "nested_userns_then_mount_and_net":
        # Refused by the syscall filter: the program gets its error (and its outcome), nothing else.
        want = SYSCALL_ERRNO.get(name[len("syscall_"):], 1)
        assert data["status"] == "raised" and f"[Errno {want}] refused: " in data["exception"], data
    if name == "tmp_flood_many_files":
        assert data["status"] == "raised" and "No space left on device" in data["exception"], data
    assert_host_unaffected(got)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the syscall numbers above are x86-64's")
def test_every_run_is_filtered_and_ordinary_programs_still_work(sandbox):
    """Seccomp mode 2 in every run, inherited by children; fork, threads, subprocess, pipes and Unix
    sockets (what multiprocessing uses) keep working, and so does the personality query."""
    program = (
        "import os, socket, subprocess, threading, multiprocessing\n"
        "status = lambda: [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp:')][0]\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, status().encode())\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "child = os.read(r, 8).decode()\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "a, b = socket.socketpair(); a.send(b'x'); assert b.recv(1) == b'x'\n"
        "out = subprocess.run(['cat', '/proc/self/status'], capture_output=True, text=True).stdout\n"
        "sub = [l.split()[1] for l in out.splitlines() if l.startswith('Seccomp:')][0]\n"
        "import ctypes\n"
        "assert ctypes.CDLL(None).personality(0xffffffff) >= 0  # the query answers\n"
        "print(status(), child, sub)\n"
    )
    result = sandbox.run(program, trace=False, timeout=10)
    assert result.status == "completed", (result.exception, result.stderr[-300:])
    assert result.stdout.split() == ["2", "2", "2"]


def test_hostile_programs_through_the_engine(listener, canaries):
    """All hostile programs in one batch of the engine's execution path, with a benign one among them."""
    from egcfg import task_from_dict
    from egcfg.execution.checks import TracedRuns, check_visible
    from egcfg.results import Stats
    from egcfg.execution.sandbox import Limits, Sandbox

    port, got = listener
    programs = {name: prog for name, (prog, _) in hostile_programs(port).items() if applies(name)}
    benign = "def f(x):\n    return x + 1\n"
    task = task_from_dict({"task_id": "hostile", "prompt": "p", "entry_point": "f", "tests": ["assert f(1) == 2"]})
    stats = Stats()
    with Sandbox(Limits(timeout=1.0)) as sandbox:
        traces = TracedRuns(sandbox, task, stats)
        batch = sorted(programs.values()) + [benign]
        results = traces.run(batch)
        assert len(results) == len(batch)
        benign_run = results[-1].runs[0][1]
        assert benign_run.status == "returned" and benign_run.value == "2"
        for cand in results[:-1]:
            assert cand.runs[0][1].status in ("returned", "completed", "raised", "exited", "timeout", "crashed")
        # Verification of a hostile final program is a failure, never a pass, and the sandbox still works.
        # (each attacks at module level, before the asserts would run)
        attackers = [programs["kill_parent"], programs["fork_bomb"], programs["close_result_pipe"],
                     "import os\nos._exit(0)\n"]
        for attack in attackers:
            verdict = check_visible("def f(x):\n    return x + 1\n" + attack, task, sandbox, stats)
            assert not verdict[0]["passed"], attack
        assert check_visible(benign, task, sandbox, stats)[0]["passed"]
    assert stats.executions == len(batch) + 5
    assert_host_unaffected(got)


@pytest.mark.model
def test_engine_survives_a_task_whose_tests_are_hostile(model, listener, canaries):
    """A real solve where every traced invocation tries to kill egcfg and fork-bomb the machine."""
    from egcfg import Config, solve, task_from_dict

    port, got = listener
    evil = "__import__('os').kill(__import__('os').getppid(), 9) or __import__('os').fork() or 1"
    task = task_from_dict({
        "task_id": "hostile-tests", "prompt": "Return x + 1.", "entry_point": "inc",
        "tests": [f"assert inc({evil}) == 2", "assert inc(1) == 2"],
    })
    result = solve(task, model=model, config=Config(gammas=(1.0,), candidates=2, horizon=1, max_tokens=80))
    assert result.stats.executions > 0 and result.stats.refreshes > 0
    assert "def inc(" in result.code
    assert_host_unaffected(got)
