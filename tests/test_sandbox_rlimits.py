"""The rlimits fallback as root (uid drop, fail closed) and limits applied without preexec_fn."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import ROOT

from egcfg.execution import sandbox as sandbox_module
from egcfg.execution.sandbox import NOBODY, TRACER, Limits, Sandbox, SandboxUnavailable, isolation, sandbox_user

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop only happens when egcfg runs as root")
MB = 1024 * 1024


def modes() -> list[str]:
    return ["rlimits"] + (["bubblewrap"] if isolation() == "bubblewrap" else [])


@pytest.fixture(scope="module")
def rlimits():
    if os.geteuid() == 0 and sandbox_user("rlimits").startswith("none"):
        pytest.skip("root here cannot drop to uid 65534 (see test_root_that_cannot_drop_fails_closed)")
    with Sandbox(Limits(timeout=2.0), warm=0, mode="rlimits") as sb:
        yield sb


@needs_root
def test_rlimits_as_root_runs_as_nobody_and_cannot_touch_root_files(rlimits, tmp_path):
    mark = uuid.uuid4().hex[:8]
    project_file = ROOT / f"PWNED-rlimits-{mark}"
    secret = tmp_path / "root-only"
    secret.write_text("secret")
    secret.chmod(0o600)
    program = f"""
import os, stat
def probe():
    out = {{"uid": (os.getuid(), os.geteuid()), "gid": (os.getgid(), os.getegid()), "groups": os.getgroups()}}
    st = os.stat(".")
    out["scratch"] = (st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode)), os.access(".", os.W_OK))
    open("mine.txt", "w").write("ok")
    for name, path in (("root_dir", "/root/.bashrc"), ("root_file", {str(secret)!r})):
        try:
            open(path).read()
            out[name] = "READ"
        except OSError as exc:
            out[name] = type(exc).__name__
    out["project_w"] = os.access({str(ROOT / "README.md")!r}, os.W_OK)
    try:
        open({str(project_file)!r}, "w").write("pwned")
        out["project_create"] = "CREATED"
    except OSError as exc:
        out["project_create"] = type(exc).__name__
    print(repr(out))
