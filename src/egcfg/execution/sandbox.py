"""The sandbox: every execution of model-written code goes through here.

Each run is a fresh process tree, never the engine's own process (in bubblewrap mode, by default,
forked by a fork server from a confined interpreter that never ran other code: ``forkserver.py``):

* **bubblewrap** (preferred): new PID, network, IPC and UTS namespaces; a root file system that is a
  read-only view of /usr and of the Python installation only (no /home, /root, /etc, project or
  host temp); a private tmpfs at /tmp as the only writable place and the working directory; an empty
  environment. When egcfg runs as root, the tracer drops to uid/gid 65534 before the program starts,
  so the process limit applies and no capability is left. Killing bwrap tears the PID namespace
  down, so nothing the program started outlives the run.
* **rlimits** (fallback when bubblewrap is missing or user namespaces are off): a separate session
  and process group in a private scratch directory, a clean environment and the same resource
  limits, but no file-system, network or PID isolation. When egcfg runs as root, the program runs
  as uid/gid 65534 (nobody/nogroup, no supplementary groups; the scratch directory is owned by it,
  mode 0700): the process limit applies, and it cannot read what only root can read (``/root``)
  nor write the project or anything else that is not writable by everyone. It still reads what
  every user may read, and it can reach the network and other processes of uid 65534 (concurrent
  runs included). If the base interpreter is not usable by uid 65534 (e.g. installed under
  ``/root``), the same ``major.minor`` interpreter of the system is used instead. If root cannot
  drop to uid 65534 at all (no CAP_SETUID, uid not mapped in a user namespace, no usable
  interpreter), runs are refused (``SandboxUnavailable``) rather than executed as root.

``EGCFG_SANDBOX`` (environment) picks the mode: unset or ``auto`` = bubblewrap if a probe sandbox
starts, else rlimits; ``rlimits`` = the fallback even where bubblewrap works; ``rlimits-unsafe`` =
the fallback, and, where root cannot drop to uid 65534, run the program **as root** instead of
refusing (an explicit opt-in; the log warns and ``egcfg doctor`` reports it). ``egcfg doctor`` and
the log say which mode and which user are active.

Resource limits in both modes: address space, CPU seconds, processes, file size, open files, no
core dumps; a wall-clock timeout (an in-process timer first, so the trace survives; a hard kill of
the process group after a grace). Output is capped (see ``Limits``).

No Python code runs between fork and exec (no ``preexec_fn``: egcfg has other threads, and
``preexec_fn`` can deadlock then). The new session and, in rlimits mode, the uid/gid/groups drop
are Popen arguments done in C; the resource limits (and the drop inside bubblewrap) are applied by
the trusted tracer to itself, from its command line, before it reads the job, so no candidate code
can run before them (see ``tracer.confine``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import EgcfgError
from . import seccomp
from .forkserver import SERVE_CPU_SECONDS, ForkServer, ServerGone
from .tracer import KILL_GRACE, REPORT_CAP, read_capped  # (the tracer is standard library only: importable on both sides)

log = logging.getLogger(__name__)

TRACER = Path(__file__).with_name("tracer.py")
NOBODY = 65534
# Fork servers run as a uid of their own each (first, count): a range no account uses. RLIMIT_NPROC
# counts a uid's processes machine-wide, so with one shared uid every idle server would count
# against every other's limit (and their forks fail once there are more servers than it allows).
SERVER_UIDS = (2_000_000_000, 100_000_000)
MODES = ("bubblewrap", "rlimits", "rlimits-unsafe")


class SandboxUnavailable(EgcfgError):
    """No safe way to run model-written code here (egcfg refuses rather than run it as root)."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Documented in the README's security section."""

    timeout: float = 2.0          # wall seconds; the program sees a timeout, then the tree is killed
    memory_mb: int = 1024         # RLIMIT_AS of every process in the run
    processes: int = 32           # RLIMIT_NPROC (enforced for the sandbox user, see module doc)
    file_size_mb: int = 16        # RLIMIT_FSIZE: largest file the program may write
    open_files: int = 64          # RLIMIT_NOFILE
    tmp_mb: int = 64              # size of the private /tmp (bubblewrap's tmpfs --size: the kernel refuses more)
    max_output: int = 64 * 1024   # bytes kept of raw stdout/stderr (the rest is counted, not stored)
    max_stdout_chars: int = 4000  # characters of print() output kept by the tracer
    trace_head: int = 40          # trace events kept from the start ...
    trace_tail: int = 20          # ... and from the end; the middle is counted as skipped


