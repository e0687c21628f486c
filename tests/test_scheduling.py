"""How --concurrency hands out units (task x agent) and how decode rows are grouped: no model."""

import threading

from egcfg.bench.runner import _Units
from egcfg.lm.hf_batcher import decode_groups
from egcfg.task import task_from_dict


def tasks(n):
    return [(i, task_from_dict({"task_id": f"t{i}", "prompt": "p", "entry_point": "f", "tests": ["assert f()"]}))
            for i in range(n)]


def source(items):
    it = iter(items)
    lock = threading.Lock()

    def next_task():
        with lock:
            return next(it, None)
    return next_task


def test_units_first_agents_first_and_the_tail_runs_side_by_side():
    units = _Units(source(tasks(3)), n_agents=3, window=2)
    never = lambda: False  # noqa: E731
    a = units.take(never)
    b = units.take(never)
    assert (a[0], a[1].position, a[2]) == ("unit", 0, 0) and (b[1].position, b[2]) == (1, 0)
    # the window is full (2 open tasks): the next unit is a second agent, of the earliest task
    c = units.take(never)
    assert (c[1].position, c[2]) == (0, 1)
    # task 0 is solved by its first agent: its last pending agent is dropped, and it is
    # finalized by whoever ends its last running unit
    a[1].policy.mark()
    assert units.done(a[1]) is False  # agent 1 of task 0 still runs
    d = units.take(never)
    assert (d[1].position, d[2]) == (1, 1)
    assert units.done(c[1]) is True   # the caller finalizes task 0 now
    e = units.take(never)             # task 2 opened in task 0's place
    assert (e[1].position, e[2]) == (2, 0)
    for unit in (b, d, e):
        assert units.done(unit[1]) is False
    left = []
    while True:
        job = units.take(never)
        if job is None:
            break
        left.append((job[1].position, job[2]))
        if units.done(job[1]):
            left.append(("finalize", job[1].position))
    assert left == [(2, 1), (1, 2), ("finalize", 1), (2, 2), ("finalize", 2)]  # agent index first


def test_units_stop_when_asked():
    units = _Units(source(tasks(2)), n_agents=1, window=2)
    assert units.take(lambda: True) is None


def test_decode_groups_split_only_where_it_pays():
    short = [(slot, 100, [1]) for slot in range(100)]
    long = [(100 + slot, 3000, [1]) for slot in range(100)]
    groups = decode_groups(short + long, max_rows=1024)
    assert sorted(len(g) for g in groups) == [100, 100]
    assert {r[1] for r in groups[0]} == {100} and {r[1] for r in groups[1]} == {3000}
    similar = [(slot, 1000 + slot, [1]) for slot in range(200)]
    assert [len(g) for g in decode_groups(similar, max_rows=1024)] == [200]
    assert [len(g) for g in decode_groups(similar, max_rows=64)] == [64, 64, 64, 8]
    few = [(0, 10, [1]), (1, 4000, [1])]
    assert len(decode_groups(few, max_rows=1024)) == 1  # each piece would be under min_rows


class _Recorder:
    """A stand-in for HFModel as the batcher sees it: forwards are recorded, logits are made up
    (token t + 1 wins at each row), and a hook may act inside a forward (as another session
    submitting meanwhile would)."""

    def __init__(self, prefill_budget=1024, max_rows=64):
        import torch

        self.prefill_budget, self.max_rows = prefill_budget, max_rows
        self.fused = None  # HFModel's fused forward, absent here: the unfused decode groups apply
        self.next_logits = torch.zeros((8, 32))
        self.log, self.hook = [], None

    def forward(self, rows):
        self.log.append(("prefill" if len(rows[0][2]) > 1 or rows[0][1] == 0 else "decode",
                         [(slot, start, len(toks)) for slot, start, toks in rows]))
        for slot, _, toks in rows:
            self.next_logits[slot] = 0.0
            self.next_logits[slot, (toks[-1] + 1) % 32] = 1.0
        if self.hook:
            hook, self.hook = self.hook, None
            hook()

    def to_host(self, t):
        return t.numpy()


def _batcher(model):
    from egcfg.lm.hf_batcher import Batcher

    b = Batcher(model, wait=0.0)
    b.opened()
    return b


def test_a_step_waits_for_one_prefill_forward_not_for_the_whole_prompt():
    from egcfg.lm.hf_batcher import Request

    model = _Recorder(prefill_budget=512)
    b = _batcher(model)
    step = Request("step", rows=[(1, 5, [7])], picks=[("greedy", 1, -1, 0.0, 0.0, 1.0, 0.0)])
    model.hook = lambda: b.submit(step)  # the step arrives while the first chunk is on its way
    try:
        assert b.call(Request("prefill", rows=[(0, 0, list(range(1500)))])) is None
        assert step.done.wait(5) and step.error is None and step.result[1] == [8]
    finally:
        b.stop()
    kinds = [kind for kind, _ in model.log]
    # chunk 1, then the step, then chunks 2 and 3 (before: all three chunks first)
    assert kinds == ["prefill", "decode", "prefill", "prefill"], model.log
    assert [rows[0][1:] for _, rows in model.log if _ == "prefill"] == [(0, 512), (512, 512), (1024, 476)]


def test_packed_prefills_keep_the_oldest_in_every_forward_within_the_budget():
    from egcfg.lm.hf_batcher import Request

    model = _Recorder(prefill_budget=1024)
    b = _batcher(model)
    b._sessions = 3  # (three sessions: the batcher gathers until all three have asked)
    reqs = [Request("prefill", rows=[(0, 0, list(range(1100)))]), Request("prefill", rows=[(1, 0, [1] * 10)]),
            Request("prefill", rows=[(2, 0, [2] * 300)], fetch=True)]
    try:
        for r in reqs:
            b.submit(r)
        for r in reqs:
            assert r.done.wait(5) and r.error is None
    finally:
        b.stop()
    shapes = [rows for _, rows in model.log]
    # 2 rows padded to 512 fit the budget of 1024, a third does not: the oldest (slot 0) and the
    # next in line go first; slot 2 rides with slot 0's second chunk; slot 0's last 76 tokens alone
    assert shapes == [[(0, 0, 512), (1, 0, 10)], [(0, 512, 512), (2, 0, 300)], [(0, 1024, 76)]], shapes
    assert int(reqs[2].result.argmax()) == 3  # a fetched prefill gets its own row's logits


def test_sampling_rows_are_its_picks_as_torch_picks_rows_with_the_same_draws():
    import numpy as np

    from egcfg.candidates import Sampling
    from egcfg.lm import torch_picks

    for temperature in (0.0, 0.7):
        a = Sampling(None, [4, 5, 6], temperature, 0.95, 2, 100, np.random.default_rng(3))
        b = Sampling(None, [4, 5, 6], temperature, 0.95, 2, 100, np.random.default_rng(3))
        for order in ([4, 5, 6], [6, 4], [5]):
            slot_of = lambda s: s + 10  # noqa: E731
            assert a.rows(order, slot_of) == torch_picks.rows_of(b.picks(order), slot_of)
        assert a.rng.random() == b.rng.random()  # (and the generators agree afterwards)


def test_a_request_made_for_a_waiter_after_it_finished_reads_done():
    from egcfg.lm.hf_batcher import Request

    r = Request("pick")
    r.finish()
    assert r.done.is_set() and r.done.wait(0)
    late = Request("pick")
    event = late.done
    assert not event.is_set()
    late.finish()
    assert event.is_set()
