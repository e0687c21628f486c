"""The tracer: runs INSIDE the sandboxed process, never in the engine.

It is executed as a script by a plain interpreter (``python -I -S``), so it imports only the standard
library and nothing from egcfg. Protocol:

* command line: ``RESULT_FD LIMITS FILTER [UID]``. ``LIMITS`` is ``AS:CPU:NPROC:FSIZE:NOFILE``
  (bytes, seconds, processes, bytes, descriptors); ``FILTER`` is a seccomp BPF program in hex (built
  by libseccomp in egcfg, see ``seccomp.py``); ``UID``, if given, is the unprivileged user the run
  must execute as. Before it reads anything from stdin, the tracer sets these resource limits on
  itself (inherited by everything the program starts), drops to ``UID`` if it is root (groups
  cleared), installs the syscall filter (with no_new_privs), and checks that all three took effect.
  Without valid arguments, or if any step fails, it exits without reading the job: no candidate
  code runs unconfined.
* stdin starts with one line holding the byte length N of a JSON job, then N bytes of that job;
  whatever follows is the program's own stdin (stdin/stdout tasks). The tracer reads it to the end
  and gives it to the program as a regular file (a memfd) on descriptor 0, as a judge does:
  contest solutions read ``os.read(0, os.fstat(0).st_size)``, which reads nothing from a pipe.
* the job: ``{"program": str, "invocation": str|null, "timeout": float, "trace": bool,
  "head": int, "tail": int, "max_stdout": int}``.
* the result is one JSON object written to file descriptor ``RESULT_FD`` (argv[1]) when the
  run ends, whatever way it ends that Python can still see (return, exception, sys.exit, timeout).

Events are recorded only for code compiled from the candidate (filename ``<candidate>``) and are
bounded: the first ``head`` and the last ``tail`` events are kept, the rest counted as skipped.
"""

import builtins
import codecs
import collections
import io
import json
import math
import os
import reprlib
import signal
import sys
import time

# Extra wall time after the in-process timer before the whole process tree is killed (by the host
# for a one-run sandbox, by the fork server for its child; sandbox.py imports both from here).
KILL_GRACE = 1.0
REPORT_CAP = 8 << 20  # bytes of a run's result report kept

_write = os.write  # captured before the program can replace anything
_dumps = json.dumps
_now = time.monotonic
CANDIDATE = "<candidate>"
_DEFINITIONS = (type(os), type(lambda: 0), type, type(len))

class RunTimeout(BaseException):
    """Raised into the program by the interval timer; BaseException so `except Exception` can't eat it."""


_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = _repr.maxdeque = 8
_repr.maxdict = 6
_repr.maxlevel = 3
_repr.maxlong = 40


_HEX = frozenset("0123456789abcdefABCDEF")


def without_addresses(text):
    """Drop memory addresses (" at 0x7fa8fee01680") from a repr: they change with every process
    (address-space randomization), so a trace holding them would differ from run to run, and the
    model would condition on noise. No regular expressions: ``re`` is not loaded in ``-I -S``."""
    i = text.find(" at 0x")
    while i != -1:
        j = i + 6
        while j < len(text) and text[j] in _HEX:
            j += 1
        text = text[:i] + text[j:]
        i = text.find(" at 0x", i)
    return text


def _exit(code=None):
    """exit() / quit() as the site module defines them."""
    raise SystemExit(code)


def short(value):
    try:
        text = _repr.repr(value)
    except RunTimeout:
        raise  # the run's time is up: never swallow it here
    except BaseException as exc:  # a hostile __repr__ must not break tracing
        text = "<repr failed: %s>" % type(exc).__name__
    text = without_addresses(text)
    return text if len(text) <= 60 else text[:57] + "..."




class CappedText(io.TextIOBase):
    """A stdout that keeps the first `limit` characters and counts the rest. Like a real stdout it
    has a binary ``buffer`` (contest solutions write bytes through ``sys.stdout.buffer``), an
    encoding, ``flush`` and ``reconfigure``; bytes are decoded as UTF-8 into the same capped text.
    It also has a ``mode`` and the real descriptor 1 as ``fileno()``: a common contest template
    (PyRival's FastIO) wraps stdout through them and writes there with os.write, which the host
    reads (capped too)."""

    encoding = "utf-8"
    errors = "strict"
    mode = "w"
    name = "<stdout>"

    def fileno(self):
        return 1

    def __init__(self, limit):
        self.limit = limit
        self.parts = []
        self.size = 0
        self.dropped = 0
        self.buffer = CappedBytes(self)

    def writable(self):
        return True

    def isatty(self):
        return False

    def reconfigure(self, **settings):
        """Accepted and ignored: the text is always kept as UTF-8, line by line."""

    def write(self, text):
        text = str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self):
        return "".join(self.parts)


