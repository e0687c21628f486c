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