@dataclass(frozen=True)
class Job:
    """One sandboxed run: ``program`` (then ``invocation``, if given, evaluated and traced), with
    ``stdin``; ``prelude`` runs first, untraced (a task's own imports and helpers); ``timeout``,
    ``memory_mb`` (address space) and ``max_stdout`` (characters of output kept) None mean the
    sandbox's default."""

    program: str
    invocation: str | None = None
    stdin: str = ""
    trace: bool = True
    timeout: float | None = None
    prelude: str = ""
    # None: the sandbox's Limits. Scoring sets them per run: a hidden-test harness may need more memory
    # (EvalPlus allows 4 GB), and a stdin/stdout program's whole output must be compared.
    memory_mb: int | None = None
    max_stdout: int | None = None


@dataclass
class RunResult:
    """What one sandboxed run produced. ``status`` is one of:

    returned / completed (stdin program ended) / raised / exited (sys.exit) / timeout /
    crashed (the process died without a report: signal, os._exit, memory) / error (could not start).
    """

    status: str
    value: str | None = None
    exception: str | None = None
    events: list = field(default_factory=list)
    skipped: int = 0
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The program (and its invocation) ran to the end without an exception."""
        return self.status in ("returned", "completed")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@functools.lru_cache(maxsize=1)
def isolation() -> str:
    """'bubblewrap' if a test sandbox starts here, else 'rlimits' (or 'rlimits-unsafe' when
    EGCFG_SANDBOX asks for it). Probed once per process."""
    requested = os.environ.get("EGCFG_SANDBOX", "").strip()
    if requested in ("rlimits", "rlimits-unsafe"):
        return requested
    if requested not in ("", "auto", "bubblewrap"):
        log.warning("EGCFG_SANDBOX=%r is not one of auto, bubblewrap, rlimits, rlimits-unsafe; ignored", requested)
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "rlimits"
    try:
        # Trusted code only (`pass`): no limits needed, and no preexec_fn (see the module doc).
        probe = subprocess.run(
            _bwrap_prefix(bwrap) + [_sandbox_python_path(), "-I", "-S", "-c", "pass"],
            capture_output=True, timeout=10, start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "rlimits"
    if probe.returncode != 0:
        log.warning("bubblewrap is installed but cannot start a sandbox here (%s); falling back to rlimits",
                    probe.stderr.decode(errors="replace").strip()[:200])
        return "rlimits"
    return "bubblewrap"


def _python() -> str:
    """The base interpreter (not a venv's): candidates run with the standard library only."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _python_prefix() -> Path:
    return Path(sys.base_prefix).resolve()


SANDBOX_PYTHON = "/opt/python"


def _bwrap_prefix(bwrap: str, tmp_mb: int = Limits.tmp_mb) -> list[str]:
    prefix = _python_prefix()
    args = [
        bwrap,
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONHASHSEED", "0", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--ro-bind", "/usr", "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            args += ["--ro-bind", str(target), f"/{link}"]
    if not str(prefix).startswith("/usr/"):
        # Mounted at a neutral path: the host path may sit under an unreadable home directory.
        args += ["--perms", "0755", "--dir", "/opt", "--ro-bind", str(prefix), SANDBOX_PYTHON]
    args += [
        "--perms", "0755", "--dir", "/egcfg", "--ro-bind", str(TRACER), "/egcfg/tracer.py",
        "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
        "--chdir", "/tmp",
    ]
    if os.geteuid() == 0:
        # Kept only so the tracer can drop to the sandbox user; setuid() then clears every capability.
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return args


def _bwrap_tracer(tmp_mb: int) -> list[str]:
    """The tracer inside bubblewrap, its arguments to follow (a one-run sandbox's, or ``serve``)."""
    return _bwrap_prefix(shutil.which("bwrap"), tmp_mb) + [_sandbox_python_path(), "-I", "-S", "-B", "/egcfg/tracer.py"]


def _sandbox_python_path() -> str:
    exe = Path(_python()).resolve()
    prefix = _python_prefix()
    if str(prefix).startswith("/usr/"):
        return str(exe)
    return str(Path(SANDBOX_PYTHON) / exe.relative_to(prefix))


def _tracer_args(limits: Limits, drop_to: int | None, cpu: int | None = None) -> list[str]:
    """The tracer's command-line arguments after the result fd: the resource limits it applies to
    itself before it reads the job (see ``tracer.confine``), and the uid it must run as. ``cpu``:
    CPU seconds, if not the run's timeout's (a fork server's lifetime budget)."""
    cpu = cpu or int(math.ceil(limits.timeout)) + 1
    nproc = limits.processes
    if os.geteuid() != 0:
        # Unprivileged: RLIMIT_NPROC counts all of this user's processes, so allow for those.
        try:
            nproc += sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and p.stat().st_uid == os.geteuid())
        except OSError:
            nproc += 256
    mem = limits.memory_mb * 1024 * 1024
    size = limits.file_size_mb * 1024 * 1024
    args = [f"{mem}:{cpu}:{nproc}:{size}:{limits.open_files}", seccomp.filter_hex()]
    if drop_to is not None:
        args.append(str(drop_to))
    return args


@functools.lru_cache(maxsize=1)
def _tracer_source() -> str:
    """In rlimits mode the tracer is passed with ``-c``: uid 65534 may not be able to read its file."""
    return TRACER.read_text(encoding="utf-8")


_PROBE = "import os, sys; print(os.getuid(), os.geteuid(), os.getgid(), len(os.getgroups()), *sys.version_info[:2])"


@functools.lru_cache(maxsize=1)
def _drop_plan() -> tuple[str | None, str]:
    """For rlimits mode as root: an interpreter that really starts as uid/gid 65534 with no groups,
    found by starting it so (once per process). Returns (path, "") or (None, why not)."""
    major, minor = sys.version_info[:2]
    candidates = [_python()]
    system = shutil.which(f"python{major}.{minor}", path="/usr/local/bin:/usr/bin:/bin")
    if system and Path(system).resolve() != Path(_python()).resolve():
        candidates.append(system)
    expected = [str(NOBODY), str(NOBODY), str(NOBODY), "0", str(major), str(minor)]
    problems = []
    for exe in candidates:
        try:
            probe = subprocess.run(
                [exe, "-I", "-S", "-B", "-c", _PROBE], capture_output=True, timeout=10, cwd="/",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True,
                user=NOBODY, group=NOBODY, extra_groups=[],
            )
        except (OSError, subprocess.SubprocessError) as exc:  # setuid refused, or exec denied to 65534
            problems.append(f"{exe}: cannot start as uid {NOBODY}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if probe.returncode == 0 and probe.stdout.decode(errors="replace").split() == expected:
            if exe != candidates[0]:
                log.info("sandbox: %s is not usable by uid %d; rlimits runs use %s", candidates[0], NOBODY, exe)
            return exe, ""
        problems.append(f"{exe}: exit {probe.returncode} {probe.stdout.decode(errors='replace').strip()} "
                        f"{probe.stderr.decode(errors='replace').strip()[-200:]}".strip())
    return None, "; ".join(problems)


def _run_as(mode: str) -> tuple[int | None, str, str]:
    """Who runs model-written code in ``mode``: (uid to drop to, or None to stay; the interpreter
    outside bubblewrap; why root cannot drop, "" when it can or need not). The one decision behind
    both ``Sandbox`` and ``sandbox_user``."""
    if os.geteuid() != 0:
        return None, _python(), ""
    if mode == "bubblewrap":
        return NOBODY, _python(), ""  # (bubblewrap runs its own interpreter; the tracer drops)
    python, why = _drop_plan()
    return (NOBODY, python, "") if python is not None else (None, _python(), why)


def _fork_servers_wanted() -> bool:
    """EGCFG_FORK_SERVER=0 turns fork servers off (they run in bubblewrap mode only)."""
    return os.environ.get("EGCFG_FORK_SERVER", "1").strip() != "0"


def sandbox_user(mode: str | None = None) -> str:
    """Which user model-written code runs as, in words (for ``egcfg doctor``)."""
    mode = mode or isolation()
    drop_to, python, why = _run_as(mode)
    if drop_to is not None:
        served = (f"; fork servers: a uid of their own each, from {SERVER_UIDS[0]}"
                  if mode == "bubblewrap" and _fork_servers_wanted() else "")
        return f"uid {NOBODY} (dropped from root)" + ("" if python == _python() else f", interpreter {python}") + served
    if not why:
        return f"uid {os.geteuid()}"
    if mode == "rlimits-unsafe":
        return f"uid 0 (root: cannot drop to uid {NOBODY}; allowed by EGCFG_SANDBOX=rlimits-unsafe)"
    return f"none: runs refused (root cannot drop to uid {NOBODY}: {why})"


@dataclass
class _Started:
    """A sandboxed interpreter that is up and waiting for its one job on stdin."""

    proc: subprocess.Popen
    result_fd: int
    scratch: str | None

    def discard(self) -> None:
        _kill_tree(self.proc)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        try:
            os.close(self.result_fd)
        except OSError:
            pass
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


_logged_mode = False


class Sandbox:
    """Runs programs under the tracer, isolated and limited; several at once in a thread pool.

    The threads only wait on child processes; all CPU work happens in the children, so a pool as
    large as the core count keeps the machine busy.

    Cheap spawn paths:

    * ``fork_server`` (bubblewrap mode, the default there; ``EGCFG_FORK_SERVER=0`` turns it off):
      runs at the sandbox's own limits go to fork servers (``forkserver.py``), one per thread in use:
      each run is a fresh process forked from a confined interpreter that never ran other code, in a
      sandbox emptied of the previous run's processes and files. 4-7 ms of CPU a run instead of
      33-36 (``benchmarks/sandbox_cost.py``).
    * otherwise, and for runs with a longer timeout or another memory limit (hidden-test scoring):
      ``warm`` interpreters are started ahead of time, each already inside its own sandbox and
      blocked reading its job. A run takes one and immediately starts its replacement, so the
      start-up of bwrap and Python overlaps the previous run.
    """

    def __init__(self, limits: Limits | None = None, workers: int | None = None, warm: int | None = None,
                 mode: str | None = None, fork_server: bool | None = None):
        global _logged_mode
        self.limits = limits or Limits()
        if mode not in (None, *MODES):
            raise ValueError(f"unknown sandbox mode {mode!r}")
        self.mode = mode or isolation()
        try:
            seccomp.filter_program()  # built once per process; every run's tracer installs it
        except seccomp.FilterUnavailable as exc:
            raise SandboxUnavailable(f"{exc}; refusing to run model-written code without it") from None
        # As root: the uid to drop to, and (outside bubblewrap) the interpreter that can run as it.
        self._drop_to, self._python, why = _run_as(self.mode)
        if why:
            if self.mode == "rlimits-unsafe":
                log.warning("sandbox: cannot drop root to uid %d (%s); running model-written code AS ROOT "
                            "because EGCFG_SANDBOX=rlimits-unsafe", NOBODY, why)
            else:
                raise SandboxUnavailable(
                    f"sandbox mode {self.mode} as root cannot drop to uid {NOBODY} ({why}); refusing to run "
                    f"model-written code as root. Make bubblewrap work, run egcfg as an unprivileged user, or "
                    f"set EGCFG_SANDBOX=rlimits-unsafe to accept running it as root")
        if not _logged_mode:
            _logged_mode = True
            user = f", as uid {NOBODY}" if self._drop_to is not None else ""
            if self.mode == "bubblewrap":
                log.info("sandbox: bubblewrap (namespaces, read-only system, private /tmp, no network) + rlimits")
            elif mode or os.environ.get("EGCFG_SANDBOX", "").strip() in ("rlimits", "rlimits-unsafe"):
                log.info("sandbox: %s + separate session only, as requested (no namespace isolation%s)", self.mode, user)
            else:
                log.warning("sandbox: bubblewrap unavailable; falling back to rlimits + separate session "
                            "(no file-system, network or PID isolation%s)", user)
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.fork_server = (_fork_servers_wanted() if fork_server is None else fork_server) and self.mode == "bubblewrap"
        self._servers: list[ForkServer] = []  # idle ones (each in use is held by one thread)
        self._next_uid = random.SystemRandom().randrange(SERVER_UIDS[1])  # (two sandboxes rarely meet)
        self.warm = (0 if self.fork_server else self.workers) if warm is None else warm
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="egcfg-run")
        self._ready: list[_Started] = []
        self._lock = threading.Lock()
        self._closed = False
        self.runs = 0
        for _ in range(self.warm):
            self._prestart()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            self._closed = True
            ready, self._ready = self._ready, []
            servers, self._servers = self._servers, []
        for started in ready:
            started.discard()
        for server in servers:
            server.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_many(self, jobs: list[Job]) -> list[RunResult]:
        """Run jobs in parallel; results in the same order."""
        return list(self._pool.map(self.run_job, jobs))

    def run_job(self, job: Job) -> RunResult:
        extra = {k: v for k, v in (("memory_mb", job.memory_mb), ("max_stdout", job.max_stdout)) if v is not None}
        return self.run(job.program, job.invocation, job.stdin, job.trace, job.timeout, job.prelude, **extra)

    def run(self, program: str, invocation: str | None = None, stdin: str = "", trace: bool = True,
            timeout: float | None = None, prelude: str = "", memory_mb: int | None = None,
            max_stdout: int | None = None) -> RunResult:
        """Run ``program`` (then evaluate ``invocation``, if given) in a fresh sandboxed process.
        ``prelude`` runs first, untraced (a task's own imports and helpers)."""
        self.runs += 1
        limits = self.limits
        timeout = limits.timeout if timeout is None else timeout
        max_stdout = limits.max_stdout_chars if max_stdout is None else max_stdout
        cap = max(limits.max_output, max_stdout)
        job = json.dumps({
            "program": program, "invocation": invocation, "timeout": timeout, "trace": trace, "prelude": prelude,
            "head": limits.trace_head, "tail": limits.trace_tail, "max_stdout": max_stdout, "cap": cap,
        }).encode("utf-8", "replace")
        start = time.monotonic()
        # A pre-started process or a fork server has its CPU and memory limits set for the defaults;
        # other runs start fresh.
        own = timeout > limits.timeout or (memory_mb is not None and memory_mb != limits.memory_mb)
        if self.fork_server and not own:
            return self._run_served(job, stdin.encode("utf-8", "replace"), timeout, cap, start)
        payload = b"%d\n" % len(job) + job + stdin.encode("utf-8", "replace")
        try:
            started = None if own else self._take()
            if started is None:
                started = self._start(replace(limits, timeout=max(timeout, limits.timeout),
                                              memory_mb=memory_mb or limits.memory_mb) if own else limits)
        except OSError as exc:
            return RunResult(status="error", exception=f"could not start the sandbox: {exc}",
                             seconds=time.monotonic() - start)
        try:
            out, err, report, timed_out = _communicate(started.proc, payload, started.result_fd,
                                                       timeout + KILL_GRACE, cap)
        finally:
            started.discard()
        return _result(started.proc.returncode, out, err, report, timed_out, timeout, time.monotonic() - start)

    def _run_served(self, job: bytes, stdin: bytes, timeout: float, cap: int, start: float,
                    retry: bool = True) -> RunResult:
        with self._lock:
            server = self._servers.pop() if self._servers else None
        try:
            if server is None or not server.alive:
                if server is not None:
                    server.close()
                server = self._new_server()
        except OSError as exc:
            return RunResult(status="error", exception=f"could not start the sandbox: {exc}",
                             seconds=time.monotonic() - start)
        try:
            code, timed_out, out, err, report = server.run(job, stdin, timeout + KILL_GRACE, cap)
        except ServerGone as exc:
            if not exc.sent and retry:  # (it ended after its last job: this one never ran there)
                server.close()
                return self._run_served(job, stdin, timeout, cap, start, retry=False)
            # The run broke its server (killed or stopped it) or the server refused to start: this
            # run only is lost; the next gets a new server.
            why = server.error_text()
            server.close()
            seconds = time.monotonic() - start
            if seconds >= timeout + KILL_GRACE:  # (it stalled: a run that timed out, as _result says it)
                return _result(None, b"", b"", b"", True, timeout, seconds)
            return RunResult(status="crashed", exception=f"the sandbox server stopped during the run ({exc})",
                             stderr=why, seconds=seconds)
        with self._lock:
            closed = self._closed
            if not closed:
                self._servers.append(server)
        if closed:
            server.close()
        return _result(code, out, err, report, timed_out, timeout, time.monotonic() - start)

    def _new_server(self) -> ForkServer:
        limits = self.limits
        drop_to = None
        if self._drop_to is not None:
            with self._lock:
                drop_to = SERVER_UIDS[0] + self._next_uid % SERVER_UIDS[1]
                self._next_uid += 1
            limits = replace(limits, processes=limits.processes + 1)  # (the server is one of its uid's)
        cmd = _bwrap_tracer(limits.tmp_mb) + ["serve", *_tracer_args(limits, drop_to, cpu=SERVE_CPU_SECONDS)]
        return ForkServer(cmd)

    def _take(self) -> _Started | None:
        with self._lock:
            started = self._ready.pop() if self._ready else None
        if started is not None:
            if started.proc.poll() is not None:  # died while waiting (should not happen): don't use it
                started.discard()
                started = None
            self._prestart()
        return started

    def _prestart(self) -> None:
        if self.warm <= 0:
            return
        try:
            started = self._start(self.limits)
        except OSError as exc:
            log.debug("could not pre-start a sandbox: %s", exc)
            return
        with self._lock:
            if not self._closed:
                self._ready.append(started)
                return
        started.discard()

    def _start(self, limits: Limits) -> _Started:
        # No preexec_fn (threads): the session and the uid drop are done by Popen in C, the limits
        # by the tracer itself before it reads the job (it refuses to run without them).
        result_r, result_w = os.pipe()
        scratch = None
        try:
            user = {}
            drop_to = self._drop_to
            if self.mode == "bubblewrap":  # (inside it, the tracer drops to drop_to itself)
                cmd = _bwrap_tracer(limits.tmp_mb)
                cwd, env = "/", {}
            else:
                scratch = tempfile.mkdtemp(prefix="egcfg-run-")  # mode 0700
                if drop_to is not None:
                    os.chown(scratch, drop_to, drop_to)
                    user = {"user": drop_to, "group": drop_to, "extra_groups": []}
                cmd = [self._python, "-I", "-S", "-B", "-c", _tracer_source()]
                cwd, env = scratch, {"PATH": "/usr/bin:/bin", "HOME": scratch, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
            cmd += [str(result_w), *_tracer_args(limits, drop_to)]
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(result_w,), cwd=cwd, env=env, start_new_session=True, **user,
            )
        except BaseException:
            os.close(result_r)
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            os.close(result_w)
        return _Started(proc=proc, result_fd=result_r, scratch=scratch)


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the run's process group (bwrap's death also ends its whole PID namespace), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        log.error("sandboxed process %d did not die", proc.pid)


