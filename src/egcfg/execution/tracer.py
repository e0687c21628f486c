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
import os
import reprlib
import signal
import sys
import time

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
    header = b""
    while not header.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            raise SystemExit("tracer: no job on stdin")
        header += chunk
    size = int(header)
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            raise SystemExit("tracer: truncated job")
        data += chunk
    return json.loads(data)


def stdin_as_file():
    """The rest of stdin (after the job) as a regular file on descriptor 0, positioned at its start."""
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        fd = os.memfd_create("stdin")
        view = memoryview(b"".join(chunks))
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
    result_fd = int(sys.argv[1])
    confine(sys.argv)
    job = read_job()
    stdin_as_file()
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
            result["value"] = short(value)
        else:
            result["status"] = "completed"
    except RunTimeout:
        finished.append(True)
        sys.settrace(None)
        result["status"] = "timeout"
    except SystemExit as exc:
        finished.append(True)
        sys.settrace(None)
        result["status"] = "exited"
        result["exception"] = "SystemExit: %s" % (exc.code,)
    except BaseException as exc:
        finished.append(True)
        sys.settrace(None)
        result["status"] = "raised"
        result["exception"] = describe(type(exc), exc)
    finally:
        finished.append(True)
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.settrace(None)
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


if __name__ == "__main__":
    main()
