"""The r likelihood of kabalan2025 eq. 15 on simulations with known r."""

import numpy as np
import pytest

from bmodesep.core import harmonics
from bmodesep.core.randomness import rng_for
from bmodesep.core.rlike import likelihood as rlike
from bmodesep.errors import DataError

LMAX = 64
ELL = np.arange(2, LMAX + 1)


def simulate_cobs(spectra, r_true, n_sims, noise_cl):
    """Full-sky B-mode CMB (r, A_lens = 1) + white noise, C_l of each simulation."""
    cl = spectra.cl("BB", r_true, 1.0)[: LMAX + 1]
    out = []
    for i in range(n_sims):
        rng = rng_for(i, "rlike-test")
        alm = harmonics.gaussian_alm(cl, LMAX, rng) + harmonics.gaussian_alm(
            np.full(LMAX + 1, noise_cl), LMAX, rng
        )
        out.append(harmonics.cross_spectrum(alm, alm, LMAX)[2:])
    return np.array(out)


def test_r_hat_is_unbiased_and_its_curvature_error_matches_the_scatter(spectra):
    r_true, n_sims, noise = 0.05, 200, 3e-7  # white noise ~2 uK arcmin
    c_obs = simulate_cobs(spectra, r_true, n_sims, noise)
    c_tens = spectra.tensor_r1[2, 2 : LMAX + 1]
    c_lens = spectra.lensed_scalar[2, 2 : LMAX + 1]
    c_stat = np.full(ELL.size, noise)
    grid = np.linspace(-0.05, 0.25, 1501)
    results = [
        rlike.analyse(grid, c, c_tens, c_lens, c_stat, rlike.mode_counts(ELL, 1.0)) for c in c_obs
    ]
    r_hat = np.array([r.r_hat for r in results])
    sigma = np.mean([r.sigma_curvature for r in results])
    assert abs(r_hat.mean() - r_true) < 2 * sigma / np.sqrt(n_sims)
    assert r_hat.std(ddof=1) == pytest.approx(sigma, rel=0.2)
    for r in results[:10]:
        assert r.r_low < r.r_hat < r.r_high
        assert 0.5 * (r.r_high - r.r_low) == pytest.approx(r.sigma_curvature, rel=0.25)


def test_the_likelihood_peaks_at_the_truth_for_the_expected_spectrum(spectra):
    c_tens = spectra.tensor_r1[2, 2 : LMAX + 1]
    c_lens = spectra.lensed_scalar[2, 2 : LMAX + 1]
    c_stat = np.full(ELL.size, 1e-7)
    c_obs = 0.02 * c_tens + c_lens + c_stat  # <C_obs> at r = 0.02
    res = rlike.analyse(
        np.linspace(-0.02, 0.06, 801), c_obs, c_tens, c_lens, c_stat, rlike.mode_counts(ELL, 0.3)
    )
    assert res.r_hat == pytest.approx(0.02, abs=1e-5)
    assert res.neg2lnl.min() == 0.0
    # f_sky scales the information: sigma ~ 1/sqrt(f_sky)
    res_full = rlike.analyse(
        np.linspace(-0.02, 0.06, 801), c_obs, c_tens, c_lens, c_stat, rlike.mode_counts(ELL, 1.2)
    )
    assert res.sigma_curvature / res_full.sigma_curvature == pytest.approx(2.0, rel=1e-6)


def test_negative_r_outside_the_model_has_zero_likelihood(spectra):
    c_tens = spectra.tensor_r1[2, 2 : LMAX + 1]
    c_lens = spectra.lensed_scalar[2, 2 : LMAX + 1]
    grid = np.linspace(-0.01, 0.01, 201)
    res = rlike.analyse(grid, c_lens, c_tens, c_lens, 0 * c_lens, rlike.mode_counts(ELL, 1.0))
    limit = -np.min(c_lens / c_tens)
    assert np.all(np.isinf(res.neg2lnl[grid <= limit])) and np.all(
        np.isfinite(res.neg2lnl[grid > limit])
    )
    assert res.r_low >= limit - 1e-4
    with pytest.raises(DataError, match="not positive for any r"):
        rlike.analyse(
            np.linspace(-5, -1, 50), c_lens, c_tens, c_lens, 0 * c_lens, rlike.mode_counts(ELL, 1.0)
        )


