"""One process that holds the transformers model for every worker process of a run.

Why: under ``bench --workers N --concurrency C`` each worker process had loaded its own model, KV
cache and CUDA graphs, and drove the GPU from its own CUDA context. Kernels of different contexts
do not run at the same time (the GPU switches between them), every context held its own weights
and cache (4 x 27 GB on the H200 at C = 96, and at C = 128 the fourth did not fit), and each
process's forwards were a quarter of the size they could have been. The workers are needed for
what takes many interpreters (each task's sampling, tracing and guidance bookkeeping, the
sandbox); the model is not. So with a server, the workers keep the engine and the tokenizer, and
every session's model work goes to one batcher (hf_batcher.py) in one process: one CUDA context,
one cache, one set of graphs, and forwards that batch the steps of every worker.

The protocol, one ``multiprocessing`` pipe per worker, messages ``(id, op, args)``:

* ``call``: a batcher Request's fields; the reply ``(id, (result, error))`` comes when it is done;
* ``take`` / ``give``: KV slots (the reply to ``take`` is the slots or the error);
* ``opened`` / ``closed``: a session began or ended (the batcher waits for every open session's
  request before a forward, within its wait).

A worker's session is an ordinary HFSession over a RemoteModel, whose batcher forwards each call.
A worker that goes away (its pipe closes) has its sessions closed for it; a server that goes away
fails every pending call of every worker with BackendFailure, which stops the run in one line.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import threading
import time
from pathlib import Path

from ..errors import BackendFailure, EgcfgError
from ..stopping import stop_on_sigterm, work_done
from .base import Capabilities, ModelLifetime, UsesTokenizer

log = logging.getLogger(__name__)
PROFILE_EVERY = 20.0  # seconds between rewrites of the server's profile file


# -- the server process ---------------------------------------------------------------------------
def serve(spec: str, options: dict, conns: list, status, profile_to: str | None) -> None:
    """Body of the server process: load the model, tell ``status`` ("ready" or the error), then
    serve every worker's pipe until all of them have closed (or SIGTERM)."""
    stop_on_sigterm()  # the parent ends it like Ctrl-C: profile written, model closed
    # Ctrl-C reaches the whole process group: the workers stop at their next line and need the
    # model until then; the parent ends the server after them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from . import load_model

        model = load_model(spec, **options)
        if not hasattr(model, "batcher"):
            raise EgcfgError("the model server runs transformers models only")
    except BaseException as exc:
        status.put(("error", str(exc) or type(exc).__name__))
        return
    info = {"tokenizer": model.tokenizer_args, "n_ctx": model.n_ctx, "n_vocab": model.n_vocab,
            "name": model.name, "source": model.source, "describe": {**model.describe(), "server": True}}
    status.put(("ready", os.getpid()))
    stop = threading.Event()
    name = f"profile-{os.getpid()}-{int(time.time())}.json"

    def write_profile() -> None:
        if profile_to is None:
            return
        try:
            target = Path(profile_to) / name
            data = {"pid": os.getpid(), "model": info["describe"], **model.profile()}
            target.with_suffix(".tmp").write_text(json.dumps(data))
            target.with_suffix(".tmp").replace(target)
        except Exception as exc:  # the results matter more than the profile
            log.warning("could not write the model server's profile: %s", exc)

    def profile_loop() -> None:
        while not stop.wait(PROFILE_EVERY):
            write_profile()

    write_profile()  # (at once too: the file names the server's pid)
    threading.Thread(target=profile_loop, name="egcfg-server-profile", daemon=True).start()
    threads = [threading.Thread(target=_serve_worker, args=(model, conn, info), daemon=True,
                                name=f"egcfg-server-{i}") for i, conn in enumerate(conns)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=1.0)
    except KeyboardInterrupt:
        pass
    finally:
        work_done()  # (stopped once: a second SIGTERM ends it at once, without a traceback)
        stop.set()
        write_profile()
        model.close()


def _serve_worker(model, conn, info: dict) -> None:
    """One worker's pipe: requests in (this thread), replies out (a sender thread, so the batcher
    thread only queues them)."""
    from .hf_batcher import Request

    out: queue.Queue = queue.Queue()
    opened = 0

    def sender() -> None:
        while True:
            msg = out.get()
            if msg is None:
                return
            try:
                conn.send(msg)
            except (OSError, EOFError, BrokenPipeError):
                return  # the worker is gone

    threading.Thread(target=sender, name="egcfg-server-send", daemon=True).start()
    try:
        out.put(("ready", info))
        while True:
            try:
                rid, op, args = conn.recv()
            except (EOFError, OSError):
                return
            if op == "call":
                kind, rows, copy, picks, fetch, job = args
                req = Request(kind, rows=rows, copy=copy, picks=picks, fetch=fetch, job=job,
                              on_done=lambda r, rid=rid: out.put((rid, (r.result, r.error))))
                try:
                    model.batcher.submit(req)
                except EgcfgError as exc:
                    out.put((rid, (None, exc)))
            elif op == "take":
                try:
                    out.put((rid, (model.take_slots(args), None)))
                except EgcfgError as exc:
                    out.put((rid, (None, exc)))
            elif op == "give":
                model.give_slots(args)
            elif op == "opened":
                opened += 1
                model.batcher.opened()
            elif op == "closed":
                opened -= 1
                model.batcher.closed()
    finally:
        for _ in range(opened):  # a worker that went away mid-run: the batcher stops waiting for it
            model.batcher.closed()
        out.put(None)


