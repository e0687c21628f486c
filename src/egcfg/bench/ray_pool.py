"""The benchmark's worker pool on a Ray cluster: ``egcfg bench ... --ray ADDRESS``.

Ray places the workers on the cluster's nodes, restarts one whose process dies and carries the
messages; the planning and the storing stay egcfg's own, shared with the local runner
(``runner.py``). This process, the *driver*, plans units (one agent's gamma schedule on one task)
best-first from a window of open tasks (``runner._Units``), sends each to a worker with the task's
stored attempts, and is the only writer of the run's SQLite store. A *worker* is a Ray actor
holding one model and its own sandbox pool (``runner._Worker``), so every program runs on the
worker's machine, final programs' hidden tests included (``runner.judge_final``); it runs up to
``concurrency`` units at once in threads (a transformers model batches their steps).

- A unit streams its results back as it makes them (a Ray generator: one message per stored
  attempt, hidden verdict or pass); the driver stores each at once, through the same store calls
  the local runner makes, so both paths store the same rows.
- Cancellation mirrors ``FirstPass``: each worker keeps the ids of solved tasks, which its units'
  ``cancelled`` hooks poll at every line boundary. The worker whose unit passes marks it at once;
  the driver, on that unit's message, tells every other worker (a method in its own concurrency
  group, so it never waits behind the units).
- The greedy attempt is shared by agents of one prompt style: a unit that would decode it while
  another unit of its task is decoding it waits in the driver's queue (not on a worker) and then
  copies it, as the local runner's units wait on a lock.
- Faults: a worker whose process dies is restarted by Ray (``max_restarts``); its units fail with
  ``RayActorError`` and go back to the queue, to run again on whichever worker is free, with what
  was stored in the meantime reused; an attempt is never stored twice (the store's keys, and a
  re-run reuses the stored ones). A driver that dies takes its workers with it (Ray ends a job's
  actors with its driver); ``--resume`` continues from the store, on the same or another cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..agents import Agent, FirstPass
from ..errors import EgcfgError
from ..task import Task
from .runner import (_Units, _Worker, _greedy_key, _n_ctx, _seqs, final_rows, judge_final, store_final)
from .store import Store

log = logging.getLogger(__name__)

MAX_RESTARTS = 3  # per worker: Ray starts a dead worker's process again this many times
MAX_LOSSES = 3  # per unit: a unit whose worker died this many times stops the run (it may be the cause)
UNAVAILABLE_SECONDS = 300.0  # a worker Ray cannot reach (nor declare dead) for this long is given up
PROFILE_SECONDS = 20.0  # backend profiles (the hf batcher's) fetched and written this often
INSTALL = "pip install 'egcfg[ray]'"
# Only what a unit needs of a stored attempt (its line-by-line record and stats stay in the store).
_UNIT_FIELDS = ("task_id", "agent", "gamma", "code", "passed_visible", "tests_passed", "tests_total", "stop_reason",
                "passed_hidden")
_JUDGE_FIELDS = ("agent", "gamma", "code", "passed_visible", "tests_passed", "passed_hidden")


@dataclass(frozen=True)
class RayOptions:
    """``address``: ``auto`` (a running cluster, found the way Ray finds one: $RAY_ADDRESS, then
    this machine's), ``local`` (start one on this machine for this run) or ``host:port`` (its head's
    GCS). ``gpus_per_worker`` None: 1 for a transformers model on a cluster with GPUs, else 0."""

    address: str
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EgcfgError(f"--ray needs the ray package, here and on every node: {INSTALL}") from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EgcfgError(f"--ray {address!r}: expected auto, local or HOST:PORT (the head node's address, "
                         f"as `ray start --head` prints it)")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, what: str) -> None:
    """A wrong address would make ray.init retry for many minutes (measured: 820 s): one TCP
    connection says at once whether anything listens there."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise EgcfgError(f"no Ray cluster reachable at {address} ({what}: {exc.strerror or exc}); start one with "
                         f"`ray start --head --port {port}`, or give another --ray address") from None


