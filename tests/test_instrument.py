import healpy as hp
import numpy as np
import pytest

from bmodesep.core import harmonics
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate.instrument import (
    highpass_window,
    noise_cl,
    observe_signal,
    pixel_side_arcmin,
    signal_transfer,
    simulate_noise,
    white_noise_sigma_per_pixel,
)
from bmodesep.errors import ConfigError
from bmodesep.settings import instrument_from_spec, preset

LITEBIRD_DEPTHS = [
    37.42,
    33.46,
    21.31,
    16.87,
    12.07,
    11.30,
    6.56,
    4.58,
    4.79,
    5.57,
    5.85,
    10.79,
    13.8,
    21.95,
    47.45,
]


def litebird():
    return instrument_from_spec("litebird", preset("litebird"))


def sosat():
    return instrument_from_spec("sosat", preset("sosat"))


def test_presets_are_the_papers_instruments():
    lb, so = litebird(), sosat()
    assert lb.n_freq == 15 and lb.frequencies_ghz[0] == 40 and lb.frequencies_ghz[-1] == 402
    assert list(lb.depth_uk_arcmin) == LITEBIRD_DEPTHS
    assert so.frequencies_ghz == (23, 27, 39, 93, 145, 225, 280, 353)
    assert so.depth_uk_arcmin[3] == 2.5 and so.ell_knee[3] == 25 and so.alpha_knee[3] == -2.5
    assert so.fwhm_arcmin[-1] == 4.92 and so.ell_knee[0] is None and so.splits == 2


def test_unknown_preset_and_band_count_mismatch():
    with pytest.raises(ConfigError, match="unknown instrument preset 'planck'"):
        preset("planck")
    with pytest.raises(ConfigError, match="depth_uk_arcmin: 2 entries for 3 frequencies"):
        instrument_from_spec("x", {"frequencies_ghz": [1, 2, 3], "depth_uk_arcmin": [1, 2]})


def test_white_noise_has_the_configured_per_pixel_sigma():
    nside = 32
    inst = litebird()
    sigma = white_noise_sigma_per_pixel(inst, nside)
    # pixel side at nside 32 is 109.9 arcmin
    assert pixel_side_arcmin(32) == pytest.approx(109.94, abs=0.01)
    assert sigma[6] == pytest.approx(6.56 / 109.94, rel=1e-4)
    noise = simulate_noise(inst, nside, 3 * nside - 1, seed=1, realisation=0)
    measured = noise.qu[0].std(axis=(1, 2))
    n = noise.qu[0, 0].size
    assert np.all(np.abs(measured / sigma - 1) < 5 / np.sqrt(2 * n))


def test_harmonic_noise_has_the_configured_nl_per_split():
    nside, lmax = 64, 128
    inst = sosat()
    nl = noise_cl(inst, lmax)
    # eq. A1 at l = l_knee for 93 GHz: twice the white level, times 2 for the split
    white = (2.5 * np.pi / 10800) ** 2
    assert nl[3, 25] == pytest.approx(2 * white * 2, rel=1e-12)
    noise = simulate_noise(inst, nside, lmax, seed=2, realisation=0)
    ell = np.arange(lmax + 1)
    for band in (0, 3, 6):
        q, u = noise.qu[0, band]
        cls = hp.anafast(np.stack([0 * q, q, u]), lmax=lmax, iter=5)
        for spec in (cls[1], cls[2]):
            z = (spec - nl[band])[10:] / (nl[band] * np.sqrt(2 / (2 * ell + 1)))[10:]
            assert abs(z.mean()) < 4 / np.sqrt(z.size) and 0.8 < z.std() < 1.2
        # the B-mode scalar map carries the B part of the same noise
        clb = hp.anafast(noise.b[0, band], lmax=lmax, iter=5)
        assert np.allclose(clb[10:], cls[2][10:], rtol=1e-4)