class CappedBytes(io.RawIOBase):
    """``sys.stdout.buffer``: bytes written here join the text stream (decoded incrementally, so a
    character split across two writes survives)."""

    def __init__(self, text):
        self.text = text
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)
        self.text.write(self.decoder.decode(data))
        return len(data)

    def close_decoder(self):
        self.text.write(self.decoder.decode(b"", final=True))


class Recorder:
    def __init__(self, head, tail):
        self.head_limit = head
        self.head = []
        self.tail = collections.deque(maxlen=tail)
        self.total = 0
        self.frames = {}  # id(frame) -> [previous line, {name: repr}]
        self.depth = 0
        self.last_exc = None

    def add(self, event):
        self.total += 1
        if len(self.head) < self.head_limit:
            self.head.append(event)
        else:
            self.tail.append(event)

    def _changes(self, frame, state):
        changed = []
        seen = state[1]
        for name, value in list(frame.f_locals.items()):
            if isinstance(value, _DEFINITIONS) or name.startswith("__"):
                continue  # imports and defs at module level are not runtime behaviour worth showing
            text = short(value)
            if seen.get(name) != text:
                seen[name] = text
                changed.append("%s=%s" % (name, text))
        return ", ".join(changed)

    def trace(self, frame, event, arg):
        if frame.f_code.co_filename != CANDIDATE:
            return None
        key = id(frame)
        if event == "call":
            self.depth += 1
            state = [None, {}]
            self.frames[key] = state
            args = self._changes(frame, state)
            if frame.f_code.co_name != "<module>":
                self.add(["call", frame.f_code.co_name, args, self.depth])
            return self.local
        return self.local

    def local(self, frame, event, arg):
        key = id(frame)
        state = self.frames.get(key)
        if state is None:
            state = self.frames[key] = [None, {}]
        if event == "line":
            if state[0] is not None:
                self.add(["line", state[0], self._changes(frame, state), self.depth])
            state[0] = frame.f_lineno
        elif event == "return":
            if state[0] is not None:
                self.add(["line", state[0], self._changes(frame, state), self.depth])
            if frame.f_code.co_name != "<module>":
                if self.last_exc is not None and self.last_exc[0] == key:
                    self.add(["unwind", frame.f_code.co_name, "", self.depth])
                else:
                    self.add(["return", frame.f_code.co_name, short(arg), self.depth])
            self.last_exc = None
            self.frames.pop(key, None)
            self.depth -= 1
        elif event == "exception":
            exc_type, exc_value = arg[0], arg[1]
            if state[0] is not None:
                self._changes(frame, state)  # the line did not complete: its record is the exception
                state[0] = None
            if exc_type is not RunTimeout:
                self.add(["exception", state[0] or frame.f_lineno, describe(exc_type, exc_value), self.depth])
            self.last_exc = (key, id(exc_value))
        return self.local

    def events(self):
        return self.head, list(self.tail), self.total - len(self.head) - len(self.tail)


def describe(exc_type, exc_value):
    try:
        message = str(exc_value)
    except RunTimeout:
        raise
    except BaseException:
        message = "<unprintable>"
    message = without_addresses(message)  # (messages quote reprs too)
    if len(message) > 200:
        message = message[:197] + "..."
    return "%s: %s" % (getattr(exc_type, "__name__", "Exception"), message) if message else getattr(exc_type, "__name__", "Exception")


def read_job():
    try:
        (size,) = _read_header()
    except EOFError:
        raise SystemExit("tracer: no job on stdin") from None
    try:
        return json.loads(_read_exact(size))
    except EOFError:
        raise SystemExit("tracer: truncated job") from None


def _read_header():
    """One line of numbers from stdin, the head of a frame (a job, or a fork server's job)."""
    header = b""
    while not header.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            raise EOFError
        header += chunk
        if len(header) > 64:
            raise SystemExit("tracer: malformed frame")
    return [int(x) for x in header.split()]


def _read_exact(n):
    data = bytearray()
    while len(data) < n:
        chunk = os.read(0, min(n - len(data), 1 << 20))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def read_rest():
    """The rest of stdin (after the job): the program's own input."""
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def stdin_as_file(data):
    """``data`` as a regular file on descriptor 0, positioned at its start."""
    try:
        fd = os.memfd_create("stdin")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
        os.dup2(fd, 0)
        os.close(fd)
    except OSError as exc:  # (e.g. stdin larger than the file-size limit)
        raise SystemExit("tracer: cannot give the program its stdin (%s)" % (exc,))


