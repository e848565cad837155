"""Misspecified-foreground pieces show their defining properties (issue 17, part 7)."""

import numpy as np
import pytest
from scipy import stats

from bmodesep.core import harmonics, seds
from bmodesep.core.simulate import misspecified as ms
from bmodesep.core.simulate.sky import power_law_cl

NSIDE, LMAX = 32, 95


def gaussian_qu(seed: int) -> np.ndarray:
    """A dust-like Gaussian Q/U map [2, npix] (E and B with D_l ~ l^-0.2)."""
    rng = np.random.default_rng(seed)
    cl = power_law_cl(28.0, -0.2, LMAX)
    alm = np.stack([harmonics.gaussian_alm(cl, LMAX, rng) for _ in range(2)])
    return harmonics.synthesis(alm, NSIDE, LMAX, spin=2)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def test_one_dust_layer_is_the_modified_blackbody_and_perfectly_correlated():
    qu = gaussian_qu(1)
    maps = ms.layered_dust([qu], [1.6], [19.0], [90.0, 353.0])
    np.testing.assert_allclose(maps[1], qu)  # 1 at the reference frequency
    np.testing.assert_allclose(maps[0], seds.dust_sed(90.0, 1.6, 19.0) * qu)
    assert correlation(maps[0], maps[1]) == pytest.approx(1.0, abs=1e-12)


def test_dust_layers_decorrelate_more_with_a_longer_frequency_lever_arm():
    warm_flat, cold_steep = gaussian_qu(2), 0.7 * gaussian_qu(3)
    maps = ms.layered_dust([warm_flat, cold_steep], [1.3, 1.9], [24.0, 14.0], [90.0, 217.0, 353.0])
    r_90 = correlation(maps[0], maps[2])
    r_217 = correlation(maps[1], maps[2])
    assert r_90 < r_217 < 1.0
    assert r_90 < 0.99  # a measurable decorrelation, as d12-like skies show
    with pytest.raises(ValueError, match="one beta_d and one T_d per layer"):
        ms.layered_dust([warm_flat], [1.5, 1.6], [20.0], [90.0])


def test_running_synchrotron_index_changes_the_effective_index_with_frequency():
    beta, c = -3.0, -0.052
    nu = np.array([23.0, 40.0, 90.0])
    sed = ms.curved_synchrotron_sed(nu, beta, c)
    low = ms.effective_index(sed[0], sed[1], 23.0, 40.0)
    high = ms.effective_index(sed[1], sed[2], 40.0, 90.0)
    # known answer: ln S_RJ = beta L + C L^2 with L = ln(nu / 23), so the index between
    # nu_1 and nu_2 is beta + C (L_1 + L_2)
    lg = np.log(nu / 23.0)
    assert low == pytest.approx(beta + c * (lg[0] + lg[1]), rel=1e-12)
    assert high == pytest.approx(beta + c * (lg[1] + lg[2]), rel=1e-12)
    assert high < low  # C < 0 steepens the spectrum towards high frequencies
    # no curvature: today's power law, one index everywhere
    flat = ms.curved_synchrotron_sed(nu, beta, 0.0)
    np.testing.assert_allclose(flat, seds.synchrotron_sed(nu, beta), rtol=1e-13)
    assert ms.effective_index(flat[1], flat[2], 40.0, 90.0) == pytest.approx(beta, rel=1e-12)


def test_lognormal_amplitudes_are_positive_skewed_and_make_heavy_tails():
    g = gaussian_qu(4)[0]
    g = (g - g.mean()) / g.std()
    sigma = 0.8
    m = ms.lognormal_modulation(g, sigma)
    assert m.min() > 0 and m.mean() == pytest.approx(1.0, rel=0.1)
    expected_skew = (np.exp(sigma**2) + 2) * np.sqrt(np.exp(sigma**2) - 1)
    assert stats.skew(m) > 0.5 * expected_skew > 0
    qu = gaussian_qu(5)
    modulated = m[None] * qu
    assert stats.kurtosis(qu[0]) == pytest.approx(0.0, abs=0.3)  # Gaussian: none
    assert stats.kurtosis(modulated[0]) > 1.0  # heavy tails: not a Gaussian sky
    with pytest.raises(ValueError, match="non-negative"):
        ms.lognormal_modulation(g, -1.0)


def test_indices_follow_the_amplitude_with_the_chosen_strength():
    rng = np.random.default_rng(6)
    amplitude = np.exp(rng.standard_normal(5000))
    beta = 1.54 + 0.05 * rng.standard_normal(5000)
    tied = ms.correlate_with_amplitude(beta, amplitude, 0.1)
    # index = independent part (sd 0.05) + 0.1 x standardised log amplitude
    expected = 0.1 / np.hypot(0.1, 0.05)
    assert np.corrcoef(tied, np.log(amplitude))[0, 1] == pytest.approx(expected, abs=0.03)
    assert tied.mean() == pytest.approx(beta.mean(), abs=1e-12)
    with pytest.raises(ValueError, match="not constant"):
        ms.correlate_with_amplitude(beta, np.ones(5000), 0.1)