def test_splits_are_independent_with_double_variance():
    inst = instrument_from_spec(
        "w", {"frequencies_ghz": [100.0], "depth_uk_arcmin": [10.0], "splits": 2}
    )
    noise = simulate_noise(inst, 16, 47, seed=3, realisation=0)
    sigma1 = 10.0 / pixel_side_arcmin(16)
    assert noise.qu[:, 0].std() == pytest.approx(sigma1 * np.sqrt(2), rel=0.05)
    assert abs(np.corrcoef(noise.qu[0, 0].ravel(), noise.qu[1, 0].ravel())[0, 1]) < 0.05


def test_noise_realisations_are_reproducible_from_seed_and_index_alone():
    inst = sosat()
    a = simulate_noise(inst, 8, 23, seed=4, realisation=3)
    b = simulate_noise(inst, 8, 23, seed=4, realisation=3)
    c = simulate_noise(inst, 8, 23, seed=4, realisation=2)
    assert np.array_equal(a.qu, b.qu) and np.array_equal(a.b, b.b)
    assert not np.allclose(a.qu, c.qu)


def test_highpass_filter_rises_from_zero_to_one():
    f = highpass_window(30, 5, 60)
    assert np.all(f[:26] == 0) and np.all(f[30:] == 1)
    assert np.all(np.diff(f[25:31]) > 0)
    assert f[27] == pytest.approx(0.5 * (1 - np.cos(np.pi * 2 / 5)))


def test_harmonic_path_equals_pixel_path_without_beams():
    """With unit transfer, the harmonic route (analysis, B maps) reproduces pixel sums."""
    nside, lmax = 16, 32
    rng = rng_for(5, "t")
    cmb = harmonics.gaussian_alm(np.ones(lmax + 1), lmax, rng)
    cmb_eb = np.stack([cmb, 0.3 * cmb])
    cmb_eb[:, harmonics.alm_ell(lmax) < 2] = 0
    cmb_qu = harmonics.synthesis(cmb_eb, nside, lmax, spin=2)
    fg = np.stack([2.0 * cmb_qu, -1.0 * cmb_qu])  # band-limited foreground maps
    spec = {"frequencies_ghz": [50.0, 100.0], "depth_uk_arcmin": [1.0, 1.0]}
    plain = observe_signal(instrument_from_spec("p", spec), cmb_eb, cmb_qu, fg, nside, lmax)
    harm = observe_signal(
        instrument_from_spec("h", spec | {"b_maps": True}),
        cmb_eb,
        cmb_qu,
        fg,
        nside,
        lmax,
        n_iter=10,
    )
    assert np.allclose(harm.total_qu, plain.total_qu, atol=1e-8)
    assert np.allclose(harm.foreground_qu, plain.foreground_qu, atol=1e-8)
    b_direct = harmonics.synthesis(3.0 * cmb_eb[1], nside, lmax, spin=0)[0]
    assert np.allclose(harm.total_b[0], b_direct, atol=1e-8)


def test_beam_and_filter_are_applied_to_the_signal():
    nside, lmax = 32, 64
    inst = sosat()
    t = signal_transfer(inst, lmax)
    cmb = harmonics.gaussian_alm(np.ones(lmax + 1), lmax, rng_for(6, "t"))
    cmb_eb = np.stack([0 * cmb, cmb])
    cmb_eb[:, harmonics.alm_ell(lmax) < 2] = 0
    cmb_qu = harmonics.synthesis(cmb_eb, nside, lmax, spin=2)
    out = observe_signal(inst, cmb_eb, cmb_qu, np.zeros((8, 2, cmb_qu.shape[1])), nside, lmax)
    alm = harmonics.analysis(out.total_qu[1], nside, lmax, spin=2, n_iter=10)
    ratio = (
        harmonics.cross_spectrum(alm[1], cmb_eb[1], lmax)[2:]
        / harmonics.cross_spectrum(cmb_eb[1], cmb_eb[1], lmax)[2:]
    )
    assert np.allclose(ratio[33:], t[1, 35:], rtol=1e-6)
    assert np.all(np.abs(ratio[:23]) < 1e-8)