def test_zone_and_realisation_combination():
    spectra, f = rlike.combine_zones([np.ones(3), 3 * np.ones(3)], [0.1, 0.3])
    assert f == pytest.approx(0.4) and np.allclose(spectra, 2.5)
    grid = np.linspace(-1, 1, 201)
    curves = np.stack([(grid - 0.2) ** 2 / 0.01, (grid + 0.2) ** 2 / 0.01])
    avg = rlike.average_likelihood(curves)
    assert avg.min() == 0.0
    assert avg[np.argmin(np.abs(grid - 0.2))] == pytest.approx(0.0, abs=1e-9)
    assert avg[np.argmin(np.abs(grid))] > 1.0  # two separated peaks stay separated


def test_master_band_powers_remove_the_leakage_bias_of_r_on_a_masked_sky(spectra):
    """Masked E+B CMB skies with r = 0.1: the paper's f_sky-corrected C_l keep E-to-B
    leakage and bias r-hat high; MASTER band powers give back r within 2 sigma/sqrt(N),
    with a curvature error matching the scatter."""
    import healpy as hp

    from bmodesep.core.rlike.spectra import BBEstimator, fsky

    nside, lmax, r_true, n_sims = 32, 64, 0.1, 40
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    mask = np.clip((z - 0.1) / 0.3, 0, 1)  # apodised cap, f_sky ~ 0.4
    cl_ee, cl_bb = (spectra.cl(x, r_true, 1.0)[: lmax + 1] for x in ("EE", "BB"))
    grid = np.linspace(-0.1, 0.5, 3001)
    estimators = {"fsky": BBEstimator(10, lmax), "master": BBEstimator(10, lmax, 6)}
    r_hat = {k: [] for k in estimators}
    sigma = {k: [] for k in estimators}
    for i in range(n_sims):
        rng = rng_for(i, "master-r")
        alm = np.stack([harmonics.gaussian_alm(c, lmax, rng) for c in (cl_ee, cl_bb)])
        qu = harmonics.synthesis(alm, nside, lmax, spin=2)
        for kind, est in estimators.items():
            tensor, lens = est.theory(spectra.tensor_r1[2]), est.theory(spectra.lensed_scalar[2])
            res = rlike.analyse(
                grid, est.measure(qu, mask), tensor, lens, 0 * tensor, est.modes(fsky(mask))
            )
            r_hat[kind].append(res.r_hat)
            sigma[kind].append(res.sigma_curvature)
    master, simple = np.array(r_hat["master"]), np.array(r_hat["fsky"])
    error = master.std(ddof=1) / np.sqrt(n_sims)
    assert abs(master.mean() - r_true) < 2 * error
    assert np.mean(sigma["master"]) == pytest.approx(master.std(ddof=1), rel=0.25)
    assert simple.mean() - r_true > 5 * simple.std(ddof=1) / np.sqrt(n_sims)


def test_band_power_estimator_bookkeeping():
    from bmodesep.core.rlike.spectra import BBEstimator, dl_factor

    est = BBEstimator(10, 40, 6)  # bins from l = 2: [2, 8), [8, 14), ...; kept from 14
    assert est.ell.tolist() == [16.5, 22.5, 28.5, 34.5, 39.0]
    assert est.modes(1.0).sum() == pytest.approx(sum(2 * k + 1 for k in range(14, 41)))
    flat_dl = np.zeros(41)
    flat_dl[2:] = 2.5 / dl_factor(40)[2:]
    assert np.allclose(est.theory(flat_dl), 2.5)
    assert np.allclose(BBEstimator(10, 40).theory(flat_dl), flat_dl[10:])


def test_upper_limit_of_a_half_gaussian_and_of_a_distant_peak():
    from scipy.stats import norm

    from bmodesep.core.rlike.likelihood import upper_limit

    r = np.linspace(-0.01, 0.05, 60001)
    sigma = 2e-3
    half = np.exp(-0.5 * (r / sigma) ** 2)  # peak at 0: the half-normal's 68% quantile
    np.testing.assert_allclose(upper_limit(r, half), sigma * norm.ppf(0.84), rtol=1e-4)
    far = np.exp(-0.5 * ((r - 0.02) / sigma) ** 2)  # far from 0: the Gaussian's 68% quantile
    np.testing.assert_allclose(upper_limit(r, far), 0.02 + sigma * norm.ppf(0.68), rtol=1e-4)
    assert np.isnan(upper_limit(r, np.zeros_like(r)))
