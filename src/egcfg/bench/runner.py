"""Run a benchmark: tasks x agents x gamma schedule, stored as produced, resumable.

Unit of work: one agent's gamma schedule on one task. Units of a task run in parallel worker
processes (``workers`` > 1, each with its own model) or one after another in this process. With
``concurrency`` > 1, that many *units* run at once in threads of one process, sharing one model
and one sandbox pool: the transformers backend batches their decoding steps into shared forward
passes (the way to use a GPU), while their executions spread over the CPU cores; with ``workers``
> 1 as well, each of that many processes runs ``concurrency`` unit threads with its own model.
Units are taken best-first from a window of open tasks (``_Units``): first agents first, so a task's
later agents run only once the earlier ones failed, except at the end of a run, where the last
open tasks run their remaining agents side by side instead of one after another. When a
unit's program passes (visible tests; hidden tests under the ``paper`` protocol), the task is marked
solved and the other units stop at their next line boundary. Every attempt is written to the store
at once; a resumed run reuses stored attempts and finished tasks.

Final program of a task (honest protocol): the first passing attempt in agent order then gamma
order; if none passes, the attempt passing the most visible tests (earliest on ties). Only that one
program is scored on the hidden tests for pass@1. Every attempt is also scored afterwards for the
per-gamma / per-agent report; those scores never feed back into selection.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import threading
import time
from typing import Callable

from .. import prompts
from ..agents import Agent, FirstPass
from ..engine import Generator
from ..errors import EgcfgError
from ..execution.checks import TracedRuns, score_hidden
from ..execution.sandbox import Limits, Sandbox
from ..results import Attempt, Stats
from ..solver import ERROR_PREFIX, pick_final, run_schedule
from ..stopping import stop_on_sigterm, work_done
from ..task import Task
from .store import Store

log = logging.getLogger(__name__)


def _lines(attempt: Attempt) -> list[dict]:
    return [dataclasses.asdict(rec) for rec in attempt.lines]


def _ended_in_error(row: dict) -> bool:
    return (row["stop_reason"] or "").startswith(ERROR_PREFIX)


def _attempt_from_row(row: dict) -> Attempt:
    """A stored attempt, as the schedule loop sees it (no decoding, no stats)."""
    return Attempt(gamma=row["gamma"], code=row["code"], passed=bool(row["passed_visible"]),
                   tests_passed=row["tests_passed"], tests_total=row["tests_total"],
                   stop_reason=row["stop_reason"], stats=Stats())


class _Worker:
    """Model + sandbox of one process; runs units."""

    def __init__(self, model_spec: str | None, threads: int | None, run_timeout: float, sessions: int = 1,
                 seqs: int = 5, n_ctx: int | None = None, profile_to=None, model=None):
        from ..lm import load_model

        options = {"n_threads": threads} if threads else {}
        if n_ctx:
            options["n_ctx"] = n_ctx  # the agents' Config.n_ctx (a model spec's own ?n_ctx= wins)
        if sessions > 1:
            options["slots"] = sessions * seqs  # the hf backend's KV slots: one per sequence in flight
        # model: a model server's RemoteModel (hf_server.py), shared with the other workers
        self.model = model if model is not None else load_model(model_spec, **options)
        self.sandbox = Sandbox(Limits(timeout=run_timeout))
        self.profile_to = profile_to
        self._profile_name = f"profile-{os.getpid()}-{int(time.time())}.json"  # (pids repeat on a fresh machine)
        self._closed = threading.Event()
        if profile_to is not None and hasattr(self.model, "profile"):
            # rewritten every 20 s as well: a process killed hard still leaves most of its profile
            threading.Thread(target=self._profile_loop, name="egcfg-profile", daemon=True).start()

    def _profile_loop(self) -> None:
        while not self._closed.wait(20.0):
            self._write_profile()

    def close(self) -> None:
        self._closed.set()
        self.sandbox.close()
        self._write_profile()
        self.model.close()

    def _write_profile(self) -> None:
        """A backend that keeps a profile (the hf batcher: forwards, shapes, seconds per phase)
        leaves it in the run folder as ``profile-<pid>-<time>.json``, for benchmarks/gpu_grid.py."""
        if self.profile_to is None or not hasattr(self.model, "profile"):
            return
        import json
        from pathlib import Path

        try:
            data = self.profile_data()
            target = Path(self.profile_to) / self._profile_name
            target.with_suffix(".tmp").write_text(json.dumps(data))
            target.with_suffix(".tmp").replace(target)
        except Exception as exc:  # (a full or read-only disk...): the results matter more than the profile
            log.warning("could not write the backend profile: %s", exc)

    def profile_data(self) -> dict | None:
        """What the profile file holds, or None for a backend that keeps no profile."""
        if not hasattr(self.model, "profile"):
            return None
        return {"pid": os.getpid(), "model": self.model.describe(), **self.model.profile()}

    def run_unit(self, store: Store, task: Task, agent: Agent, agents: list[Agent], protocol: str,
                 policy: FirstPass, halted: Callable[[], bool] = lambda: False,
                 greedy_locks: dict | None = None) -> None:
        """One agent's gamma schedule on one task (solver.run_schedule), with the store behind it:
        attempts a resumed run already has are reused, except those that ended in an error (a
        server that refused a request, a full context), which are computed again and replaced;
        every new attempt is stored at once; under the paper protocol an attempt passes by its
        hidden tests. A pass marks the task solved for the other agents (``policy``).

        ``greedy_locks`` (one dict per task, shared by the task's units in threads): the greedy
        attempt, shared by agents of one prompt style, is decoded by the first unit that needs it
        while the others wait for it and copy it, instead of each decoding it at once."""
        rows = {a["gamma"]: a for a in store.attempts(task.task_id, lines=False) if a["agent"] == agent.name}
        failed = {g for g, a in rows.items() if _ended_in_error(a)}
        stored = {g: a for g, a in rows.items() if g not in failed}
        held: list = []

        def reuse(gamma: float) -> Attempt | None:
            if gamma in stored:  # resumed run: this attempt is already on disk
                return _attempt_from_row(stored[gamma])
            if gamma == 0.0 and greedy_locks is not None and not agent.config.always_refresh:
                lock = greedy_locks.setdefault(_greedy_key(agent, task), threading.Lock())
                lock.acquire()  # held until this unit has stored its greedy attempt (or gave up)
                held.append(lock)
            found = self._reuse_greedy(store, task, agent, agents, gamma)
            if found is not None:
                release()
            return found

        def release() -> None:
            while held:
                held.pop().release()

        def record(attempt: Attempt) -> bool:
            if attempt.gamma in stored:
                row = stored[attempt.gamma]
                ok = bool(row["passed_hidden"]) if protocol == "paper" else bool(row["passed_visible"])
            else:
                store.add_attempt(task.task_id, agent.name, attempt, _lines(attempt), replace=attempt.gamma in failed)
                ok = attempt.passed
                if protocol == "paper":
                    ok = score_hidden(attempt.code, task, self.sandbox)["passed"]
                    store.set_attempt_hidden(task.task_id, agent.name, attempt.gamma, ok)
            release()
            if ok:
                policy.mark()
            return ok

        generator = Generator(self.model, task, agent.config, self.sandbox, explain=True)
        try:
            run_schedule(generator, agent.config.gammas, TracedRuns(self.sandbox, task, Stats()),
                         cancelled=lambda: halted() or policy.solved(), reuse=reuse, record=record,
                         keep_going_on_error=True, agent=agent.name)
        finally:
            release()
            generator.close()

    @staticmethod
    def _reuse_greedy(store: Store, task: Task, agent: Agent, agents: list[Agent], gamma: float) -> Attempt | None:
        """gamma 0 is plain greedy decoding: identical for agents that share the prompt style and
        token cap, so it is computed once per task and copied (at zero cost) to the others."""
        if gamma != 0.0 or agent.config.always_refresh:
            return None
        same = {a.name for a in agents if a.name != agent.name and _greedy_key(a, task) == _greedy_key(agent, task)}
        for row in store.attempts(task.task_id, lines=False):
            if row["gamma"] == 0.0 and row["agent"] in same and not _ended_in_error(row):
                return _attempt_from_row(row)
        return None


def _n_ctx(agents: list[Agent]) -> int:
    """The model context a worker loads: the largest any agent asks for (Config.n_ctx)."""
    return max(a.config.n_ctx for a in agents)


def _greedy_key(agent: Agent, task: Task) -> tuple:
    """Agents with the same key decode the same greedy attempt on ``task`` (the prompt as the task
    gets it: ``auto`` and the format it stands for there are one prompt)."""
    cfg = agent.config
    return (cfg.prompt_style, prompts.resolve(cfg.prompt_format, task), cfg.max_tokens, cfg.max_line_tokens, cfg.n_ctx,
            cfg.always_refresh)


def _whole_task(worker: _Worker, store: Store, task: Task, position: int, agents: list[Agent], protocol: str,
                scorer: Sandbox, stop: threading.Event | None = None) -> bool:
    """One task in this thread: its agents in order (the first to pass stops the rest), then the
    final program. ``stop`` (a run-wide stop) ends it at the next line boundary, unfinalized."""
    halted = stop.is_set if stop is not None else (lambda: False)
    policy = FirstPass()
    for agent in agents:
        if halted():
            raise EgcfgError("run stopped")
        worker.run_unit(store, task, agent, agents, protocol, policy, halted)
    if halted():  # the attempts it has are stored; the task is finished on --resume
        raise EgcfgError("run stopped")
    return finalize(store, task, position, agents, protocol, scorer)


class _OpenTask:
    """A task whose units are being run by the unit threads of one process."""

    def __init__(self, position: int, task: Task, n_agents: int):
        self.position, self.task = position, task
        self.policy = FirstPass()
        self.pending = set(range(n_agents))  # agent indexes not yet taken
        self.running = 0
        self.greedy_locks: dict = {}


class _Units:
    """The units (task x agent) of a window of open tasks, taken best-first by unit threads.

    Best = lowest agent index, then earliest task: a task's second agent starts when a thread is
    free and no open task still waits for its first agent, i.e. mostly after the first one failed
    (as in a sequential run, whose attempts it mostly spends), but in the run's tail, when no new
    tasks are left to open, the last tasks' remaining agents run side by side. A solved task's
    units not yet taken are dropped. ``take`` also hands out "finalize" jobs: a task is finalized
    by the thread that finished its last running unit once nothing of it is left to run."""

    def __init__(self, next_task: Callable[[], tuple[int, Task] | None], n_agents: int, window: int):
        import heapq

        self._heapq = heapq
        self._next_task = next_task
        self._n_agents = n_agents
        self._window = window
        self._cv = threading.Condition()
        self._open: dict[int, _OpenTask] = {}
        self._heap: list[tuple[int, int]] = []  # (agent index, task position)
        self._exhausted = False

    def _refill(self) -> None:
        while not self._exhausted and len(self._open) < self._window:
            item = self._next_task()
            if item is None:
                self._exhausted = True
                return
            position, task = item
            state = self._open[position] = _OpenTask(position, task, self._n_agents)
            for k in state.pending:
                self._heapq.heappush(self._heap, (k, position))

    def take(self, stopped: Callable[[], bool]):
        """("unit", task state, agent index), ("finalize", task state), or None when all is done."""
        with self._cv:
            while not stopped():
                job = self.take_now()
                if job is not None:
                    return job
                if self.finished():
                    return None
                self._cv.wait(timeout=1.0)  # running units will open more work (or finish the tasks)
            return None

    def take_now(self, ready: Callable[[_OpenTask, int], bool] | None = None):
        """The best job that can start now, or None (without waiting: the Ray pool's driver loop
        calls this). A unit for which ``ready(state, k)`` is False stays queued for a later call."""
        with self._cv:
            self._refill()
            held = []
            try:
                while self._heap:
                    k, position = self._heapq.heappop(self._heap)
                    state = self._open.get(position)
                    if state is None or k not in state.pending:
                        continue
                    if state.policy.solved():
                        state.pending.clear()
                        if state.running == 0:
                            del self._open[position]
                            return "finalize", state
                        continue
                    if ready is not None and not ready(state, k):
                        held.append((k, position))
                        continue
                    state.pending.discard(k)
                    state.running += 1
                    return "unit", state, k
                return None
            finally:
                for item in held:
                    self._heapq.heappush(self._heap, item)

    def finished(self) -> bool:
        with self._cv:
            return not self._open and self._exhausted

    def put_back(self, state: _OpenTask, k: int) -> None:
        """A unit taken but not run to its end (its worker died): queue it again."""
        with self._cv:
            state.running -= 1
            state.pending.add(k)
            self._heapq.heappush(self._heap, (k, state.position))
            self._cv.notify_all()

    def done(self, state: _OpenTask) -> bool:
        """A unit of ``state`` ended; True: the caller finalizes the task now."""
        with self._cv:
            state.running -= 1
            self._cv.notify_all()
            if state.policy.solved():
                state.pending.clear()
            if state.running == 0 and not state.pending and self._open.get(state.position) is state:
                del self._open[state.position]
                return True
            return False


def _run_concurrent(next_task: Callable[[], tuple[int, Task] | None], agents, folder, worker: _Worker, protocol: str,
                    scorer: Sandbox, concurrency: int, tick: Callable[[bool], None]) -> None:
    """Units in ``concurrency`` threads, taken from the open tasks (``_Units``; ``next_task``
    opens the next task, None at the end). Each thread has its own store connection (SQLite
    connections are per thread); the model and sandboxes are shared."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    stop = threading.Event()  # set on an error or Ctrl-C: running tasks end at their next line
    units = _Units(next_task, len(agents), window=concurrency)

    def loop() -> None:
        store = Store(folder)
        try:
            while not stop.is_set():
                job = units.take(stop.is_set)
                if job is None:
                    return
                state = job[1]
                if job[0] == "unit":
                    try:
                        worker.run_unit(store, state.task, agents[job[2]], agents, protocol, state.policy,
                                        stop.is_set, state.greedy_locks)
                    finally:
                        last = units.done(state)
                    if not last:
                        continue
                if stop.is_set():  # the attempts it has are stored; the task is finished on --resume
                    return
                tick(finalize(store, state.task, state.position, agents, protocol, scorer))
        except BaseException:
            stop.set()
            raise
        finally:
            store.close()

    with ThreadPoolExecutor(concurrency, thread_name_prefix="egcfg-unit") as pool:
        futures = [pool.submit(loop) for _ in range(concurrency)]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            stop.set()
            raise


def _seqs(agents: list[Agent]) -> int:
    """Sequences one session holds at most: p_sol, p_dyn and the candidates."""
    return 2 + max(a.config.candidates for a in agents)


def _concurrent_in_this_process(todo, agents, folder, model_spec, run_timeout, protocol, scorer, concurrency, tick,
                                model=None):
    worker = _Worker(model_spec, None, run_timeout, sessions=concurrency, seqs=_seqs(agents), n_ctx=_n_ctx(agents),
                     profile_to=folder, model=model)
    pending = iter(todo)
    lock = threading.Lock()

    def next_task():
        with lock:
            return next(pending, None)

    try:
        _run_concurrent(next_task, agents, folder, worker, protocol, scorer, concurrency, tick)
    finally:
        worker.close()


def _concurrent_process(folder, agents, model_spec, run_timeout, protocol, concurrency, tasks_q, results_q,
                        server_conn=None) -> None:
    """Body of one of ``workers`` processes under --concurrency: its own model, sandbox pool and
    ``concurrency`` task threads, all pulling from one shared task queue. Several processes avoid
    one interpreter lock for every task's sampling and guidance, and feed the GPU from several
    launch queues."""
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    # Terminated by the parent (the run ends or stops): unwind like Ctrl-C, so the unit threads stop
    # at their next line and the worker closes (its backend profile written), instead of vanishing.
    stop_on_sigterm()
    try:
        scorer = Sandbox(Limits(timeout=run_timeout), warm=0)
        try:
            parent = os.getppid()

            def next_item():  # the next task; None at the end mark or when the parent is gone (killed hard)
                while os.getppid() == parent:
                    try:
                        return tasks_q.get(timeout=5)
                    except queue.Empty:
                        continue
                return None

            pending = iter(next_item, None)
            model = None
            if server_conn is not None:
                from ..lm.hf_server import RemoteModel

                model = RemoteModel(server_conn)
            _concurrent_in_this_process(pending, agents, folder, model_spec, run_timeout, protocol,
                                        scorer, concurrency, lambda ok: results_q.put(("task", ok)), model)
        finally:
            scorer.close()
    except BaseException as exc:  # reported to the parent, which stops the run with it
        results_q.put(("error", str(exc) or type(exc).__name__))
    finally:
        work_done()


def _model_servers(model_spec: str | None, workers: int) -> int:
    """How many model server processes serve the workers (hf_server.py: each one model, one KV
    cache, one CUDA context, one batcher thread whose forwards batch its workers' steps): one for a
    transformers model, ``server=N`` for N (at most one per worker: a server's batcher thread is
    one interpreter, and on the GPU grid it is the bottleneck), none with ``server=off`` and for
    other backends, which load one model per worker (llama.cpp) or are servers already."""
    from urllib.parse import parse_qsl

    from ..lm import model_servers, split_spec

    backend, _, query = split_spec(model_spec)
    if backend != "transformers":
        return 0
    n = model_servers(dict(parse_qsl(query)).get("server"))
    # (an invalid value starts one server, which refuses it in one line as it loads the model)
    return min(workers, 1 if n is None else n)


def _concurrent_processes(todo, agents, folder, model_spec, run_timeout, protocol, concurrency, workers, tick):
    from ..lm import hf_server  # (no torch at import: the parent stays light)

    ctx = multiprocessing.get_context("spawn")
    servers, conns = [], [None] * workers
    n_servers = _model_servers(model_spec, workers)
    if n_servers:
        # worker w is served by server w % n; each server's cache has KV slots for all of its
        # workers' sessions at once. All load at the same time.
        groups = [list(range(workers))[i::n_servers] for i in range(n_servers)]
        launched = []
        try:
            for g in groups:
                launched.append(hf_server.launch(ctx, model_spec, {"n_ctx": _n_ctx(agents),
                                                                   "slots": len(g) * concurrency * _seqs(agents)},
                                                 len(g), str(folder)))
            servers = [proc for proc, _, _ in launched]
            for g, (proc, ends, status) in zip(groups, launched):
                hf_server.wait_ready(proc, status)
                for w, end in zip(g, ends):
                    conns[w] = end
        except BaseException:
            for proc, _, _ in launched:
                hf_server.stop(proc)
            raise
    tasks_q, results_q = ctx.Queue(), ctx.Queue()
    for item in todo:
        tasks_q.put(item)
    for _ in range(workers * concurrency):  # one end mark per task thread
        tasks_q.put(None)
    procs = [ctx.Process(target=_concurrent_process, daemon=True,
                         args=(str(folder), agents, model_spec, run_timeout, protocol, concurrency, tasks_q, results_q,
                               conns[i]))
             for i in range(workers)]
    for proc in procs:
        proc.start()
    for conn in conns:  # the workers hold their ends now (the server sees EOF when one dies)
        if conn is not None:
            conn.close()
    try:
        left = len(todo)
        while left:
            try:
                kind, value = results_q.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise EgcfgError("all worker processes ended before the run was done") from None
                # A server ends by itself (exit code 0) once all its workers have closed their
                # pipes: with fewer tasks left than workers, some workers find only end marks and
                # their server is done early. Only a server that died (a crash, a kill) stops the run.
                if any(proc.exitcode not in (None, 0) for proc in servers):
                    raise EgcfgError("a model server process ended before the run was done") from None
                continue
            if kind == "error":
                raise EgcfgError(f"a worker process failed: {value}")
            left -= 1
            tick(value)
    finally:  # done, failed or interrupted: stored attempts stay; --resume finishes the rest
        deadline = time.monotonic() + (10 if left == 0 else 0)
        for proc in procs:  # after the last task they close themselves (profiles written)
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()  # (SIGTERM: they unwind like Ctrl-C)
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        for proc in servers:  # (each ends by itself once every pipe of its workers has closed)
            hf_server.stop(proc)
        for q in (tasks_q, results_q):  # release their locks and feeder threads now, not at exit
            q.close()
            q.cancel_join_thread()


# -- worker processes ---------------------------------------------------------------------------
_PROCESS_WORKER: _Worker | None = None
_PROCESS_ERROR = ""


def _init_process(model_spec, threads, run_timeout, n_ctx):
    # A failure here is kept and raised by the first unit, so it reaches the parent as that unit's
    # one-line error (an initializer that raises makes a Pool respawn workers forever, and
    # ProcessPoolExecutor prints the traceback and reports only "broken").
    global _PROCESS_WORKER, _PROCESS_ERROR
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    try:
        _PROCESS_WORKER = _Worker(model_spec, threads, run_timeout, n_ctx=n_ctx)
    except Exception as exc:
        _PROCESS_ERROR = str(exc) or type(exc).__name__


def _process_unit(folder: str, task: Task, agent: Agent, agents: list[Agent], protocol: str, solved) -> None:
    if _PROCESS_WORKER is None:
        raise EgcfgError(f"a worker process could not start: {_PROCESS_ERROR}")
    store = Store(folder)
    try:
        _PROCESS_WORKER.run_unit(store, task, agent, agents, protocol, FirstPass(solved, task.task_id))
    finally:
        store.close()


def _parallel_agents(todo, agents, store, model_spec, run_timeout, protocol, workers, scorer, tick) -> None:
    """``workers`` processes, each with its own model, run the units (agent x task) in task order;
    a task is finalized once all its units are done. A ProcessPoolExecutor, not a Pool: a worker
    that dies (out of memory, a crash in the backend) breaks it and the run stops with an error,
    where a Pool would wait for the lost unit forever."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ctx.Manager() as manager:
        solved = manager.dict()
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_process,
                                   initargs=(model_spec, threads, run_timeout, _n_ctx(agents)))
        try:
            pending = [(pos, task, [pool.submit(_process_unit, str(store.folder), task, agent, agents, protocol, solved)
                                    for agent in agents]) for pos, task in todo]
            for position, task, units in pending:
                for unit in units:
                    unit.result()
                tick(finalize(store, task, position, agents, protocol, scorer))
        except BrokenProcessPool:
            raise EgcfgError("a worker process died (out of memory, or the backend crashed); the finished "
                             "tasks are stored: --resume continues the run") from None
        finally:  # done, failed or interrupted: stop at once (shutdown alone waits for queued units)
            procs = list((getattr(pool, "_processes", None) or {}).values())  # no public terminate before 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(timeout=30)


def schedule_order(gammas_of: dict[str, list[float]]) -> Callable[[dict], tuple[int, int]]:
    """Sort key of stored attempt rows ({"agent", "gamma", ...}) in schedule order: agent order
    (the order of ``gammas_of``, agent name -> its gamma schedule), then the agent's gammas.
    Rows of agents not in ``gammas_of`` sort last."""
    index = {name: i for i, name in enumerate(gammas_of)}

    def key(row: dict) -> tuple[int, int]:
        gammas = list(gammas_of.get(row["agent"], ()))
        return (index.get(row["agent"], len(index)),
                gammas.index(row["gamma"]) if row["gamma"] in gammas else len(gammas))
    return key


def finalize(store: Store, task: Task, position: int, agents: list[Agent], protocol: str, sandbox: Sandbox) -> dict:
    """Pick the task's final program, score it on the hidden tests, store the task row."""
    rows = final_rows(store, task, agents)
    return store_final(store, task, position, rows, judge_final(rows, task, protocol, sandbox))


def final_rows(store: Store, task: Task, agents: list[Agent]) -> list[dict]:
    """The task's stored attempts of the run's agents, in schedule order."""
    order = schedule_order({a.name: list(a.config.gammas) for a in agents})
    names = {a.name for a in agents}
    return sorted((r for r in store.attempts(task.task_id, lines=False) if r["agent"] in names), key=order)


def judge_final(rows: list[dict], task: Task, protocol: str, sandbox: Sandbox) -> dict:
    """The half of ``finalize`` that runs programs (where the sandbox is: this process, or a Ray
    worker's machine): every attempt's hidden score that is missing (for the report only), the
    final pick (``pick_final``: by the visible verdicts, or under ``paper`` by the hidden ones),
    and the final program's hidden result. ``rows`` need only the attempts' keys, code and verdicts."""
    scored = {}
    hidden_of = {}
    for row in rows:
        hidden_of[(row["agent"], row["gamma"])] = row["passed_hidden"]
        if row["passed_hidden"] is None:
            ok = bool(score_hidden(row["code"], task, sandbox)["passed"])
            scored[(row["agent"], row["gamma"])] = hidden_of[(row["agent"], row["gamma"])] = ok
    judged = [{**row, "passed_hidden": hidden_of[(row["agent"], row["gamma"])]} for row in rows]
    judge = "passed_hidden" if protocol == "paper" else "passed_visible"
    final = pick_final(judged, passed=lambda r: r[judge], tests_passed=lambda r: r["tests_passed"]) if judged else None
    hidden = score_hidden(final["code"], task, sandbox) if final else {"passed": False, "status": "no code", "detail": ""}
    return {"scored": scored, "final": None if final is None else judged.index(final), "hidden": hidden}


def store_final(store: Store, task: Task, position: int, rows: list[dict], verdict: dict) -> bool:
    """The storing half of ``finalize``: the new hidden scores and the task row; its hidden verdict."""
    for (agent, gamma), ok in verdict["scored"].items():
        store.set_attempt_hidden(task.task_id, agent, gamma, ok)
    final = None if verdict["final"] is None else rows[verdict["final"]]
    hidden = verdict["hidden"]
    totals: dict = {}
    for row in rows:
        for key, value in row["stats"].items():
            if isinstance(value, (int, float)):
                totals[key] = totals.get(key, 0) + value
    totals["attempts"] = len(rows)
    store.add_task(task.task_id, position, final, bool(final and final["passed_visible"]), hidden, totals)
    return hidden["passed"]


def run_benchmark(tasks: list[Task], agents: list[Agent], store: Store, model_spec: str | None = None,
                  protocol: str = "honest", workers: int = 1, run_timeout: float = 2.0, progress: bool = True,
                  concurrency: int = 1, ray=None) -> list[dict]:
    """``ray`` (a ``ray_pool.RayOptions``): the units run on Ray actors instead (``workers`` of
    them, ``concurrency`` units each), this process keeping the store."""
    done = store.done_tasks()
    todo = [(i, t) for i, t in enumerate(tasks) if t.task_id not in done]
    verdicts = [bool(r["passed_hidden"]) for r in store.tasks()]  # tasks finished before a resume
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="task", dynamic_ncols=True)

    tick_lock = threading.Lock()

    def tick(passed: bool) -> None:
        with tick_lock:
            _tick(passed)

    def _tick(passed: bool) -> None:
        verdicts.append(passed)
        if bar:
            bar.set_postfix_str(f"pass@1 {100.0 * sum(verdicts) / len(verdicts):.1f}% ({protocol})")
            bar.update(1)

    if ray is not None:  # (no sandbox here: programs run on the workers' machines)
        from .ray_pool import run_on_ray

        try:
            run_on_ray(todo, agents, store, model_spec, run_timeout, protocol, workers, concurrency, tick, ray)
        finally:
            if bar:
                bar.close()
        return store.tasks()
    scorer = Sandbox(Limits(timeout=run_timeout), warm=0)
    try:
        if concurrency > 1 and workers > 1:
            _concurrent_processes(todo, agents, store.folder, model_spec, run_timeout, protocol, concurrency, workers, tick)
        elif concurrency > 1:
            _concurrent_in_this_process(todo, agents, store.folder, model_spec, run_timeout, protocol, scorer,
                                        concurrency, tick)
        elif workers <= 1:
            worker = _Worker(model_spec, None, run_timeout, n_ctx=_n_ctx(agents))
            try:
                for position, task in todo:
                    tick(_whole_task(worker, store, task, position, agents, protocol, scorer))
            finally:
                worker.close()
        else:
            _parallel_agents(todo, agents, store, model_spec, run_timeout, protocol, workers, scorer, tick)
    finally:
        scorer.close()
        if bar:
            bar.close()
    return store.tasks()