def confine(argv):
    """Apply the run's resource limits and drop root, before any job is read. Exits on failure."""
    import resource

    try:
        mem, cpu, nproc, fsize, nofile = (int(x) for x in argv[2].split(":"))
        program = bytes.fromhex(argv[3])
        uid = int(argv[4]) if len(argv) > 4 else None
    except (IndexError, ValueError):
        raise SystemExit("tracer: no valid limits and syscall filter on the command line; refusing to run")
    if not program or len(program) % 8:
        raise SystemExit("tracer: the syscall filter is empty or malformed; refusing to run")
    wanted = (
        (resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NOFILE, nofile, nofile),
        (resource.RLIMIT_CORE, 0, 0),
    )
    try:
        for what, soft, hard in wanted:
            _, current = resource.getrlimit(what)
            if current != resource.RLIM_INFINITY:  # never ask for more than is allowed already
                soft, hard = min(soft, current), min(hard, current)
            resource.setrlimit(what, (soft, hard))
            got_soft, got_hard = resource.getrlimit(what)
            if got_soft == resource.RLIM_INFINITY or got_soft > soft or got_hard > hard:
                raise OSError("limit %d not applied" % what)
        if uid is not None:
            if os.getuid() == 0 or os.geteuid() == 0:
                # Become the unprivileged sandbox user: this clears all capabilities and makes
                # RLIMIT_NPROC apply (it is not enforced for root).
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (uid, uid, uid, uid) or \
                    set(os.getgroups()) - {uid}:
                raise OSError("still uid %d, gid %d, groups %s" % (os.getuid(), os.getgid(), os.getgroups()))
        install_filter(program)
    except (OSError, ValueError) as exc:
        raise SystemExit("tracer: could not confine the run (%s); refusing to run" % (exc,))


