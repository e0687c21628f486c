import numpy as np
import pytest

from egcfg.guidance import guided_argmax, guided_logprobs, log_softmax


def test_log_softmax_normalises():
    z = np.array([1000.0, 1001.0, 999.0])  # would overflow without the shift
    lp = log_softmax(z)
    assert np.isclose(np.exp(lp).sum(), 1.0)
    assert lp.argmax() == 1


def test_gamma_zero_is_unconditional_argmax():
    rng = np.random.default_rng(0)
    for _ in range(50):
        z_sol, z_dyn = rng.normal(size=100), rng.normal(size=100)
        assert guided_argmax(z_sol, z_dyn, 0.0) == int(np.argmax(z_sol))


def test_gamma_one_is_conditional_argmax():
    rng = np.random.default_rng(1)
    for _ in range(50):
        z_sol, z_dyn = rng.normal(size=100), rng.normal(size=100)
        assert guided_argmax(z_sol, z_dyn, 1.0) == int(np.argmax(z_dyn))


def test_hand_computed_extrapolation():
    # Two tokens. p_sol = (0.8, 0.2), p_dyn = (0.6, 0.4).
    z_sol = np.log([0.8, 0.2])
    z_dyn = np.log([0.6, 0.4])
    # gamma 1: token 0 (0.6 > 0.4). gamma 3: lp = lp_sol + 3 (lp_dyn - lp_sol)
    # token 0: ln .8 + 3 ln(.6/.8) = -0.223 - 0.863 = -1.086 ; token 1: ln .2 + 3 ln 2 = -1.609 + 2.079 = 0.470
    assert guided_argmax(z_sol, z_dyn, 1.0) == 0
    assert guided_argmax(z_sol, z_dyn, 3.0) == 1
    scores = guided_logprobs(z_sol, z_dyn, 3.0)
    assert scores[0] == pytest.approx(np.log(0.8) + 3 * np.log(0.6 / 0.8))
    assert scores[1] == pytest.approx(np.log(0.2) + 3 * np.log(2.0))


def test_guidance_is_shift_invariant_per_branch():
    # Logits are defined up to a constant per branch; the rule works on log-probs, so shifts don't matter.
    z_sol = np.array([0.1, 2.0, -1.0, 0.5])
    z_dyn = np.array([1.0, 0.0, 3.0, 0.2])
    for gamma in (0.5, 1.5, 3.0):
        assert guided_argmax(z_sol, z_dyn, gamma) == guided_argmax(z_sol + 7, z_dyn - 100, gamma)


def test_half_gamma_interpolates():
    z_sol = np.log([0.5, 0.3, 0.2])
    z_dyn = np.log([0.1, 0.3, 0.6])
    lp = guided_logprobs(z_sol, z_dyn, 0.5)
    expected = 0.5 * (np.log([0.5, 0.3, 0.2]) + np.log([0.1, 0.3, 0.6]))
    assert np.allclose(lp, expected)
    assert guided_argmax(z_sol, z_dyn, 0.5) == 2  # geometric means .224, .3, .346
