"""The multi-frequency power-spectrum likelihood (duivenvoorden2025 App. E): its covariance
against Monte Carlo, and r recovered from data drawn from its own model."""

import numpy as np
import pytest
from conftest import tiny_config

from bmodesep.config import validate_config
from bmodesep.core import harmonics
from bmodesep.core.nilc import datavector
from bmodesep.core.npe import ps_likelihood as pl
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate import footprint as fp
from bmodesep.settings import npe_setup

TRUTH = np.array([0.01, 0.45, 29.0, -0.3, 1.55, 1.5, -0.6, -2.8, 0.1])  # the paper's Fig. 2


@pytest.fixture(scope="module")
def setup(spectra):
    return npe_setup(validate_config(dict(tiny_config(), npe={"nside": 32})), spectra, "joint")


def draw(setup, model, seed):
    """Two splits of Gaussian band alm with the model's signal and the instrument's noise."""
    lmax = setup.lmax
    everything = model._replace(edges=np.array([2, lmax + 1]), w2=1.0)
    cov = np.zeros((setup.instrument.n_freq,) * 2 + (lmax + 1,))
    cov[:, :, 2:] = pl.signal_spectra(everything, TRUTH)
    rng = rng_for(seed, "ps-likelihood-test")
    signal = harmonics.correlated_gaussian_alm(cov, lmax, rng)
    splits = [
        signal
        + harmonics.almxfl(
            harmonics.unit_gaussian_alm(lmax, rng, len(cov)), np.sqrt(setup.noise_cl)
        )
        for _ in range(2)
    ]
    return datavector.data_vector(splits[0], splits[1], lmax, setup.edges)


def test_covariance_matches_monte_carlo(setup):
    model = pl.model_from_setup(setup)
    x = np.stack([draw(setup, model, s) for s in range(400)])
    analytic = pl.covariance(model, TRUTH)
    np.testing.assert_allclose(
        x.mean(axis=0),
        pl.binned_model(model, TRUTH),
        rtol=0.3,
        atol=0.1 * np.sqrt(np.diag(analytic)).max(),
    )
    ratio = x.var(axis=0) / np.diag(analytic)
    # 400 draws: the variance of each number is known to sqrt(2 / 400) = 7 %
    assert abs(np.median(ratio) - 1) < 0.05 and np.all(np.abs(ratio - 1) < 0.4)
    # a cross-correlation: between two bands' auto spectra in the same bin
    mc = np.corrcoef(x[:, 0], x[:, 4 * 8])[0, 1]  # pairs (0,0) and (1,1), first bin
    exact = analytic[0, 4 * 8] / np.sqrt(analytic[0, 0] * analytic[4 * 8, 4 * 8])
    assert abs(mc - exact) < 0.12


@pytest.mark.slow
def test_likelihood_recovers_r_from_data_of_its_own_model(setup):
    model = pl.model_from_setup(setup)
    pulls = []
    for seed in range(3):
        x = draw(setup, model, 100 + seed)
        chain = pl.analyse(
            model, x, "table1", np.random.default_rng(seed), steps=800, burn=300, n_samples=500
        )
        r = chain.samples[:, 0]
        pulls.append((r.mean() - TRUTH[0]) / r.std())
        assert abs(chain.chi2_best - x.size) < 5 * np.sqrt(2 * x.size)
        assert 0.2 < chain.acceptance < 0.7
        np.testing.assert_allclose(
            chain.samples[:, 4].mean(), TRUTH[4], atol=5 * chain.samples[:, 4].std()
        )
    assert np.all(np.abs(pulls) < 3)


def test_masked_model_is_scaled_by_w2_with_fewer_modes(setup):
    mask = fp.synthetic_footprint(32, 0.21, 10.0)
    full, masked = pl.model_from_setup(setup), pl.model_from_setup(setup._replace(mask=mask))
    w2 = float(np.mean(mask**2))
    np.testing.assert_allclose(masked.w2, w2)
    np.testing.assert_allclose(
        pl.binned_model(masked, TRUTH), w2 * pl.binned_model(full, TRUTH), rtol=1e-12
    )
    # covariance: (w2)^2 from the spectra, 1 / f_modes from the modes
    np.testing.assert_allclose(
        pl.covariance(masked, TRUTH),
        pl.covariance(full, TRUTH) * w2**2 / masked.f_modes,
        rtol=1e-10,
    )
    assert 0.1 < masked.f_modes < 0.25


@pytest.mark.parametrize("instrument", ["sosat", "litebird_two_splits"])
def test_simulated_frequency_spectra_are_unbiased_for_the_likelihood_model(spectra, instrument):
    """The SBI simulator (harmonic 1/f noise for SO-SAT; Q/U pixel noise and B-mode analysis
    for a LiteBIRD-like instrument with two white-noise splits) against the App. E model:
    at constant indices the mean cross-split spectra are the model, within their errors."""
    from bmodesep.core.npe import simulator
    from bmodesep.settings import preset

    base = tiny_config()
    if instrument == "litebird_two_splits":
        base["instruments"]["litebird2"] = dict(preset("litebird"), splits=2)
        name = "litebird2"
    else:
        name = "sosat"
    cfg = validate_config(
        dict(
            base,
            npe={
                "nside": 16,
                "lmax": 32,
                "ell_min": 2,
                "bin_width": 10,
                "instrument": name,
                "analysis_iterations": 3,
            },
        )
    )
    setup = npe_setup(cfg, spectra, "joint")
    model = pl.model_from_setup(setup)
    theta13 = np.array([0.05, 1.0, 29.0, -0.3, 1.55, 0.0, -4.0, 1.5, -0.6, -2.8, 0.0, -4.0, 0.1])
    n = 30
    x = np.stack(
        [
            simulator.frequency_spectra(
                simulator.observe(simulator.simulate_sky(theta13, seed, setup), seed, setup), setup
            )
            for seed in range(n)
        ]
    )
    expected = pl.binned_model(model, theta13[[0, 1, 2, 3, 4, 7, 8, 9, 12]])
    cov = pl.covariance(model, theta13[[0, 1, 2, 3, 4, 7, 8, 9, 12]]) / n
    resid = x.mean(axis=0) - expected
    chi2 = resid @ np.linalg.solve(cov, resid)
    dof = resid.size
    assert abs(chi2 - dof) < 5 * np.sqrt(2 * dof), (chi2, dof)


def test_a_model_overflowing_in_the_far_tails_is_ruled_out_not_an_error(setup):
    model = pl.model_from_setup(setup)
    like = pl.Likelihood(
        model, pl.binned_model(model, TRUTH), pl.covariance(model, TRUTH), "widened"
    )
    wild = TRUTH.copy()
    wild[3] = 1e4  # alpha_d: (l/80)^alpha overflows at l > 80
    values = like.log_posterior(np.stack([TRUTH, wild]))
    assert np.isfinite(values[0]) and values[1] == -np.inf