def install_filter(program):
    """Install the seccomp BPF ``program`` on this process (and so on all it starts), then check it.
    no_new_privs first: the kernel requires it of an unprivileged process, and it makes sure no
    setuid binary can regain privileges afterwards."""
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    if libc.prctl(ulong(38), ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    if libc.prctl(ulong(22), ulong(2), ctypes.byref(fprog), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
    with open("/proc/self/status", "rb") as status:
        mode = [line.split()[1] for line in status if line.startswith(b"Seccomp:")]
    if mode != [b"2"]:
        raise OSError("seccomp filter not in force (Seccomp: %s)" % (mode,))


def main():
    if sys.argv[1:2] == ["serve"]:
        confine(sys.argv)
        serve()
        return
    result_fd = int(sys.argv[1])
    confine(sys.argv)
    job = read_job()
    execute(job, read_rest(), result_fd)


def execute(job, stdin, result_fd):
    """Run one job in this process: the program, its invocation traced, the result to ``result_fd``."""
    stdin_as_file(stdin)
    timeout = float(job.get("timeout", 2.0))
    recorder = Recorder(int(job.get("head", 40)), int(job.get("tail", 20)))
    out = CappedText(int(job.get("max_stdout", 4000)))
    result = {"status": "returned", "value": None, "exception": None}

    finished = []

    def on_alarm(signum, frame):
        if not finished:
            raise RunTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    sys.stdout = out
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8",
                                 errors="replace")
    sys.stdin.mode = "r"  # (as open() sets it; FastIO reads it)
    if not hasattr(builtins, "exit"):
        # `python -S` skips the site module, which defines exit() and quit(): contest code calls them.
        builtins.exit = builtins.quit = _exit
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    # The tracer's own code after the run (describing, reporting) uses builtins the program may
    # have replaced (builtins.len = None): they are put back as soon as the program is done.
    pristine = dict(builtins.__dict__)

    def restore_builtins():
        if builtins.__dict__ != pristine:
            builtins.__dict__.clear()
            builtins.__dict__.update(pristine)

    def program_over():
        """The program is done (the timer may not raise into the tracer now), untraced, and the
        builtins are the tracer's again."""
        finished.append(True)
        sys.settrace(None)
        restore_builtins()

    tracing = bool(job.get("trace", True))
    invocation = job.get("invocation")
    start = _now()
    try:
        prelude = compile(job.get("prelude") or "", "<prelude>", "exec")
        code = compile(job["program"], CANDIDATE, "exec")
        call = compile(invocation, "<call>", "eval") if invocation else None
        # Fires again every 0.1 s after the deadline: code that swallows one RunTimeout (a bare
        # `except BaseException` in the program) gets another until it gives up or is killed.
        signal.setitimer(signal.ITIMER_REAL, timeout, 0.1)
        # Module level is traced only for stdin/stdout programs: for function tasks it is just defs.
        exec(prelude, namespace)  # the task's own imports and helpers: not the candidate's behaviour
        if tracing and call is None:
            sys.settrace(recorder.trace)
        exec(code, namespace)
        if call is not None:
            if tracing:
                sys.settrace(recorder.trace)
            value = eval(call, namespace)
            sys.settrace(None)
            restore_builtins()
            result["value"] = short(value)
        else:
            result["status"] = "completed"
    except RunTimeout:
        program_over()
        result["status"] = "timeout"
    except SystemExit as exc:
        program_over()
        result["status"] = "exited"
        result["exception"] = "SystemExit: %s" % (exc.code,)
    except BaseException as exc:
        program_over()
        result["status"] = "raised"
        result["exception"] = describe(type(exc), exc)
    finally:
        program_over()
        signal.setitimer(signal.ITIMER_REAL, 0)
    out.buffer.close_decoder()
    head, tail, skipped = recorder.events()
    result.update(
        head=head, tail=tail, skipped=skipped, seconds=round(_now() - start, 4),
        stdout=out.getvalue(), stdout_dropped=out.dropped,
    )
    payload = _dumps(result).encode("utf-8", "replace")
    view = memoryview(payload)
    while view:
        view = view[_write(result_fd, view):]


# -- the fork server -------------------------------------------------------------------------------
# ``tracer.py serve LIMITS FILTER [UID]``: confined as above, then one job after another, each in a
# fresh child forked from this pristine, already-imported interpreter (a zygote): a run costs a fork
# instead of a new bubblewrap and interpreter (~30 ms of CPU). Between jobs every other process of
# the sandbox is killed and /tmp emptied, so no run sees what an earlier one left. This process is
# made non-dumpable, so a child (same uid) cannot read its memory or descriptors through /proc;
# ptrace is refused by the filter anyway. A child may still kill it: the host then sees the channel
# close, reports that run as crashed and starts another server. Protocol on stdin: one line
# "JOB_BYTES STDIN_BYTES", then the job (the JSON above) and the program's stdin; on stdout one line
# "EXIT TIMED_OUT OUT ERR REPORT" (the exit status as Popen gives it, 0/1, three byte counts) and
# those bytes: the child's raw stdout, stderr (each capped at the job's "cap") and its result.



def _set_dumpable(flag):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(ctypes.c_ulong(4), ctypes.c_ulong(flag), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:  # PR_SET_DUMPABLE
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def _child(job, stdin, pipes):
    """In the forked child: its own process group, the job's pipes on 1, 2 and 3, nothing else of
    the server's open, a fresh working directory, the job's CPU limit (the server's own, set from
    its command line, is its lifetime budget); then the job."""
    import resource

    code = 0
    try:
        os.setpgid(0, 0)
        out_w, err_w, res_w = pipes
        high = [os.dup(fd) for fd in (out_w, err_w, res_w)]  # (above 3, so the dup2s cannot collide)
        for target, fd in zip((1, 2, 3), high):
            os.dup2(fd, target)
        os.closerange(4, 1 << 16)
        os.mkdir("/tmp/run")
        os.chdir("/tmp/run")
        cpu = int(math.ceil(float(job.get("timeout", 2.0)))) + 1  # (as sandbox._tracer_args for a one-run sandbox)
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, soft), min(cpu + 1, hard)))
        execute(job, stdin, 3)
        import atexit

        atexit._run_exitfuncs()  # as the interpreter's own exit would (os._exit below skips it)
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except BaseException:
                pass
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        code = 1
        try:  # (on stderr, as an interpreter dying of it would)
            import traceback

            traceback.print_exc()
            sys.__stderr__.flush()
        except BaseException:
            pass
    os._exit(code)


