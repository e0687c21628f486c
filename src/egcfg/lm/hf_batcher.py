"""The one thread that runs the transformers model for every session: continuous batching.

Sessions (one per solve, each in its own thread) submit requests and wait. The thread gathers what
arrives within ``wait`` seconds of the last arrival (or until every open session has a request
pending), then serves the batch in this order:

1. slot copies (forks);
2. every pending one-token step as one forward pass (``max_rows`` rows at most per forward), whose
   logits go to the device table of next-token logits;
3. every pending pick, the steps' own included, as one batched choice on the device
   (torch_picks.py); its token ids are the one host transfer of the batch, and the steps are done;
4. the prefills, chunk by chunk, packed into padded forwards (``prefill_budget`` padded tokens
   each, the oldest prefill always in). They need no host sync: their logits stay in the table
   for later picks.

Prefills are interleaved with decoding, not run to completion: a prefill still unfinished after a
forward stays in the thread's list, and the thread goes back to the queue as soon as any request
is waiting there. So a step waits for one prefill forward at most, never for every prompt that
happens to be pending (measured on the H200 grid run: 31-42 ms per prefill forward, several per
batch, while a decode forward took 6-11 ms). And the first prefill forward of a batch is launched
before the host waits for the batch's picks, so the GPU runs it while the host hands the picked
tokens back and gathers the next batch.

A "sample" request (a refresh's candidates, HFSession.sample_forks) is stepped by the thread itself:
its forks are copied when it arrives, and from then on every batch carries its live candidates'
rows in the decode forward and their picks in the one device call, until each candidate stops
(candidates.Sampling); the session hears back once, with the texts. A "line" request (one decoded
line, HFSession.decode_line) is stepped the same way: its branches' rows and its pick in every
batch until the line ends (decoding.Line); the session hears back once per line, with its tokens.
So per token the host does a few dictionary lookups per job here, and no session round trip.

So a task waiting for a long prefill, or for its traces in the sandbox, never holds up the others'
decoding steps. ``profile()`` says what the thread did: forwards by kind with their shapes, and
seconds per phase (waiting for requests, running steps, picking, prefilling).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter

import numpy as np

from ..errors import BackendFailure, ContextFull, EgcfgError
from . import torch_picks
from .hf_graphs import LENGTHS

PREFILL_CHUNK = 512  # tokens per prefill row and forward (bounds the attention mask and activations)


def as_error(exc: Exception) -> EgcfgError:
    """Errors of one request (context full, no slots) stay EgcfgError; anything else means the
    backend itself failed (CUDA out of memory, a device assert): BackendFailure stops a run."""
    return exc if isinstance(exc, EgcfgError) else BackendFailure(f"hf backend: {type(exc).__name__}: {exc}")


_EVENTS = threading.Lock()  # (a request's lazy Event against its finish: see Request.done)


class Request:
    """kind "step": rows (slot, position, [token]); "prefill": one row (slot, start, tokens);
    "copy": (src, dst, n); "pick": picks only; "read": the logits of ``rows`` slots to the host;
    "sample": one row (base slot, its length) forked into ``job``'s slots and stepped by the
    thread until every candidate stops (candidates.Sampling); its result is (texts, tokens sampled,
    steps, the generator's state); "line": ``job`` = (decoding.Rule, first token or None, limit,
    the line's bytes so far, {seq: (slot, length)}, n_ctx), stepped until the line ends; its result is (tokens, next token,
    tokens fed per seq, steps, the rule as it ended, the error that refused its last step or None).
    ``picks`` (torch_picks rows) are chosen after the request's own forward; ``fetch`` asks for the
    logits on the host as well (tests and the contract need them; decoding does not)."""

    __slots__ = ("kind", "rows", "copy", "picks", "fetch", "_done", "finished", "result", "error", "on_done", "offset", "job")

    def __init__(self, kind: str, rows=None, copy=None, picks=None, fetch: bool = False, on_done=None, job=None):
        self.kind, self.rows, self.copy, self.picks, self.fetch = kind, rows, copy, picks, fetch
        # kind "sample": (slots, temperature, top_p, horizon, max_tokens, rng, n_ctx); "line": see above
        self.job = job
        # Made only for a caller that waits (call, or a test): most requests are the batcher's own
        # steps and the model server's, answered through on_done (an Event is a lock and a
        # condition to build: 9% of the thread's time, batcher_host.py).
        self._done: threading.Event | None = None
        self.finished = False
        self.result = None
        self.error = None
        self.on_done = on_done  # called with the request once it is done (the model server's reply)
        self.offset = 0  # a prefill: how many of its tokens are in the cache already

    @property
    def done(self) -> threading.Event:
        """Set once the request is done (made on first use; see __init__)."""
        with _EVENTS:
            if self._done is None:
                self._done = threading.Event()
                if self.finished:
                    self._done.set()
            return self._done

    def finish(self) -> None:
        with _EVENTS:
            self.finished = True
            event = self._done
        if event is not None:
            event.set()
        if self.on_done is not None:
            self.on_done(self)


class Batcher:
    def __init__(self, model, wait: float, prefill_rows: int | None = None):
        self.model = model
        self.wait = wait
        self.prefill_rows = prefill_rows
        self._cv = threading.Condition()
        self._queue: list[Request] = []
        self._prefilling: list[Request] = []  # prefills begun, not finished (only the thread touches it)
        self._jobs: list = []  # "sample" and "line" requests under way (_Candidates, _Line; only the thread touches it)
        self._sessions = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.forwards = 0
        self.rows = 0
        # profile: forwards by (kind, rows, padded length, attended length rounded up to 256; the
        # longest row's, or with the fused kernels' one-token forwards the rows' mean: see _forward)
        self.shapes: Counter = Counter()
        self.seconds = Counter()
        self.tokens = Counter()
        self.requests = Counter()  # requests served, by kind

    def opened(self) -> None:
        with self._cv:
            self._sessions += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="egcfg-hf", daemon=True)
                self._thread.start()

    def closed(self) -> None:
        with self._cv:
            self._sessions -= 1
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            queued, self._queue = self._queue, []
            self._cv.notify_all()
        self._fail(queued, BackendFailure("the model was closed"))

    def profile(self) -> dict:
        return {"forwards": self.forwards, "step_rows": self.rows, "requests": dict(self.requests),
                "tokens": dict(self.tokens), "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "shapes": [[kind, rows, length, attended, n] for (kind, rows, length, attended), n
                           in sorted(self.shapes.items())]}

    @staticmethod
    def _fail(requests: list[Request], error: Exception) -> None:
        for r in requests:
            if not r.finished:
                r.error = error
                r.finish()

    def submit(self, request: Request) -> None:
        """Queue a request without waiting for it (its ``on_done`` says when it is done)."""
        with self._cv:
            if self._stopped:
                raise BackendFailure("the model was closed")
            self._queue.append(request)
            self._cv.notify_all()

    def call(self, request: Request):
        self.submit(request)
        while not request.done.wait(timeout=5.0):
            if self._thread is None or not self._thread.is_alive():
                raise BackendFailure("the hf backend's batcher thread is gone")
        if request.error is not None:
            raise request.error
        return request.result

    def _gather(self) -> list[Request] | None:
        """The requests to serve next; None once stopped. With prefills under way the thread does
        not wait for more: it takes what is queued (maybe nothing) and goes on prefilling."""
        with self._cv:
            t0 = time.perf_counter()
            while not self._queue and not self._stopped and not self._prefilling and not self._jobs:
                self._cv.wait()
            if self._stopped:
                return None
            deadline = time.monotonic() + 20 * self.wait
            # (a session whose candidates or line the thread is stepping has its request in already)
            while len(self._queue) + len(self._jobs) < self._sessions and not self._prefilling:
                seen = len(self._queue)
                now = time.monotonic()
                if now >= deadline:
                    break
                self._cv.wait(timeout=min(self.wait, deadline - now))
                if len(self._queue) == seen:  # nothing new for `wait`: the others are busy elsewhere
                    break
            batch, self._queue = self._queue, []
            self.seconds["waiting"] += time.perf_counter() - t0
            return batch

    def _loop(self) -> None:
        batch: list[Request] | None = []
        try:
            while True:
                batch = self._gather()
                if batch is None:
                    self._fail(self._prefilling + [c.request for c in self._jobs],
                               BackendFailure("the model was closed"))
                    return
                self._serve(batch)
        except BaseException as exc:  # never leave a session waiting on a dead thread
            with self._cv:
                self._stopped = True
                queued, self._queue = self._queue, []
            self._fail((batch or []) + queued + self._prefilling + [c.request for c in self._jobs],
                       BackendFailure(f"hf backend: {exc}"))
            raise

    def _serve(self, batch: list[Request]) -> None:
        self.requests.update(req.kind for req in batch)
        for req in batch:
            if req.kind == "copy":
                self._run(req, lambda r: self.model.copy_slot(*r.copy))
            elif req.kind == "read":
                self._run(req, lambda r: self.model.to_host(self.model.next_logits[list(r.rows)]))
        # candidates being sampled and lines being decoded: the next step of each job under way,
        # and the first request of each job that arrives (candidates: from forks copied here)
        inner = [c.next_step() for c in list(self._jobs)]
        inner = [r for r in inner if r is not None]
        for req in batch:
            if req.kind in ("sample", "line"):
                first = self._start_sampling(req) if req.kind == "sample" else self._start_line(req)
                if first is not None:
                    inner.append(first)
        steps = [r for r in batch if r.kind == "step"] + [r for r in inner if r.kind == "step"]
        t0 = time.perf_counter()
        if steps:
            steps = self._run_steps(steps)
        self.seconds["steps"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        picking = self._launch_picks(steps + [r for r in batch if r.kind == "pick"] + [r for r in inner if r.kind == "pick"])
        self.seconds["picks"] += time.perf_counter() - t0
        for req in batch:
            if req.kind == "prefill" and req.rows[0][2]:
                self._prefilling.append(req)
            elif req.kind == "prefill":  # nothing to add: the slot's logits are as they were
                self._run(req, lambda r: self._fetch(r.rows)[0].copy() if r.fetch else None)
        t0 = time.perf_counter()
        if self._prefilling:
            # one forward now, queued on the device behind the picks: it runs while the host
            # waits for the picks and then hands their tokens back
            self._prefill_forward()
        self.seconds["prefills"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        self._finish_picks(picking)
        self.seconds["picks"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        while self._prefilling and not self._queue and not self._jobs:  # (a racy peek is enough: a miss costs one forward)
            self._prefill_forward()
        self.seconds["prefills"] += time.perf_counter() - t0

    def _start_sampling(self, req: Request) -> Request | None:
        """A "sample" request: fork the base slot into the candidates' slots; returns the request
        of the candidates' first picks (None if the forks failed: the request has its error)."""
        from ..candidates import Sampling

        base, n = req.rows[0]
        slots, temperature, top_p, horizon, max_tokens, rng, n_ctx = req.job
        try:
            self.model.copy_slots(base, slots, n)
        except Exception as exc:
            req.error = as_error(exc)
            req.finish()
            return None
        job = _Candidates(self, req, Sampling(self.model, slots, temperature, top_p, horizon, max_tokens, rng), n, n_ctx)
        self._jobs.append(job)
        return job.first_picks()

    def _start_line(self, req: Request) -> Request | None:
        """A "line" request: its first pick, or (its first token known) its first step."""
        from ..decoding import Line

        rule, first, limit, start, held, n_ctx = req.job
        job = _Line(self, req, Line(self.model, rule, first, limit, start), held, n_ctx)
        self._jobs.append(job)
        return job.first_request()

    def _run(self, req: Request, fn) -> None:
        try:
            req.result = fn(req)
        except Exception as exc:  # handed to the waiting session, which raises it
            req.error = as_error(exc)
        req.finish()

    def _forward(self, kind: str, rows: list[tuple[int, int, list[int]]]):
        """One forward of ``rows``; its logits go to the slots' rows of the model's table."""
        self.model.forward(rows)
        self.forwards += 1
        n = max(len(t) for _, _, t in rows)
        if n == 1 and self.model.fused is not None:
            # the fused one-token attention reads each row's own length: such a forward costs
            # what one of its rows at their mean length costs, so that is what the profile keeps
            attended = sum(start for _, start, _ in rows) / len(rows) + 1
        else:
            attended = max(start for _, start, _ in rows) + n
        self.shapes[(kind, len(rows), n, -(-int(attended) // 256) * 256)] += 1
        self.tokens[kind] += sum(len(t) for _, _, t in rows)
        self.tokens[kind + "_padded"] += len(rows) * n

    def _fetch(self, rows) -> np.ndarray:
        """The rows' next-token logits on the host, in row order."""
        return self.model.to_host(self.model.next_logits[[slot for slot, _, _ in rows]])

    def _launch_picks(self, requests: list[Request]):
        """Every pick of the batch in one device call, launched; ``_finish_picks`` waits for it and
        gives each request its own tokens."""
        requests = [r for r in requests if r.error is None]
        rows = [p for r in requests for p in (r.picks or ())]
        try:
            pending = torch_picks.launch(self.model.next_logits, rows) if rows else None
        except Exception as exc:
            self._fail(requests, as_error(exc))
            return None
        return requests, pending

    def _finish_picks(self, picking) -> None:
        if picking is None:
            return
        requests, pending = picking
        try:
            tokens = pending.tokens() if pending is not None else []
        except Exception as exc:
            self._fail(requests, as_error(exc))
            return
        at = 0
        for r in requests:
            n = len(r.picks or ())
            picked = tokens[at:at + n]
            at += n
            r.result = (r.result, picked) if r.kind == "step" else picked
            r.finish()

    def _prefill_forward(self) -> None:
        """One packed forward of pending prefills' next chunks. The oldest prefill is always in it
        (none starves); the others join in arrival order while the forward's padded size (rows x
        its longest chunk, rounded up to a graph bucket: hf_graphs.LENGTHS) stays within
        ``prefill_budget`` tokens and its rows within ``prefill_rows``. A prefill is done, and
        leaves the list, once its last chunk is in."""
        def chunk(r):
            slot, start, tokens = r.rows[0]
            return slot, start + r.offset, tokens[r.offset:r.offset + PREFILL_CHUNK]

        def padded(n: int) -> int:
            j = bisect.bisect_left(LENGTHS, n)
            return LENGTHS[j] if j < len(LENGTHS) else n

        budget = self.model.prefill_budget
        head = chunk(self._prefilling[0])
        group, width = [(self._prefilling[0], head)], padded(len(head[2]))
        for r in self._prefilling[1:]:
            if self.prefill_rows is not None and len(group) >= self.prefill_rows:
                break
            row = chunk(r)
            wider = max(width, padded(len(row[2])))
            if (len(group) + 1) * wider <= budget:
                group.append((r, row))
                width = wider
        try:
            self._forward("prefill", [row for _, row in group])
            host = self._fetch([row for _, row in group]) if any(r.fetch for r, _ in group) else None
        except Exception as exc:
            error = as_error(exc)
            for r, _ in group:
                r.error = error
                r.finish()
            self._prefilling = [r for r in self._prefilling if not r.finished]
            return
        for i, (r, row) in enumerate(group):
            r.offset += len(row[2])
            if r.offset >= len(r.rows[0][2]):
                # (a copy, not a view: a view would pin the whole block)
                r.result = host[i].copy() if r.fetch else None
                r.finish()
        self._prefilling = [r for r in self._prefilling if not r.finished]

    def _run_steps(self, steps: list[Request]) -> list[Request]:
        """One forward (or a few, of ``max_rows`` rows) for every pending step; the requests that
        fetch logits get them on the host. Returns the requests, done once their picks are."""
        rows = [row for r in steps for row in r.rows]
        fetch = any(r.fetch for r in steps)
        try:
            if fetch:  # (tests and the contract: rows in request order, logits to the host)
                for i in range(0, len(rows), self.model.max_rows):
                    self._forward("decode", rows[i:i + self.model.max_rows])
                host = self._fetch(rows)
            else:
                # (grouped by length only where a forward attends every row to its longest one's
                # length: not with the fused kernels, whose attention reads each row's own)
                groups = (decode_groups(rows, self.model.max_rows) if self.model.fused is None
                          else [rows[i:i + self.model.max_rows] for i in range(0, len(rows), self.model.max_rows)])
                for group in groups:
                    self._forward("decode", group)
                host = None
            self.rows += len(rows)
        except Exception as exc:
            self._fail(steps, as_error(exc))
            return []
        at = 0
        for r in steps:
            r.result = host[at:at + len(r.rows)].copy() if r.fetch else None
            at += len(r.rows)
        return steps


class _Candidates:
    """One "sample" request under way: its Sampling state machine (candidates.py) driven by the
    batcher thread, one step per batch, alongside every other session's work. The steps and picks
    it makes are internal requests, whose ``on_done`` takes their tokens. Every live candidate is
    fed at every step, so each one's next position is the base's length plus the steps so far."""

    def __init__(self, batcher: Batcher, request: Request, job, base_len: int, n_ctx: int):
        self.batcher, self.request, self.job, self.base_len, self.n_ctx = batcher, request, job, base_len, n_ctx
        self.feeds: dict[int, int] | None = None  # the next step's {slot: token}; None while in flight

    def first_picks(self) -> Request:
        slots = self.job.seqs
        return Request("pick", picks=self.job.rows(slots, int),
                       on_done=lambda r: self._took(slots, r, stepped=False))

    def next_step(self) -> Request | None:
        if not self.feeds:
            return None
        order, feeds = list(self.feeds), self.feeds
        self.feeds = None
        pos = self.base_len + self.job.steps
        if pos + 1 > self.n_ctx:  # (what the session-driven loop's step would refuse)
            self._end(error=ContextFull(self.n_ctx, pos + 1))
            return None
        return Request("step", rows=[(slot, pos, [feeds[slot]]) for slot in order],
                       picks=self.job.rows(order, int),
                       on_done=lambda r: self._took(order, r, stepped=True))

    def _took(self, order: list[int], r: Request, stepped: bool) -> None:
        if r.error is not None:
            self._end(error=r.error)
            return
        tokens = r.result[1] if stepped else r.result
        self.feeds = self.job.took(order, tokens, stepped)
        if not self.feeds:
            sampled = self.job.result()
            self.request.result = (sampled.texts, sampled.tokens, self.job.steps, self.job.rng.bit_generator.state)
            self._end()

    def _end(self, error: Exception | None = None) -> None:
        if self in self.batcher._jobs:
            self.batcher._jobs.remove(self)
        if error is not None:
            self.request.error = error
        self.request.finish()


class _Line:
    """One "line" request under way: its decoding.Line driven by the batcher thread, one step per
    batch. ``held``: {seq: (slot, length)} of the session's branches when the line began; the
    lengths advance with every token fed."""

    def __init__(self, batcher: Batcher, request: Request, line, held: dict, n_ctx: int):
        self.batcher, self.request, self.line, self.n_ctx = batcher, request, line, n_ctx
        self.slots = {seq: slot for seq, (slot, _) in held.items()}
        self.lengths = {seq: n for seq, (_, n) in held.items()}
        self.move = None  # the next step: (token, seqs to feed, pick); None while in flight

    def first_request(self) -> Request | None:
        try:
            pick = self.line.first_pick()
            if pick is None:  # the previous line's last step picked it
                self._take(self.line.first)
                return self.next_step()
            return Request("pick", picks=torch_picks.rows_of([pick], self.slots.__getitem__),
                           on_done=lambda r: self._picked(r, stepped=False))
        except Exception as exc:
            self._end(error=as_error(exc))
            return None

    def next_step(self) -> Request | None:
        if self.move is None:
            return None
        (token, feeds, pick), self.move = self.move, None
        longest = max(self.lengths[seq] for seq in feeds) + 1
        if longest > self.n_ctx:  # (what the session's own step would refuse)
            error = ContextFull(self.n_ctx, longest)
            if self.line.over:  # the line's last step: the code may end here (decoding.Line.refused)
                self.line.refused(error, feeds)
                self._end()
            else:
                self._end(error=error)
            return None
        rows = []
        for seq in feeds:
            rows.append((self.slots[seq], self.lengths[seq], [token]))
            self.lengths[seq] += 1
        picks = torch_picks.rows_of([pick], self.slots.__getitem__) if pick is not None else None
        return Request("step", rows=rows, picks=picks, on_done=lambda r: self._picked(r, stepped=True))

    def _take(self, token: int) -> None:
        try:
            move = self.line.take(token)
        except Exception as exc:  # (never raised into the batcher thread: the session gets it)
            self._end(error=as_error(exc))
            return
        if move is not None and not move[0]:  # (a line's last step with nothing to feed: SOL lags)
            self.line.stepped(None)
            move = None
        if move is None:
            self._end()
        else:
            self.move = (token, *move)

    def _picked(self, r: Request, stepped: bool) -> None:
        if r.error is not None:
            self._end(error=r.error)
            return
        if not stepped:
            self._take(r.result[0])
            return
        picked = r.result[1]
        token = self.line.stepped(picked[0] if picked else None)
        if token is None:
            self._end()
        else:
            self._take(token)

    def _end(self, error: Exception | None = None) -> None:
        if self in self.batcher._jobs:
            self.batcher._jobs.remove(self)
        if error is not None:
            self.request.error = error
        else:
            line = self.line
            self.request.result = (line.tokens, line.next, dict(line.fed), line.steps, line.rule, line.unfed)
        self.request.finish()


def decode_groups(rows: list, max_rows: int, min_rows: int = 64, worth: float = 0.6) -> list[list]:
    """One-token rows split into forwards of similar cache lengths. A forward attends every row to
    the longest row's length (its keys are gathered to that length), so rows of 300 and 3,000 cached
    tokens in one forward cost like 3,000 each. Sorted by length, the rows are cut where that saves
    at least 40% of the attended positions (each piece at least ``min_rows`` rows: a forward
    has a fixed cost too), recursively, and into pieces of at most ``max_rows``."""
    rows = sorted(rows, key=lambda r: r[1])
    out: list[list] = []

    def split(part: list) -> None:
        n = len(part)
        best, cut = n * (part[-1][1] + 1), None
        for i in range(min_rows, n - min_rows + 1):
            cost = i * (part[i - 1][1] + 1) + (n - i) * (part[-1][1] + 1)
            if cost < best:
                best, cut = cost, i
        if cut is not None and best <= worth * n * (part[-1][1] + 1):
            split(part[:cut])
            split(part[cut:])
        else:
            out.extend(part[i:i + max_rows] for i in range(0, n, max_rows))

    split(rows)
    return out
