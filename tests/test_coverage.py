"""TARP coverage, HDIs, the index-field variance (eq. 25) and the predictive chi^2 check."""

import numpy as np
import pytest
import tarp as tarp_package

from bmodesep.core import harmonics
from bmodesep.core.npe import coverage
from bmodesep.core.simulate.sky import index_field_cl
from bmodesep.errors import DataError


def _conjugate_tests(n_tests, n_samples, rng, shift=0.0, width=1.0):
    """Two-parameter Gaussian: theta ~ N(0, I), x = theta + N(0, 0.5^2 I).

    Samples come from the exact posterior N(0.8 x, 0.2 I), optionally shifted by
    ``shift`` posterior sigmas and scaled in width.
    """
    theta = rng.normal(size=(n_tests, 2))
    x = theta + 0.5 * rng.normal(size=theta.shape)
    mean, sigma = 0.8 * x, np.sqrt(0.2)
    draws = rng.normal(size=(n_tests, n_samples, 2))
    samples = mean[:, None] + sigma * (shift + width * draws)
    return samples, theta


def test_tarp_of_the_exact_posterior_is_within_its_bands():
    rng = np.random.default_rng(0)
    samples, theta = _conjugate_tests(800, 500, rng)
    result = coverage.tarp(samples, theta, rng)
    assert not result.flagged()
    assert np.max(np.abs(result.ecp - result.credibility)) < 0.06
    for m in coverage.marginal_tarps(samples, theta, rng):
        assert not m.flagged()


@pytest.mark.parametrize(
    ("shift", "width", "what"),
    [(1.0, 1.0, "biased"), (0.0, 0.5, "overconfident"), (0.0, 2.0, "underconfident")],
)
def test_tarp_flags_a_wrong_posterior(shift, width, what):
    rng = np.random.default_rng(1)
    samples, theta = _conjugate_tests(800, 500, rng, shift, width)
    marginals = coverage.marginal_tarps(samples, theta, rng)
    assert any(m.flagged() for m in marginals), what
    assert max(m.deviation_sigma for m in marginals) > 5


def test_tarp_matches_the_reference_implementation():
    rng = np.random.default_rng(2)
    samples, theta = _conjugate_tests(300, 200, rng, shift=0.3)
    refs = coverage.reference_points(theta, rng)
    ours = coverage.tarp(samples, theta, rng, levels=21, references=refs)
    scale = theta.max(0) - theta.min(0)
    ecp, alpha = tarp_package.get_tarp_coverage(
        np.moveaxis(samples / scale, 1, 0),
        theta / scale,
        references=refs / scale,
        num_alpha_bins=20,
        norm=False,
    )
    assert np.allclose(alpha, ours.credibility)
    assert np.max(np.abs(ecp - ours.ecp)) <= 1.0 / theta.shape[0] + 1e-12


def test_tarp_input_checks():
    rng = np.random.default_rng(0)
    samples, theta = _conjugate_tests(10, 20, rng)
    with pytest.raises(DataError, match=r"samples \[n, m, d\]"):
        coverage.tarp(samples[:, :, 0], theta, rng)
    with pytest.raises(DataError, match="NaN"):
        coverage.tarp(np.where(samples > 1, np.nan, samples), theta, rng)
    with pytest.raises(DataError, match="at least two"):
        coverage.tarp(samples[:1], theta[:1], rng)


def test_hdi_of_known_distributions():
    rng = np.random.default_rng(3)
    lo, hi = coverage.hdi(rng.normal(1.0, 2.0, 400_000), 0.6827)
    assert lo == pytest.approx(-1.0, abs=0.02) and hi == pytest.approx(3.0, abs=0.02)
    # a one-sided distribution: the interval starts at its edge
    lo, hi = coverage.hdi(rng.exponential(1.0, 400_000), 0.68)
    assert lo == pytest.approx(0.0, abs=1e-3) and hi == pytest.approx(-np.log(0.32), abs=0.01)


def test_index_field_sigma_is_the_standard_deviation_of_the_field():
    assert coverage.index_field_sigma(0.0, -3.0) == 0.0
    b, gamma, nside = 0.3, -2.5, 128
    expected = coverage.index_field_sigma(b, gamma, lmax=200)
    cl = index_field_cl(b, gamma, 200)
    rms = [
        np.std(
            harmonics.synthesis(
                harmonics.gaussian_alm(cl, 200, np.random.default_rng(s)), nside, 200, 0
            )[0]
        )
        for s in range(20)
    ]
    # the field's pixel variance is sum (2l+1) C_l / 4pi up to cosmic variance (low l)
    assert np.mean(rms) == pytest.approx(expected, rel=0.1)
    both = coverage.index_field_sigma(np.array([0.1, 0.4]), np.array([-4.0, -4.0]))
    assert both[1] / both[0] == pytest.approx(2.0)


def test_predictive_chi2_accepts_consistent_data_and_rejects_a_shift():
    rng = np.random.default_rng(4)
    n = 8
    cov_sims = rng.normal(size=(200, n))
    predictive = rng.normal(size=(500, n))
    ok = coverage.predictive_chi2(rng.normal(size=n), predictive, cov_sims)
    assert 0.01 < ok.p_value < 0.99
    assert np.median(ok.chi2_predictive) == pytest.approx(n - 2 / 3, rel=0.2)
    bad = coverage.predictive_chi2(np.full(n, 3.0), predictive, cov_sims)
    assert bad.p_value == 0.0 and bad.chi2_observed > 50
    with pytest.raises(DataError, match="need 10"):
        coverage.predictive_chi2(np.zeros(n), predictive, cov_sims[:9])


def test_sigma_beta_adds_dust_and_synchrotron_in_quadrature():
    """Each index field alone gives its own sigma; together they add in quadrature (two
    independent fields), elementwise over any shape."""
    b_d, g_d = np.array([[1e-6, 4e-6]]), np.array([[-2.5, -3.0]])
    b_s, g_s = np.array([[2e-6, 0.0]]), np.array([[-3.5, -2.0]])
    sd = coverage.index_field_sigma(b_d, g_d)
    ss = coverage.index_field_sigma(b_s, g_s)
    np.testing.assert_array_equal(coverage.sigma_beta(b_d, g_d, 0.0 * b_s, g_s), sd)
    np.testing.assert_allclose(coverage.sigma_beta(b_d, g_d, b_s, g_s), np.hypot(sd, ss), 1e-15)
    assert coverage.sigma_beta(b_d, g_d, b_s, g_s).shape == (1, 2)