@contextlib.contextmanager
def _stderr_captured():
    """Ray's C++ client logs each failed connection attempt to file descriptor 2 (about one a
    second for 20 s when the cluster refuses the token): kept aside while connecting, so that a
    failure is one line. Yields a function that returns what was written."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        text = []

        def said() -> str:
            if not text:
                sink.seek(0)
                text.append(sink.read().decode(errors="replace"))
            return text[0]

        try:
            yield said
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            said()


def _fits(resources: dict, cpus: float, gpus: float, cap: int) -> int:
    """Workers of ``cpus`` CPUs and ``gpus`` GPUs (fractions allowed) one node's resources hold."""
    n = cap
    for need, have in ((cpus, resources.get("CPU", 0.0)), (gpus, resources.get("GPU", 0.0))):
        if need > 0:
            n = min(n, math.floor(have / need + 1e-9))
    return n


class Cluster:
    """A connection to the Ray cluster a run uses, checked before the run starts."""

    def __init__(self, options: RayOptions, model_spec: str | None, workers: int):
        from ..lm import split_spec
        from urllib.parse import parse_qsl

        for flag, value in (("cpus", options.cpus_per_worker), ("gpus", options.gpus_per_worker)):
            if value is not None and (value < 0 or (value > 1 and value != int(value)) or not math.isfinite(value)):
                # (Ray's rule: a fraction of one CPU or GPU, or whole ones)
                raise EgcfgError(f"--ray-{flag}-per-worker must be a fraction up to 1 or a whole number, not {value:g}")
        address = options.address.strip()
        local = address == "local"
        if local and "ray" not in sys.modules:
            # A cluster for this machine alone: Ray then uses the loopback address for its node
            # (its switch for single-machine platforms; read when ray is imported), where it would
            # otherwise bind the cluster to the machine's network address.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = _import_ray()
        self.ray = ray
        if not local:
            if address == "auto" or not address:
                target = os.environ.get("RAY_ADDRESS") or None
                if target is None:
                    try:  # (how ray.init finds a running cluster: its address file, then the running GCS processes)
                        from ray._private.services import canonicalize_bootstrap_address

                        target = canonicalize_bootstrap_address("auto")
                    except ConnectionError:
                        raise EgcfgError("--ray auto: no running Ray cluster found on this machine or in "
                                         "$RAY_ADDRESS; start one with `ray start --head`, or use --ray local")
                    except (ImportError, ValueError):  # (another Ray layout: ray.init finds it itself)
                        target = None
                if target:
                    _check_reachable(target, "--ray auto")
            else:
                _check_reachable(address, "--ray")
        level = logging.WARNING if log.isEnabledFor(logging.INFO) else logging.ERROR
        kwargs = {"logging_level": level, "log_to_driver": False}
        if local:
            kwargs["include_dashboard"] = False
            # Only messages travel through the object store (attempts with their line records), so a
            # modest one: Ray's default takes 30% of the memory, from /dev/shm, which containers keep small.
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            kwargs["object_store_memory"] = int(max(100 * 2**20, min(2 * 2**30, memory // 10)))
        try:
            with _stderr_captured() as said:
                ray.init(address=None if local else (address or "auto"), **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if "InvalidAuthToken" in said() or "InvalidAuthToken" in repr(exc.__cause__):
                raise EgcfgError(f"the Ray cluster at {address} wants its authentication token: set RAY_AUTH_MODE=token "
                                 f"and RAY_AUTH_TOKEN (or ~/.ray/auth_token) here as on its nodes") from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EgcfgError(f"cannot connect to the Ray cluster at {address}: {first}") from None
        if log.isEnabledFor(logging.INFO) and said().strip():
            sys.stderr.write(said())
        # ray.init installs a SIGTERM handler of its own (sys.exit): put egcfg's back, so that a
        # terminated run unwinds like Ctrl-C (workers stopped, stored results kept, one line).
        if threading.current_thread() is threading.main_thread():
            from ..stopping import stop_on_sigterm

            stop_on_sigterm()
        try:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            backend, _, query = split_spec(model_spec)
            gpus = options.gpus_per_worker
            total_gpus = sum(r.get("GPU", 0.0) for r in nodes)
            if gpus is None:
                on_cpu = dict(parse_qsl(query)).get("device", "") == "cpu"
                gpus = 1.0 if backend == "transformers" and not on_cpu and total_gpus > 0 else 0.0
            cpus = options.cpus_per_worker
            room = sum(_fits(r, cpus, gpus, workers) for r in nodes)
            if room < workers:
                total_cpus = sum(r.get("CPU", 0.0) for r in nodes)
                raise EgcfgError(
                    f"the Ray cluster at {address} has room for {room} of the {workers} workers asked for "
                    f"({cpus:g} CPU{f' and {gpus:g} GPU' if gpus else ''} each; its {len(nodes)} node(s) have "
                    f"{total_cpus:g} CPUs and {total_gpus:g} GPUs): add nodes, or ask for fewer --workers or "
                    f"smaller --ray-cpus-per-worker / --ray-gpus-per-worker")
        except BaseException:
            ray.shutdown()
            raise
        self.address, self.local = address, local
        self.cpus, self.gpus = cpus, gpus
        self.backend = backend
        self.nodes = nodes

    def describe(self, workers: int) -> str:
        """Where a run's units ran, for its stored provenance."""
        cpus = sum(r.get("CPU", 0.0) for r in self.nodes)
        gpus = sum(r.get("GPU", 0.0) for r in self.nodes)
        each = f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "")
        return (f"Ray {self.ray.__version__} ({'local' if self.local else self.address}): {workers} worker(s) of {each} "
                f"on {len(self.nodes)} node(s) with {cpus:g} CPUs and {gpus:g} GPUs")

    def close(self) -> None:
        """Disconnect (a ``local`` cluster stops with it)."""
        if self.ray.is_initialized():
            self.ray.shutdown()


# -- the worker (a Ray actor) -------------------------------------------------------------------
class _Relay:
    """The store as a unit on a worker sees it: the task's rows the driver sent with the unit, and
    writes that become messages to the driver, which stores them (the same calls, in order)."""

    def __init__(self, rows: list[dict], out: queue.Queue):
        self.rows, self.out = rows, out
        self.added = 0

    def attempts(self, task_id: str | None = None, lines: bool = False) -> list[dict]:
        return [dict(r) for r in self.rows if task_id is None or r["task_id"] == task_id]

    def add_attempt(self, task_id, agent, attempt, lines, replace=False) -> None:
        self.added += 1
        # (the line records travel once, as ``lines``: the store takes them from there)
        self.out.put(("attempt", task_id, agent, dataclasses.replace(attempt, lines=[], tokens=[]), lines, replace))

    def set_attempt_hidden(self, task_id, agent, gamma, passed) -> None:
        self.out.put(("hidden", task_id, agent, gamma, passed))


class _RelayedPass(FirstPass):
    """FirstPass over the worker's solved-task flags that also tells the driver of a pass."""

    def __init__(self, flags: dict, task_id: str, out: queue.Queue):
        super().__init__(flags, task_id)
        self.out, self.marked = out, False

    def mark(self) -> None:
        super().mark()
        self.marked = True
        self.out.put(("solved", self._key))


class UnitWorker:
    """One worker: a model, a sandbox pool, and the solved-task flags its units poll. Wrapped by
    ``ray.remote`` at run time (``_actor_class``), with ``concurrency`` threads for units."""

    def __init__(self, model_spec, threads, run_timeout, concurrency, agents, protocol):
        from .. import __version__
        from ..execution.sandbox import Limits, Sandbox

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.agents, self.protocol = agents, protocol
        self.solved_flags: dict = {}
        self.version = __version__
        self.error = ""
        self.worker = self.scorer = None
        try:  # a failure is reported by ready(): one line in the driver instead of Ray's traceback
            self.worker = _Worker(model_spec, threads, run_timeout, sessions=concurrency, seqs=_seqs(agents),
                                  n_ctx=_n_ctx(agents))
            self.scorer = Sandbox(Limits(timeout=run_timeout), warm=0)
        except Exception as exc:
            self.error = str(exc) or type(exc).__name__

    def ready(self) -> dict:
        return {"error": self.error, "version": self.version, "node": socket.gethostname(), "pid": os.getpid(),
                "profile": self.worker is not None and hasattr(self.worker.model, "profile"),
                "profile_name": getattr(self.worker, "_profile_name", "")}

    def run_unit(self, task: Task, k: int, rows: list[dict]):
        """One unit, as a stream of messages: ("attempt", ...), ("hidden", ...), ("solved", task
        id), then ("end", {...}), or ("error", text) if it raised."""
        out: queue.Queue = queue.Queue()
        store = _Relay(rows, out)
        policy = _RelayedPass(self.solved_flags, task.task_id, out)
        closed = threading.Event()  # the driver dropped the stream (the run stops)
        solved_before = policy.solved()  # (solved by another unit before this one began)

        def work() -> None:
            try:
                self.worker.run_unit(store, task, self.agents[k], self.agents, self.protocol, policy, closed.is_set)
                out.put(("end", {"attempts": store.added, "began": not solved_before,
                                 "stopped": policy.solved() and not policy.marked}))
            except BaseException as exc:
                out.put(("error", str(exc) or type(exc).__name__))
            finally:
                out.put(None)

        # run_schedule reports through callbacks, a generator can only yield from its own frame:
        # the unit runs in a thread of its own and this one forwards what it puts.
        threading.Thread(target=work, name=f"egcfg-unit-{task.task_id}-{k}", daemon=True).start()
        try:
            while (item := out.get()) is not None:
                yield item
        finally:
            closed.set()

    def judge(self, task: Task, rows: list[dict]) -> dict:
        return judge_final(rows, task, self.protocol, self.scorer)

    def solved(self, task_id: str) -> None:
        self.solved_flags[task_id] = True

    def profile(self) -> dict | None:
        return self.worker.profile_data() if self.worker is not None else None


_ACTOR_CLASSES: dict = {}


def _actor_class(ray, concurrency: int):
    """UnitWorker as a Ray actor class: ``concurrency`` threads for units, two for final-program
    scoring and one for control calls (solved flags, readiness, profiles), so neither waits
    behind the units. (Group sizes cannot be given to ``.options``: one class per size.)"""
    if concurrency not in _ACTOR_CLASSES:
        methods = {"run_unit": "units", "judge": "judge", "solved": "control", "ready": "control",
                   "profile": "control"}
        body = {name: ray.method(concurrency_group=group)(getattr(UnitWorker, name)) for name, group in methods.items()}
        cls = type("UnitWorker", (UnitWorker,), body)
        _ACTOR_CLASSES[concurrency] = ray.remote(concurrency_groups={"units": concurrency, "judge": 2, "control": 1})(cls)
    return _ACTOR_CLASSES[concurrency]


# -- the driver ---------------------------------------------------------------------------------
@dataclass
class _Member:
    """One worker as the driver sees it."""

    handle: object
    index: int
    state: str = "starting"  # starting | ready | recovering | dead
    unavailable_since: float | None = None  # (Ray's answer while it restarts the worker's process)
    info: dict = dataclasses.field(default_factory=dict)


@dataclass
class _Running:
    member: _Member
    state: object  # runner._OpenTask
    k: int
    greedy: tuple | None  # the (task position, greedy key) this unit is decoding, if it is


def _slim(row: dict, fields: tuple) -> dict:
    return {f: row[f] for f in fields}


class _Driver:
    def __init__(self, cluster: Cluster, store: Store, agents: list[Agent], protocol: str, tick, concurrency: int):
        self.ray = cluster.ray
        self.cluster, self.store, self.agents, self.protocol = cluster, store, agents, protocol
        self.tick, self.concurrency = tick, concurrency
        self.members: list[_Member] = []
        self.running: dict = {}  # unit stream -> _Running
        self.judging: dict = {}  # ref -> (member, task state, rows)
        self.recovering: dict = {}  # ready() ref -> member
        self.profiles: dict = {}  # profile() ref -> member
        self.to_judge: list = []  # task states waiting for a worker to score their final program
        self.greedy: dict = {}  # (task position, greedy key) -> the unit decoding that greedy attempt
        self.losses: dict = {}  # (task position, agent index) -> times its worker died under it
        self.next_profiles = time.monotonic() + PROFILE_SECONDS

    # -- workers --------------------------------------------------------------------------------
    def start(self, workers: int, model_spec, run_timeout: float) -> None:
        ray = self.ray
        actor = _actor_class(ray, self.concurrency)
        # llama.cpp: one compute thread per CPU the worker holds; other backends choose their own.
        threads = max(1, int(self.cluster.cpus)) if self.cluster.backend == "llama.cpp" else None
        for i in range(workers):
            handle = actor.options(num_cpus=self.cluster.cpus, num_gpus=self.cluster.gpus, max_restarts=MAX_RESTARTS,
                                   max_task_retries=0,  # a lost unit is re-queued by the driver, with its stored attempts
                                   scheduling_strategy="SPREAD").remote(
                model_spec, threads, run_timeout, self.concurrency, self.agents, self.protocol)
            self.members.append(_Member(handle, i))
        refs = {m.handle.ready.remote(): m for m in self.members}
        waited = time.monotonic()
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=60.0)
            if not done:
                log.warning("waiting for %d of %d Ray workers to start (loading the model, or waiting for room "
                            "on the cluster for %.0f s)", len(refs), workers, time.monotonic() - waited)
                continue
            for ref in done:
                self._became_ready(refs.pop(ref), self._get_ready(ref))
        log.info("Ray workers ready: %s", ", ".join(f"{m.info['node']} pid {m.info['pid']}"
                                                    for m in self._ready_members()))

    def _get_ready(self, ref) -> dict | None:
        """A worker's ready() answer; None when its actor is gone for good."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.ActorDiedError as exc:
            if "creation task" in str(exc):  # (its constructor raised outside egcfg's own guard)
                raise EgcfgError(f"a Ray worker could not start: {_last_line(exc)}") from None
            return None
        except ray.exceptions.RayActorError:
            return {"retry": True}  # restarting: ask again

    def _became_ready(self, member: _Member, info: dict | None) -> None:
        from .. import __version__

        if info is None:
            member.state = "dead"
            return
        if info.get("retry"):
            member.unavailable_since = member.unavailable_since or time.monotonic()
            if time.monotonic() - member.unavailable_since > UNAVAILABLE_SECONDS:
                log.warning("a Ray worker stayed unreachable for %.0f s: going on without it", UNAVAILABLE_SECONDS)
                member.state = "dead"
                return
            time.sleep(0.5)
            self.recovering[member.handle.ready.remote()] = member
            return
        member.unavailable_since = None
        if info["error"]:
            raise EgcfgError(f"a Ray worker could not load the model ({info['node']}): {info['error']}")
        if info["version"] != __version__:
            raise EgcfgError(f"the Ray worker on {info['node']} runs egcfg {info['version']}, this driver "
                             f"{__version__}: install the same egcfg on every node")
        member.info, member.state = info, "ready"

    def _lost(self, member: _Member, exc: BaseException) -> None:
        """A call on ``member`` failed because its process died: wait for Ray's restart of it."""
        if member.state == "ready":
            log.warning("the Ray worker on %s (pid %s) died: %s; its units run again", member.info.get("node"),
                        member.info.get("pid"), _last_line(exc))
            member.state = "recovering"
            self.recovering[member.handle.ready.remote()] = member

    # -- the run --------------------------------------------------------------------------------
    def run(self, todo: list[tuple[int, Task]]) -> None:
        ray = self.ray
        pending = iter(todo)
        units = _Units(lambda: next(pending, None), len(self.agents), window=len(self.members) * self.concurrency)
        while True:
            self._dispatch(units)
            if units.finished() and not self.running and not self.judging and not self.to_judge:
                return
            waitables = list(self.running) + list(self.judging) + list(self.recovering) + list(self.profiles)
            if not waitables:
                raise EgcfgError("every Ray worker died (see the cluster's logs); the stored results are kept: "
                                 "--resume continues the run")
            ready, rest = ray.wait(waitables, num_returns=1, timeout=1.0)
            if ready and rest:  # (everything else that is ready as well)
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for item in ready:
                if item in self.running:
                    self._unit_message(item, units)
                elif item in self.judging:
                    self._judged(item)
                elif item in self.recovering:
                    member = self.recovering.pop(item)
                    self._became_ready(member, self._get_ready(item))
                elif item in self.profiles:
                    self._write_profile(self.profiles.pop(item), item)
            if time.monotonic() >= self.next_profiles:
                self.fetch_profiles()

    def _ready_members(self) -> list[_Member]:
        return [m for m in self.members if m.state == "ready"]

    def _free(self, member: _Member) -> int:
        """Unit threads of ``member`` not taken (counting units of a dead incarnation until their
        streams report the death: a restarted worker never gets more units than threads)."""
        return self.concurrency - sum(1 for u in self.running.values() if u.member is member)

    def _dispatch(self, units: _Units) -> None:
        while self.to_judge and self._ready_members():
            self._judge(self.to_judge.pop(0))
        while True:
            free = [m for m in self._ready_members() if self._free(m) > 0]
            if not free:
                return
            job = units.take_now(ready=self._greedy_free)
            if job is None:
                return
            if job[0] == "finalize":
                self._judge(job[1])
                continue
            _, state, k = job
            member = max(free, key=self._free)  # the least busy worker
            rows = self.store.attempts(state.task.task_id, lines=False)
            greedy = self._decodes_greedy(state, k, rows)
            if greedy is not None:
                self.greedy[greedy] = (state.position, k)
            stream = member.handle.run_unit.remote(state.task, k, [_slim(r, _UNIT_FIELDS) for r in rows])
            self.running[stream] = _Running(member, state, k, greedy)
            log.debug("%s, agent %s: on %s (pid %s)", state.task.task_id, self.agents[k].name, member.info["node"],
                      member.info["pid"])

    def _decodes_greedy(self, state, k: int, rows: list[dict]) -> tuple | None:
        """The (task, greedy key) this unit will decode greedily, or None when it copies a stored one
        or has none (``_Worker._reuse_greedy``'s rule, on the rows the unit is sent)."""
        agent = self.agents[k]
        if agent.config.always_refresh or 0.0 not in agent.config.gammas:
            return None
        key = _greedy_key(agent, state.task)
        same = {a.name for a in self.agents if _greedy_key(a, state.task) == key}
        if any(r["gamma"] == 0.0 and r["agent"] in same and not (r["stop_reason"] or "").startswith("error:")
               for r in rows):
            return None
        return (state.position, key)

    def _greedy_free(self, state, k: int) -> bool:
        agent = self.agents[k]
        return agent.config.always_refresh or (state.position, _greedy_key(agent, state.task)) not in self.greedy

    def _unit_message(self, stream, units: _Units) -> None:
        ray = self.ray
        unit = self.running[stream]
        try:
            message = ray.get(next(stream))
        except StopIteration:
            self._unit_ended(stream, units)
            return
        except ray.exceptions.RayActorError as exc:
            self._unit_lost(stream, units, exc)
            return
        except ray.exceptions.RayError as exc:
            raise EgcfgError(f"a Ray worker failed: {_last_line(exc)}") from None
        kind = message[0]
        task_id = unit.state.task.task_id
        if kind == "attempt":
            _, tid, agent, attempt, lines, replace = message
            self.store.add_attempt(tid, agent, attempt, lines, replace=replace)
            if attempt.gamma == 0.0 and unit.greedy is not None:  # the waiting agents can copy it now
                self.greedy.pop(unit.greedy, None)
                unit.greedy = None
        elif kind == "hidden":
            _, tid, agent, gamma, passed = message
            self.store.set_attempt_hidden(tid, agent, gamma, passed)
        elif kind == "solved":
            unit.state.policy.mark()
            for member in self.members:  # (the unit's own worker knows already)
                if member is not unit.member and member.state == "ready":
                    member.handle.solved.remote(task_id)
        elif kind == "end":
            if message[1]["stopped"]:
                log.info("%s, agent %s: %s on %s (pid %s) after %d new attempt(s): another agent solved the task",
                         task_id, self.agents[unit.k].name, "stopped" if message[1]["began"] else "not begun",
                         unit.member.info.get("node"), unit.member.info.get("pid"), message[1]["attempts"])
        elif kind == "error":
            raise EgcfgError(f"a Ray worker failed on {task_id}: {message[1]}")

    def _unit_ended(self, stream, units: _Units) -> None:
        unit = self.running.pop(stream)
        if unit.greedy is not None:
            self.greedy.pop(unit.greedy, None)
        if units.done(unit.state):
            self._judge(unit.state)

    def _unit_lost(self, stream, units: _Units, exc: BaseException) -> None:
        unit = self.running.pop(stream)
        if unit.greedy is not None:
            self.greedy.pop(unit.greedy, None)
        key = (unit.state.position, unit.k)
        self.losses[key] = self.losses.get(key, 0) + 1
        if self.losses[key] >= MAX_LOSSES:
            raise EgcfgError(f"{unit.state.task.task_id}, agent {self.agents[unit.k].name}: its Ray worker died "
                             f"{MAX_LOSSES} times under it ({_last_line(exc)}); the stored results are kept")
        log.warning("%s, agent %s: its Ray worker died mid-unit; it runs again", unit.state.task.task_id,
                    self.agents[unit.k].name)
        units.put_back(unit.state, unit.k)
        self._lost(unit.member, exc)

    def _judge(self, state) -> None:
        """Score the task's final program on a worker's machine; the driver stores the verdict."""
        members = self._ready_members()
        if not members:
            self.to_judge.append(state)
            return
        rows = final_rows(self.store, state.task, self.agents)
        member = min(members, key=lambda m: sum(1 for j in self.judging.values() if j[0] is m))
        ref = member.handle.judge.remote(state.task, [_slim(r, _JUDGE_FIELDS) for r in rows])
        self.judging[ref] = (member, state, rows)

    def _judged(self, ref) -> None:
        ray = self.ray
        member, state, rows = self.judging.pop(ref)
        try:
            verdict = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self.to_judge.append(state)
            self._lost(member, exc)
            return
        except ray.exceptions.RayError as exc:
            raise EgcfgError(f"a Ray worker failed scoring {state.task.task_id}: {_last_line(exc)}") from None
        self.tick(store_final(self.store, state.task, state.position, rows, verdict))

    # -- profiles and the end ------------------------------------------------------------------
    def fetch_profiles(self) -> None:
        """Ask every worker whose backend keeps a profile for it (written when it comes)."""
        self.next_profiles = time.monotonic() + PROFILE_SECONDS
        asked = {id(m) for m in self.profiles.values()}
        for member in self._ready_members():
            if member.info.get("profile") and id(member) not in asked:
                self.profiles[member.handle.profile.remote()] = member

    def _write_profile(self, member: _Member, ref) -> None:
        """As ``_Worker._write_profile`` leaves it in the run folder, for benchmarks/gpu_grid.py."""
        try:
            data = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return  # (a worker that died: the next fetch asks its restart)
        if not data:
            return
        try:
            target = Path(self.store.folder) / member.info["profile_name"]
            target.with_suffix(".tmp").write_text(json.dumps({**data, "node": member.info["node"]}))
            target.with_suffix(".tmp").replace(target)
        except OSError as exc:  # (a full or read-only disk...): the results matter more than the profile
            log.warning("could not write a Ray worker's backend profile: %s", exc)

    def close(self, timeout: float) -> None:
        """Last profiles (within ``timeout``), then the workers are ended; stored results stay."""
        ray = self.ray
        try:
            self.fetch_profiles()
            deadline = time.monotonic() + timeout
            while self.profiles and time.monotonic() < deadline:
                done, _ = ray.wait(list(self.profiles), num_returns=len(self.profiles),
                                   timeout=max(0.0, deadline - time.monotonic()))
                for ref in done:
                    self._write_profile(self.profiles.pop(ref), ref)
                if not done:
                    break
        finally:
            for member in self.members:
                try:
                    ray.kill(member.handle, no_restart=True)
                except Exception:  # (already gone)
                    pass


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of a Ray error (its text ends with the cause; before it come tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def run_on_ray(todo, agents: list[Agent], store: Store, model_spec: str | None, run_timeout: float, protocol: str,
               workers: int, concurrency: int, tick, cluster: Cluster) -> None:
    """``runner.run_benchmark`` with ``workers`` Ray actors of ``concurrency`` unit threads each."""
    driver = _Driver(cluster, store, agents, protocol, tick, concurrency)
    finished = False
    try:
        driver.start(workers, model_spec, run_timeout)
        driver.run(todo)
        finished = True
    finally:
        driver.close(timeout=30.0 if finished else 10.0)
