"""Fork servers: one sandboxed interpreter that runs job after job, each in a fresh forked child.

Starting a run the ordinary way costs a new bubblewrap and a new Python with the tracer's imports:
about 35 ms of CPU, measured (``benchmarks/sandbox_cost.py``), which is what bounded the agent grid
on the GPU machine (16 cores running ~160 executions a second). A fork server pays that once: it is
started exactly like a one-run sandbox (same bubblewrap namespaces, resource limits, uid drop and
syscall filter, all applied before it reads anything), then forks one child per job from its
pristine, already-imported state (``tracer.serve``). Between jobs it kills every other process of
its PID namespace and empties its /tmp, so a run never sees what an earlier one left, and a run
that breaks the server (kills it, stops it) only loses itself: this side sees the channel close or
the deadline pass, reports that run as crashed or timed out, and starts a new server.

Only in bubblewrap mode: the clean-up relies on the server's own PID namespace (``kill(-1)``
would otherwise reach every process of the sandbox user).

Everything the server sends is untrusted (a run shares its sandbox): frames are length-checked and
capped here; results are parsed like a one-run sandbox's.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time

from .tracer import REPORT_CAP

# Jobs per server before it is replaced: bounds its own CPU use (forks, clean-ups: ~1 ms each)
# under its CPU limit, SERVE_CPU_SECONDS (given on its command line), with a wide margin.
JOBS_PER_SERVER = 2000
SERVE_CPU_SECONDS = 3600
# Extra wall time beyond a job's own deadline (the server's kill grace, its clean-up) before this
# side gives up on the server.
CHANNEL_GRACE = 3.0


class ServerGone(Exception):
    """The server died, stalled or sent something malformed during a job. ``sent``: whether the
    job reached it (if not, the job never ran: it may go to another server)."""

    def __init__(self, why: str, sent: bool = True):
        super().__init__(why)
        self.sent = sent


class ForkServer:
    """One server process. Not thread-safe: a Sandbox hands each to one thread at a time."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd="/", env={}, start_new_session=True)
        self.jobs = 0
        self._buf = bytearray()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and self.jobs < JOBS_PER_SERVER

    def run(self, job: bytes, stdin: bytes, deadline_s: float, cap: int) -> tuple[int, bool, bytes, bytes, bytes]:
        """Send one job, wait for its answer: (exit status, timed out, stdout, stderr, report)."""
        self.jobs += 1
        end = time.monotonic() + deadline_s + CHANNEL_GRACE
        try:
            self._send(b"%d %d\n" % (len(job), len(stdin)) + job + stdin, end)
        except ServerGone as exc:
            raise ServerGone(str(exc), sent=False) from None
        try:
            header = self._read_line(end)
            parts = header.split()
            if len(parts) != 5 or not all(p.lstrip(b"-").isdigit() for p in parts):
                raise ServerGone(f"malformed answer {header[:40]!r}")
            status, timed_out, *sizes = (int(p) for p in parts)
            if sizes[0] > cap or sizes[1] > cap or sizes[2] > REPORT_CAP or min(sizes) < 0:
                raise ServerGone("answer over its caps")
            body = self._read(sum(sizes), end)
        except (OSError, ValueError) as exc:
            raise ServerGone(str(exc)) from None
        out, err, report = body[:sizes[0]], body[sizes[0]:sizes[0] + sizes[1]], body[sizes[0] + sizes[1]:]
        return status, bool(timed_out), out, err, report

    def _send(self, data: bytes, end: float) -> None:
        if self.proc.poll() is not None or self.proc.stdin.closed:
            raise ServerGone("the server had ended")
        fd = self.proc.stdin.fileno()
        os.set_blocking(fd, False)
        view = memoryview(data)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            while view:
                if time.monotonic() >= end or self.proc.poll() is not None:
                    raise ServerGone("the server stopped taking jobs")
                if sel.select(timeout=0.05):
                    try:
                        view = view[os.write(fd, view[: 1 << 16]):]
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        raise ServerGone("the server closed its channel") from None

    def _fill(self, end: float) -> None:
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= end:
                    raise ServerGone("no answer before the deadline")
                if sel.select(timeout=min(0.5, end - now)):
                    try:
                        chunk = os.read(fd, 1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise ServerGone("the server closed its channel")
                    self._buf += chunk
                    return

    def _read_line(self, end: float) -> bytes:
        while b"\n" not in self._buf:
            if len(self._buf) > 64:
                raise ServerGone("malformed answer")
            self._fill(end)
        i = self._buf.index(b"\n")
        line, self._buf = bytes(self._buf[:i]), self._buf[i + 1:]
        return line

    def _read(self, n: int, end: float) -> bytes:
        while len(self._buf) < n:
            self._fill(end)
        data, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return data

    def error_text(self) -> str:
        """What the server wrote on stderr before it died (why it refused to start, say)."""
        if self.proc.poll() is None:
            return ""
        try:
            os.set_blocking(self.proc.stderr.fileno(), False)
            return (self.proc.stderr.read(4000) or b"").decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