# ---------------------------------------------------------------- the sky kinds
@pytest.fixture(scope="module")
def camb(spectra):
    return spectra


def draw_kind(camb, kind, nside=16, **extra):
    from bmodesep.config import validate_config
    from bmodesep.core.simulate.sky import simulate_parametric_sky
    from bmodesep.settings import sky_model

    sky = {
        "kind": kind,
        "seed": 3,
        "dust": {"beta": {"mean": 1.54, "amplitude": 0.1}},
        "synchrotron": {"beta": {"mean": -3.0, "amplitude": 0.1}},
        **extra,
    }
    cfg = validate_config({"skies": {"s": sky}})["skies"]["s"]
    return simulate_parametric_sky(sky_model(cfg), 0.0, 1.0, camb, nside, 3 * nside - 1)


def test_layered_sky_decorrelates_and_survives_its_product(camb, tmp_path):
    from bmodesep.core.simulate.sky import foreground_maps
    from bmodesep.products import sims

    layered = draw_kind(camb, "layered")
    assert len(layered.dust_layers) == 1  # the schema's default: one extra layer
    maps = foreground_maps(layered, [90.0, 353.0])
    plain = draw_kind(camb, "grf")
    plain_maps = foreground_maps(plain, [90.0, 353.0])
    # the main layer is the grf sky's own dust; the extra layer decorrelates 90 from 353
    np.testing.assert_array_equal(layered.dust_qu, plain.dust_qu)
    sync = seds.synchrotron_sed(np.array([90.0, 353.0])[:, None], plain.beta_s[None])
    dust_90 = maps[0] - sync[0] * layered.sync_qu
    dust_353 = maps[1] - sync[1] * layered.sync_qu
    assert correlation(dust_90, dust_353) < 0.995
    plain_90 = plain_maps[0] - sync[0] * plain.sync_qu
    plain_353 = plain_maps[1] - sync[1] * plain.sync_qu
    assert correlation(plain_90, plain_353) > correlation(dust_90, dust_353)
    path = sims.write_sky(tmp_path / "sky.h5", layered, layered.cmb_alm, layered.cmb_qu, {}, 3, {})
    _, back = sims.read_sky(path, 16)
    np.testing.assert_array_equal(foreground_maps(back, [90.0, 353.0]), maps)


def test_curved_synchrotron_sky_runs_its_index(camb):
    from bmodesep.core.simulate.sky import foreground_maps

    sky = draw_kind(camb, "curved_synchrotron", curvature={"value": -0.1})
    assert sky.sync_curvature == -0.1
    nu = [23.0, 40.0, 90.0]
    no_dust = sky._replace(dust_qu=np.zeros_like(sky.dust_qu))
    maps = foreground_maps(no_dust, nu)
    pixel = int(np.argmax(np.abs(sky.sync_qu[0])))
    low = ms.effective_index(maps[0, 0, pixel], maps[1, 0, pixel], 23.0, 40.0)
    high = ms.effective_index(maps[1, 0, pixel], maps[2, 0, pixel], 40.0, 90.0)
    lg = np.log(np.array(nu) / 23.0)
    beta = sky.beta_s[pixel]
    assert low == pytest.approx(beta - 0.1 * (lg[0] + lg[1]), rel=1e-10)
    assert high == pytest.approx(beta - 0.1 * (lg[1] + lg[2]), rel=1e-10)


def test_lognormal_sky_has_heavier_tails_than_the_grf_sky(camb):
    plain = draw_kind(camb, "grf")
    lognormal = draw_kind(camb, "lognormal", lognormal={"sigma": 1.0})
    p_plain = np.hypot(*plain.dust_qu)
    p_log = np.hypot(*lognormal.dust_qu)
    assert stats.skew(p_log) > stats.skew(p_plain) + 0.5  # Rayleigh-like: ~0.6
    assert stats.kurtosis(lognormal.dust_qu[0]) > stats.kurtosis(plain.dust_qu[0]) + 1.0


def test_correlated_sky_ties_the_indices_to_the_amplitude(camb):
    plain = draw_kind(camb, "grf")
    tied = draw_kind(camb, "correlated", amplitude_correlation={"beta_d": 0.2, "beta_s": -0.2})
    log_pd = np.log(np.hypot(*tied.dust_qu))
    log_ps = np.log(np.hypot(*tied.sync_qu))
    assert np.corrcoef(tied.beta_d, log_pd)[0, 1] > 0.5
    assert np.corrcoef(tied.beta_s, log_ps)[0, 1] < -0.5
    assert abs(np.corrcoef(plain.beta_d, np.log(np.hypot(*plain.dust_qu)))[0, 1]) < 0.2
