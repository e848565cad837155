"""The estimator's yardstick: regressions of a parameter on x against known answers."""

import numpy as np
import pytest

from bmodesep.core.npe import yardstick
from bmodesep.errors import DataError


def _columns(y, rng, sigma, n_columns=10):
    return y[:, None] + sigma * rng.normal(size=(y.size, n_columns))


def test_linear_data_reach_the_optimal_correlation():
    # x_j = y + noise(sigma), y ~ N(0, 1): the best predictor is the column mean, whose
    # correlation with y is sqrt(S / (1 + S)) with S = n_columns / sigma^2
    rng = np.random.default_rng(0)
    y, y_test = rng.normal(size=4000), rng.normal(size=4000)
    sigma = 3.0
    x, x_test = _columns(y, rng, sigma), _columns(y_test, rng, sigma)
    optimal = np.sqrt((10 / sigma**2) / (1 + 10 / sigma**2))
    scores = yardstick.yardstick(x, y, x_test, y_test, [400, 4000], seed=0)
    assert scores.shape == (3, 2, 2)
    for method in range(3):
        assert scores[method, 1, 0] == pytest.approx(optimal, abs=0.02)
        # the rms error of the best predictor is sqrt(1 - rho^2) sd(y)
        assert scores[method, 1, 1] == pytest.approx(np.sqrt(1 - optimal**2), rel=0.05)
    # fewer training pairs cannot do better than the optimum
    assert np.all(scores[:, 0, 0] < optimal + 0.02)


def test_asinh_columns_recover_a_parameter_that_heavy_tails_hide_from_a_linear_fit():
    # lognormal columns: linear in x the fit follows the few largest values; asinh at the
    # columns' robust scale is close to log x (where the problem is linear again, with the
    # optimum sqrt(10/11) = 0.95) above the scale and linear below it
    rng = np.random.default_rng(1)
    y, y_test = rng.normal(size=3000), rng.normal(size=1000)
    x = np.exp(2.0 * _columns(y, rng, 1.0))
    x_test = np.exp(2.0 * _columns(y_test, rng, 1.0))
    scores = yardstick.yardstick(x, y, x_test, y_test, [3000], seed=0)
    linear, asinh, mlp = scores[:, 0, 0]
    optimal = np.sqrt(10 / 11)
    assert linear < 0.5 and 0.85 < asinh < optimal + 0.02 and 0.85 < mlp < optimal + 0.02


def test_data_without_the_parameter_score_zero():
    rng = np.random.default_rng(2)
    x, x_test = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    y, y_test = rng.normal(size=2000), rng.normal(size=2000)
    scores = yardstick.yardstick(x, y, x_test, y_test, [2000], seed=0)
    assert np.all(np.abs(scores[:, 0, 0]) < 0.08)


def test_bad_sizes_are_refused():
    x, y = np.zeros((50, 3)), np.zeros(50)
    with pytest.raises(DataError, match=r"outside 10\.\.50"):
        yardstick.yardstick(x, y, x, y, [60], seed=0)
    with pytest.raises(DataError, match="length 3, test ones 2"):
        yardstick.yardstick(x, y, x[:, :2], y, [50], seed=0)
    with pytest.raises(DataError, match="test x contains NaN"):
        yardstick.yardstick(x, y, np.full((50, 3), np.nan), y, [50], seed=0)
    with pytest.raises(DataError, match="at least 3"):
        yardstick.yardstick(x, y, x[:2], y[:2], [50], seed=0)


def test_posterior_scores_of_exact_and_overconfident_posteriors():
    # theta ~ N(0, 1) twice, x = theta + N(0, 1): the posterior is N(x / 2, 1 / 2); its mean
    # correlates with theta as 1 / sqrt(2)
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(1000, 2))
    x = theta + rng.normal(size=theta.shape)
    exact = x[:, None, :] / 2 + np.sqrt(0.5) * rng.normal(size=(1000, 400, 2))
    s = yardstick.posterior_scores(exact, theta, np.random.default_rng(0))
    assert s["correlation_r"] == pytest.approx(np.sqrt(0.5), abs=0.04)
    assert s["correlation_A_lens"] == pytest.approx(np.sqrt(0.5), abs=0.04)
    assert s["mean_sd_r"] == pytest.approx(np.sqrt(0.5), rel=0.02)
    assert s["tarp_joint_sigma"] < 3.5 and s["tarp_r_sigma"] < 3.5
    narrow = x[:, None, :] / 2 + 0.3 * rng.normal(size=(1000, 400, 2))
    bad = yardstick.posterior_scores(narrow, theta, np.random.default_rng(0))
    assert bad["tarp_r_sigma"] > 5 and bad["mean_sd_r"] == pytest.approx(0.3, rel=0.02)
