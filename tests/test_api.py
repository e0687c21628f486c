"""The Python API's contract: what solve() accepts, what it refuses in one line, and that a model
it loads itself is freed when it returns (a model handed to it stays open)."""

import pytest

import egcfg
from egcfg import Config, EgcfgError, Task
from egcfg.lm.base import ModelLifetime
from test_line_boundaries import ScriptedModel

TASK = {"task_id": "max", "prompt": "Return the larger of two numbers.", "entry_point": "bigger",
        "tests": ["assert bigger(1, 2) == 2"]}
SCRIPT = ["def bigger(a, b):\n", "    return max(a, b)\n"]


class Closable(ScriptedModel, ModelLifetime):  # (every backend is a ModelLifetime)
    def __init__(self, script):
        super().__init__(script)
        self.closed = 0

    def close(self):
        self.closed += 1


def test_solve_frees_a_model_it_loaded_and_keeps_one_it_was_given(monkeypatch, sandbox):
    loaded = []

    def fake_load(spec=None, **options):
        loaded.append(Closable(SCRIPT))
        return loaded[-1]

    monkeypatch.setattr("egcfg.lm.load_model", fake_load)
    for _ in range(2):
        result = egcfg.solve(TASK, config={"gammas": [0.0]}, sandbox=sandbox)
        assert result.passed and "max(a, b)" in result.code
    assert [m.closed for m in loaded] == [1, 1]
    given = Closable(SCRIPT)
    with given:
        egcfg.solve(TASK, model=given, config=Config(gammas=(0.0,)), sandbox=sandbox)
        assert given.closed == 0
    assert given.closed == 1  # models are context managers


@pytest.mark.parametrize("call, words", [
    (lambda: Config(gammas=1.0), "sequence of numbers"),
    (lambda: Config(gammas=(1.0, 1.0)).validate(), "distinct"),
    (lambda: Config(gammas=(float("nan"),)).validate(), "finite"),
    (lambda: Config(candidates=2.5).validate(), "must be an int"),
    (lambda: egcfg.solve("tasks.json"), "load_tasks"),
    (lambda: egcfg.solve(TASK, config={"no_such_field": 1}), "config"),
    (lambda: egcfg.solve(TASK, config="fast"), "egcfg.Config or a dict"),
    (lambda: egcfg.solve(Task(task_id="t", prompt="p", entry_point="f", tests="assert f() == 1")), "tuple of strings"),
])
def test_bad_api_input_is_one_clear_error(call, words):
    with pytest.raises(EgcfgError, match=words):
        call()


def test_a_list_of_gammas_is_taken_as_the_tuple_it_means():
    cfg = Config(gammas=[0.0, 1.0]).validate()
    assert cfg.gammas == (0.0, 1.0) and hash(cfg)


def test_a_resumed_run_computes_failed_attempts_again(tmp_path, sandbox):
    """An attempt stored as an error (e.g. a server refused the request) is not final: the resumed
    unit runs it again and replaces the row; a good stored attempt is reused as it is."""
    from egcfg.agents import Agent
    from egcfg.bench.runner import _Worker
    from egcfg.bench.store import Store
    from egcfg.agents import FirstPass
    from egcfg.results import Attempt, Stats

    task = egcfg.task_from_dict(TASK)
    agent = Agent("a", Config(gammas=(0.0, 1.0)))
    worker = _Worker.__new__(_Worker)  # (no model loading: the scripted model stands in)
    worker.model, worker.sandbox = ScriptedModel(SCRIPT), sandbox
    store = Store(tmp_path / "run")
    try:
        failed = Attempt(gamma=0.0, code="", passed=False, tests_passed=0, tests_total=1,
                         stop_reason="error: the server refused the request", stats=Stats())
        store.add_attempt(task.task_id, agent.name, failed, [])
        worker.run_unit(store, task, agent, [agent], "honest", FirstPass())
        rows = store.attempts(task.task_id)
        assert [(r["gamma"], r["stop_reason"].startswith("error"), r["passed_visible"]) for r in rows] == [(0.0, False, 1)]
        created = rows[0]["created"]
        worker.run_unit(store, task, agent, [agent], "honest", FirstPass())
        assert [r["created"] for r in store.attempts(task.task_id)] == [created]  # reused, not recomputed
    finally:
        store.close()