def _collect(pid, fds, cap, deadline):
    """Read the child's three pipes (stdout and stderr capped at ``cap``, the result at 8 MiB) until
    they close and it exits, or until ``deadline``. Returns (exit status as Popen gives it, timed
    out, [out, err, report])."""
    import selectors

    caps = (cap, cap, REPORT_CAP)
    bufs = [bytearray(), bytearray(), bytearray()]
    sel = selectors.DefaultSelector()
    for i, fd in enumerate(fds):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, i)
    try:  # readable when the child exits: no polling for its end (a run is a few ms)
        exit_fd = os.pidfd_open(pid)
        sel.register(exit_fd, selectors.EVENT_READ, "exit")
    except (AttributeError, OSError):
        exit_fd = None
    status, timed_out, open_reads, exited_at = None, False, 3, None
    while True:
        now = _now()
        if status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)
                exited_at = now
        if open_reads == 0 and status is not None:
            break
        if exited_at is not None and now - exited_at > 0.2:
            break  # the child is gone; something it left holds a pipe open (killed below)
        if now >= deadline:
            timed_out = True
            break
        wait = 0.001 if exit_fd is None and open_reads == 0 else 0.05
        for key, _ in sel.select(timeout=min(wait if exited_at is None else 0.01, max(0.0, deadline - now))):
            if key.data == "exit":
                sel.unregister(exit_fd)
                continue
            if not read_capped(key.fd, bufs[key.data], caps[key.data]):
                sel.unregister(key.fd)
                open_reads -= 1
    sel.close()
    if exit_fd is not None:
        os.close(exit_fd)
    return status, timed_out, bufs


def read_capped(fd, buf, cap):
    """Read what the non-blocking ``fd`` has into ``buf``, keeping at most ``cap`` bytes (the rest
    is read and dropped, so the writer never blocks); False at its end. Shared with the host side
    (sandbox.py), which reads a run's pipes the same way."""
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return True
    except OSError:
        chunk = b""
    if not chunk:
        return False
    if len(buf) < cap:
        buf += chunk[: cap - len(buf)]
    return True


def _clean_up(own):
    """Kill every process of the sandbox but bubblewrap's init and this one, reap this one's
    children, and empty /tmp: the next job starts from nothing an earlier one left."""
    import signal as sig

    for _ in range(200):
        try:
            os.kill(-1, sig.SIGKILL)  # (in the PID namespace: all but init and the caller)
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        left = [p for p in os.listdir("/proc") if p.isdigit() and p not in ("1", own)]
        if not left:
            break
        time.sleep(0.002)
    else:
        raise SystemExit("tracer: processes of an earlier run survive; the server stops")

    # Depth first, making each directory the run left writable and searchable first (chmod 0 on
    # one is an ordinary thing for a program to do). A tree too deep for this ends the server.
    stack = [os.path.join("/tmp", entry) for entry in os.listdir("/tmp")]
    empty = []
    while stack:
        path = stack.pop()
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            empty.append(path)
            stack.extend(os.path.join(path, entry) for entry in os.listdir(path))
        else:
            os.unlink(path)
    for path in reversed(empty):
        os.rmdir(path)
    if os.listdir("/tmp"):
        raise SystemExit("tracer: /tmp could not be emptied; the server stops")


def serve():
    """Jobs from stdin, one at a time, each in a forked child; answers on stdout."""
    _set_dumpable(0)
    own = str(os.getpid())
    if own == "1" or not os.path.exists("/proc/1") or os.getpid() > 16:
        # Cleaning up with kill(-1) is only safe inside a PID namespace of its own (bubblewrap's).
        raise SystemExit("tracer: the fork server runs only as a small pid of its own PID namespace")
    channel = os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 1)  # (what it would print by mistake must not corrupt the channel)
    while True:
        try:
            job_len, stdin_len = _read_header()
            job = json.loads(_read_exact(job_len))
            stdin = _read_exact(stdin_len)
        except EOFError:
            return
        fds = [os.pipe() for _ in range(3)]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(channel)
            for r, _ in fds:
                os.close(r)
            _child(job, stdin, [w for _, w in fds])
        for _, w in fds:
            os.close(w)
        deadline = _now() + float(job.get("timeout", 2.0)) + KILL_GRACE
        status, timed_out, bufs = _collect(pid, [r for r, _ in fds], int(job.get("cap", 1 << 16)), deadline)
        for r, _ in fds:
            os.close(r)
        if status is None:
            status = -9  # killed below (timed out, or left its pipes to a survivor)
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
        # The answer first, then the clean-up: the host has the result while this process empties
        # the sandbox; the next job is read only after it.
        frame = b"%d %d %d %d %d\n" % (status, int(timed_out), *(len(b) for b in bufs)) + b"".join(bytes(b) for b in bufs)
        view = memoryview(frame)
        while view:
            view = view[_write(channel, view):]
        _clean_up(own)


if __name__ == "__main__":
    main()
