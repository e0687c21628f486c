"""The benchmark scripts' own arithmetic (benchmarks/*.py), on made-up inputs with known answers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from gpu_grid import forward_cost_model  # noqa: E402


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