def _communicate(proc, payload: bytes, result_fd: int, deadline_s: float, cap: int):
    """Feed stdin and read stdout, stderr and the result pipe, all bounded, until the deadline."""
    sel = selectors.DefaultSelector()
    bufs = {"out": bytearray(), "err": bytearray(), "res": bytearray()}
    caps = {"out": cap, "err": cap, "res": REPORT_CAP}
    for name, fd in (("out", proc.stdout.fileno()), ("err", proc.stderr.fileno()), ("res", result_fd)):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    sel.register(stdin_fd, selectors.EVENT_WRITE, "in")
    pending = memoryview(payload)
    end = time.monotonic() + deadline_s
    timed_out = False
    exited_at = None
    open_reads = 3
    while open_reads:
        now = time.monotonic()
        if now >= end:
            timed_out = True
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.2:
            break  # the main process is gone; something it left holds a pipe open (fallback mode)
        for key, _ in sel.select(timeout=min(0.05, end - now)):
            name = key.data
            if name == "in":
                try:
                    pending = pending[os.write(stdin_fd, pending[: 1 << 16]):]
                except (BrokenPipeError, OSError):
                    pending = memoryview(b"")
                if not pending:
                    sel.unregister(stdin_fd)
                    proc.stdin.close()
                continue
            if not read_capped(key.fd, bufs[name], caps[name]):
                sel.unregister(key.fd)
                open_reads -= 1
    sel.close()
    if not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    return bytes(bufs["out"]), bytes(bufs["err"]), bytes(bufs["res"]), timed_out


