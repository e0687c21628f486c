"""How reports state pass@1 when a run stopped part-way (no model)."""

from egcfg.bench.report import headline


def test_a_partial_run_says_so_with_the_bound_over_all_planned_tasks():
    done = {"finished": True, "pass_at_1": 55.0, "tasks": 100, "tasks_planned": 100, "pass_at_1_bound_over_planned": 55.0}
    assert headline(done) == "55.0%"
    partial = {"finished": False, "pass_at_1": 81.4, "tasks": 86, "tasks_planned": 100, "pass_at_1_bound_over_planned": 70.0}
    text = headline(partial)
    assert "81.4% of the 86 finished tasks" in text and "at least 70.0% of all 100 planned" in text
    assert "stopped part-way" in text
