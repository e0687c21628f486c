"""The benchmark scripts' own arithmetic (benchmarks/*.py), on made-up inputs with known answers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from gpu_grid import cpu_means, forward_cost_model  # noqa: E402


def test_the_forward_cost_model_recovers_a_fixed_cost_and_a_rate():
    # replay.json rows: [kind, rows, tokens, attended, times the run ran it, ms]
    shapes = [["decode", r, 1, a, n, 2.0 + 40e-6 * r * a] for r, a, n in
              ((1, 512, 10), (64, 1024, 5), (128, 2048, 3), (32, 4096, 2))]
    shapes.append(["prefill", 4, 512, 1024, 1, 9.0])
    fit = forward_cost_model({"shapes": shapes}, "decode")
    assert fit["fixed_ms"] == 2.0 and fit["ns_per_row_token_position"] == 40.0 and fit["r2"] == 1.0
    assert fit["forwards"] == 20 and 0 < fit["fixed_share"] < 1
    assert forward_cost_model({"shapes": shapes}, "prefill") is None  # (one shape: nothing to fit)
    assert forward_cost_model(None, "decode") is None


def test_cpu_means_split_the_machine_between_egcfg_and_the_rest_where_sampled(tmp_path):
    # two calls: one of before the tree column (5 fields), one with it (6 fields)
    (tmp_path / "cpu-100.csv").write_text("1.0,80.0,16,40.0,python -m egcfg bench\n")
    (tmp_path / "cpu-200.csv").write_text("2.0,90.0,16,50.0,30.0,python -m egcfg bench\n"
                                          "3.0,70.0,16,30.0,20.0,python -m egcfg bench\n")
    got = cpu_means(tmp_path)
    assert got["machine_busy_percent"] == 80.0 and got["busiest_process_percent_of_one_core"] == 40.0
    assert got["busiest_process"] == "egcfg bench" and got["samples"] == 3
    assert got["egcfg_processes_percent_of_machine"] == 25.0 and got["other_percent_of_machine"] == 55.0
    old = cpu_means(tmp_path, only=[{"start": 100}])
    assert "egcfg_processes_percent_of_machine" not in old and old["machine_busy_percent"] == 80.0


def test_run_outcomes_count_how_the_signals_runs_ended():
    import json
    import sqlite3

    from gpu_grid import run_outcomes

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE attempts (lines TEXT)")
    lines = [{"signal": "Trace:\nResult: returned 3\n...\nResult: crashed (the sandbox server stopped)"},
             {"signal": None}, {"signal": "Result: timed out (possible infinite loop)"}]
    db.execute("INSERT INTO attempts VALUES (?)", (json.dumps(lines),))
    got = run_outcomes(db)
    assert got["returned"] == 1 and got["crashed"] == 1 and got["timeout"] == 1 and got["raised"] == 0


def test_run_wall_counts_every_call_and_trims_only_a_last_call_that_finished_tasks():
    """A resumed run's wall: all calls whole, a failed call too; the last call ends at its last
    finished task. A last call that finished none (it failed at once) counts whole, never negative
    (it once read 1.0 minutes for an 8.7-minute run)."""
    from gpu_grid import run_wall

    calls = [{"start": 0, "end": 484}, {"start": 900, "end": 939}]
    assert run_wall(calls, last_task=480) == 484 + 39  # the last task finished in the first call
    assert run_wall(calls, last_task=930) == 484 + 30  # the last call ends at its last task
    assert run_wall(calls[:1], last_task=None) == 484