def start(ctx, spec: str, options: dict, workers: int, profile_to: str | None, timeout: float = 600.0):
    """Start the server process (``ctx``: a multiprocessing context) for ``workers`` workers and
    wait until its model is loaded. Returns (process, one pipe end per worker). A model that cannot
    load is an EgcfgError with the server's own one line."""
    proc, ends, status = launch(ctx, spec, options, workers, profile_to)
    wait_ready(proc, status, timeout)
    return proc, ends


def launch(ctx, spec: str, options: dict, workers: int, profile_to: str | None):
    """Start the server process without waiting for its model: (process, one pipe end per worker,
    its status queue, for ``wait_ready``). Several servers load at the same time so."""
    pairs = [ctx.Pipe() for _ in range(workers)]
    status = ctx.Queue()
    proc = ctx.Process(target=serve, args=(spec, options, [a for a, _ in pairs], status, profile_to),
                       daemon=True, name="egcfg-model-server")
    proc.start()
    for a, _ in pairs:
        a.close()  # the server's ends live in the server: a worker then sees EOF if the server dies
    return proc, [b for _, b in pairs], status


def wait_ready(proc, status, timeout: float = 600.0) -> None:
    """Wait until a launched server has loaded its model; stops it and raises EgcfgError if not."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                kind, value = status.get(timeout=1.0)
                break
            except queue.Empty:
                if not proc.is_alive():
                    raise EgcfgError("the model server process ended while loading the model") from None
                if time.monotonic() > deadline:
                    raise EgcfgError(f"the model server did not load the model in {timeout:.0f} s") from None
    except BaseException:
        stop(proc)
        raise
    finally:
        status.close()
        status.cancel_join_thread()
    if kind == "error":
        proc.join(timeout=10)
        raise EgcfgError(value)


def stop(proc, grace: float = 30.0) -> None:
    """End the server (after its workers: it also ends by itself once every pipe has closed)."""
    proc.join(timeout=grace if not proc.is_alive() else 0.0)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=grace)
    if proc.is_alive():
        proc.kill()
        proc.join()


# -- the worker side ------------------------------------------------------------------------------
class _RemoteBatcher:
    """The batcher interface HFSession uses (call, opened, closed), over the pipe to the server."""

    def __init__(self, conn):
        self.conn = conn
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, list] = {}
        self._ids = itertools.count()
        self._gone: str | None = None
        self.info = self._hello()
        threading.Thread(target=self._read, name="egcfg-remote-model", daemon=True).start()

    def _hello(self) -> dict:
        try:
            first = self.conn.recv()
        except (EOFError, OSError):
            raise EgcfgError("the model server went away before it answered") from None
        return first[1]

    def _send(self, msg) -> None:
        try:
            with self._send_lock:
                self.conn.send(msg)
        except (OSError, EOFError, BrokenPipeError):
            raise BackendFailure("the model server is gone") from None

    def _read(self) -> None:
        while True:
            try:
                rid, reply = self.conn.recv()
            except Exception:  # EOF, a reset, or a pipe closed under us (multiprocessing then
                break          # raises TypeError from inside recv, seen when the server died)
            with self._lock:
                slot = self._waiting.pop(rid, None)
            if slot is not None:
                slot[1] = reply
                slot[0].set()
        with self._lock:  # every pending call fails: the run stops with one line
            self._gone = "the model server is gone"
            pending, self._waiting = list(self._waiting.values()), {}
        for slot in pending:
            slot[1] = (None, BackendFailure(self._gone))
            slot[0].set()

    def ask(self, op: str, args):
        rid = next(self._ids)
        slot = [threading.Event(), None]
        with self._lock:
            if self._gone:
                raise BackendFailure(self._gone)
            self._waiting[rid] = slot
        self._send((rid, op, args))
        slot[0].wait()
        result, error = slot[1]
        if error is not None:
            raise error
        return result

    def tell(self, op: str, args=None) -> None:
        if not self._gone:
            self._send((next(self._ids), op, args))

    def call(self, request):
        # (a "sample" or "line" request carries a numpy generator: pickled, it draws in the
        # server, whose reply hands its state back)
        return self.ask("call", (request.kind, request.rows, request.copy, request.picks, request.fetch, request.job))

    def opened(self) -> None:
        self.tell("opened")

    def closed(self) -> None:
        try:
            self.tell("closed")
        except BackendFailure:
            pass  # (closing after the server went: nothing left to tell)

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


class RemoteModel(UsesTokenizer, ModelLifetime):
    """The model of a server process, as a worker sees it: the same sessions (HFSession) and
    tokenizer as HFModel, every forward and pick done by the server."""

    capabilities = Capabilities()

    def __init__(self, conn):
        from .hf_tokenizer import HFTokenizer

        self.batcher = _RemoteBatcher(conn)
        info = self.batcher.info
        self.n_ctx, self.n_vocab = info["n_ctx"], info["n_vocab"]
        self.name, self.source = info["name"], info["source"]
        self._describe = info["describe"]
        self.batcher_candidates = self._describe.get("candidates", "batcher") == "batcher"
        self.batcher_lines = self._describe.get("lines", "batcher") == "batcher"
        self.tok = HFTokenizer(*info["tokenizer"])
        self.tokenizer = self.tok.tokenizer

    def describe(self) -> dict:
        return dict(self._describe)

    def session(self, n_seqs: int):
        from .hf import HFSession

        return HFSession(self, n_seqs)

    def take_slots(self, n: int) -> list[int]:
        return self.batcher.ask("take", n)

    def give_slots(self, slots: list[int]) -> None:
        try:
            self.batcher.tell("give", list(slots))
        except BackendFailure:
            pass

    def close(self) -> None:
        self.batcher.close()