def _result(code, out: bytes, err: bytes, report: bytes, timed_out: bool, timeout: float, seconds: float) -> RunResult:
    text_out = out.decode("utf-8", "replace")
    text_err = err.decode("utf-8", "replace")
    data = None
    if report:
        try:
            data = json.loads(report)
        except ValueError:
            data = None
    if isinstance(data, dict) and isinstance(data.get("status"), str):
        events = list(data.get("head") or []) + (["skip"] if data.get("skipped") else []) + list(data.get("tail") or [])
        stdout = str(data.get("stdout") or "") + text_out
        if data.get("stdout_dropped"):
            stdout += f"\n[... {data['stdout_dropped']} more characters of output cut]"
        return RunResult(
            status=data["status"], value=data.get("value"), exception=data.get("exception"),
            events=events, skipped=int(data.get("skipped") or 0), stdout=stdout, stderr=text_err,
            exit_code=code, seconds=seconds,
        )
    if timed_out:
        return RunResult(status="timeout", exception=f"killed after {timeout:g} s", stdout=text_out,
                         stderr=text_err, exit_code=code, seconds=seconds)
    why = _describe_exit(code)
    return RunResult(status="crashed", exception=why, stdout=text_out, stderr=text_err, exit_code=code, seconds=seconds)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "process did not report"
    if code < 0:
        return f"process killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"killed by signal {-code}"
    if code > 128 and (code - 128) in signal.valid_signals():
        return f"process killed by {signal.Signals(code - 128).name}"
    return f"process exited with code {code} before finishing"