"""
    r = rlimits.run(program, "probe()")
    assert r.status == "returned", r
    out = ast.literal_eval(r.stdout.strip())
    assert out["uid"] == (NOBODY, NOBODY) and out["gid"] == (NOBODY, NOBODY) and out["groups"] == []
    assert out["scratch"] == (NOBODY, NOBODY, "0o700", True)
    # /root is 0700 here; if its .bashrc does not exist, it is still not readable (FileNotFound only
    # where /root itself is searchable by others).
    assert out["root_dir"] in ("PermissionError", "FileNotFoundError")
    if not os.stat("/root").st_mode & 0o001:
        assert out["root_dir"] == "PermissionError"
    assert out["root_file"] == "PermissionError"
    assert out["project_w"] is False
    assert out["project_create"] == "PermissionError"
    assert not project_file.exists()


@needs_root
def test_rlimits_cli_reports_nobody(tmp_path):
    prog = tmp_path / "who.py"
    prog.write_text("import os\ndef f():\n    return os.getuid()\n")
    env = dict(os.environ, EGCFG_SANDBOX="rlimits")
    out = subprocess.run([sys.executable, "-m", "egcfg", "trace", str(prog), "--call", "f()", "--json"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    if "refusing to run model-written code as root" in out.stderr:
        pytest.skip("root here cannot drop to uid 65534")
    data = json.loads(out.stdout)
    assert data["isolation"] == "rlimits" and data["status"] == "returned" and data["value"] == str(NOBODY)


@needs_root
def test_root_that_cannot_drop_fails_closed(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_drop_plan", lambda: (None, "simulated: setuid refused"))
    with pytest.raises(SandboxUnavailable, match="refusing to run model-written code as root"):
        Sandbox(Limits(timeout=1.0), warm=0, mode="rlimits")
    assert sandbox_user("rlimits").startswith("none: runs refused")
    # The explicit opt-in runs it as root, as documented.
    assert sandbox_user("rlimits-unsafe").startswith("uid 0")
    with Sandbox(Limits(timeout=1.0), warm=0, mode="rlimits-unsafe") as sb:
        r = sb.run("import os\ndef f():\n    return os.getuid()\n", "f()")
    assert r.status == "returned" and r.value == "0"


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_root_without_cap_setuid_is_refused_through_the_cli(tmp_path):
    """A real failure of setuid (root without CAP_SETUID/CAP_SETGID): no run, a one-line error."""
    prog = tmp_path / "p.py"
    prog.write_text("print('ran')\n")
    env = dict(os.environ, EGCFG_SANDBOX="rlimits")
    out = subprocess.run(["setpriv", "--bounding-set=-setuid,-setgid", sys.executable, "-m", "egcfg", "trace", str(prog)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "refusing to run model-written code as root" in out.stderr and "EGCFG_SANDBOX=rlimits-unsafe" in out.stderr
    assert "ran" not in out.stdout


@pytest.mark.parametrize("mode", modes())
def test_limits_are_set_in_every_mode(mode):
    limits = Limits(timeout=2.0, memory_mb=512, processes=20, file_size_mb=3, open_files=40)
    program = ("import resource\ndef f():\n    print([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) "
               "for n in ('AS', 'CPU', 'NPROC', 'FSIZE', 'NOFILE', 'CORE')])\n")
    with Sandbox(limits, warm=1, mode=mode) as sb:
        # a pre-started process (or a fork server's run), then a fresh one (or another served run)
        runs = [sb.run(program, "f()") for _ in range(2)]
        longer = sb.run(program, "f()", timeout=5.0)      # longer than the default: started fresh
        served = sb.fork_server
    for r, cpu, own_uid in ((runs[0], 3, served), (runs[1], 3, served), (longer, 6, False)):
        assert r.status == "returned", r
        got = ast.literal_eval(r.stdout.strip())
        assert got[0] == (512 * MB, 512 * MB)
        assert got[1] == (cpu, cpu + 1)
        if os.geteuid() == 0:
            # a fork server's uid also counts the server: one more, the same 19 for the program
            assert got[2] == ((21, 21) if own_uid else (20, 20))
        else:
            assert 20 <= got[2][0] < 100_000  # plus the user's own processes, which it counts too
        assert got[3] == (3 * MB, 3 * MB)
        assert got[4] == (40, 40)
        assert got[5] == (0, 0)


def test_memory_file_and_process_limits_stop_programs_in_rlimits_mode(rlimits):
    hog = rlimits.run("def f():\n    x = bytearray(3 * 1024 ** 3)\n    return len(x)\n", "f()")
    assert hog.status == "raised" and "MemoryError" in hog.exception, hog
    big = rlimits.run("def f():\n    with open('big', 'wb') as fh:\n        for _ in range(40):\n"
                      "            fh.write(b'0' * 2 ** 20)\n            fh.flush()\n", "f()")
    assert big.status == "raised" and "File too large" in big.exception, big
    forks = rlimits.run("""
import os, time
def f():
    pids = []
    try:
        for _ in range(300):
            pid = os.fork()
            if pid == 0:
                time.sleep(3)
                os._exit(0)
            pids.append(pid)
        stopped = None
    except OSError as exc:
        stopped = exc.errno
    for pid in pids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return len(pids), stopped
""", "f()")
    assert forks.status == "returned", forks
    count, errno_ = ast.literal_eval(forks.value)
    assert errno_ is not None, forks.value  # the fork loop was stopped by the process limit
    if os.geteuid() == 0:
        assert count < Limits().processes


def test_tracer_refuses_to_run_a_job_without_limits(tmp_path):
    """The limits cannot be skipped: a tracer started without them runs nothing."""
    marker = tmp_path / "ran"
    job = json.dumps({"program": f"open({str(marker)!r}, 'w').write('x')\n", "invocation": None, "timeout": 1})
    r, w = os.pipe()
    try:
        for extra in ([], ["not-limits"], ["1:2:3"]):
            proc = subprocess.run([sys.executable, "-I", "-S", "-B", str(TRACER), str(w), *extra],
                                  input=f"{len(job)}\n{job}".encode(), capture_output=True, timeout=30, pass_fds=(w,))
            assert proc.returncode != 0
            assert b"refusing to run" in proc.stderr
            assert not marker.exists()
    finally:
        os.close(r)
        os.close(w)


def test_no_preexec_fn_in_src():
    """Popen(preexec_fn=...) is unsafe with threads; nothing in src/ may use it."""
    for path in sorted((ROOT / "src").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"preexec_fn\s*=", text), path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                assert all(kw.arg != "preexec_fn" for kw in node.keywords), f"{path}:{node.lineno}"
