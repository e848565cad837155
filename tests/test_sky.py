import healpy as hp
import numpy as np
import pytest

from bmodesep.config import validate_config
from bmodesep.core import harmonics, seds
from bmodesep.core.simulate.sky import (
    foreground_maps,
    index_field_cl,
    patch_mean,
    power_law_cl,
    simulate_parametric_sky,
    superpixel_patches,
)
from bmodesep.errors import ConfigError
from bmodesep.settings import sky_model


def sky_config(**overrides):
    sky = {"kind": "grf", "seed": 7}
    sky.update(overrides)
    return validate_config({"skies": {"s": sky}})["skies"]["s"]


def draw(cfg, spectra, nside, lmax, patches=None):
    """A sky config entry drawn with r = 0, A_lens = 1."""
    return simulate_parametric_sky(sky_model(cfg), 0.0, 1.0, spectra, nside, lmax, patches)


def chi2_per_dof(measured, model, lo, hi):
    ell = np.arange(model.size)
    sel = slice(lo, hi + 1)
    z = (measured[sel] - model[sel]) / (model[sel] * np.sqrt(2.0 / (2 * ell[sel] + 1)))
    return float(np.mean(z**2)), float(np.mean(z))


def test_power_law_is_normalised_at_l80():
    cl = power_law_cl(28.0, -0.2, 200)
    assert 80 * 81 * cl[80] / (2 * np.pi) == pytest.approx(28.0)
    assert cl[0] == cl[1] == 0


def test_grf_foregrounds_give_back_their_spectra(spectra):
    nside, lmax = 64, 128
    cfg = sky_config(
        dust={"amplitude_uk2": 28.0, "alpha": -0.4, "ee_over_bb": 2.0},
        synchrotron={"amplitude_uk2": 2.0, "alpha": -0.8, "ee_over_bb": 3.0},
        rho_ds=0.5,
    )
    sky = draw(cfg, spectra, nside, lmax)
    for qu, comp in ((sky.dust_qu, cfg["dust"]), (sky.sync_qu, cfg["synchrotron"])):
        cls = hp.anafast(np.stack([np.zeros_like(qu[0]), *qu]), lmax=lmax, iter=5)
        bb = power_law_cl(comp["amplitude_uk2"], comp["alpha"], lmax)
        chi2_bb, mean_bb = chi2_per_dof(cls[2], bb, 10, lmax)
        chi2_ee, _ = chi2_per_dof(cls[1], comp["ee_over_bb"] * bb, 10, lmax)
        assert 0.75 < chi2_bb < 1.3 and abs(mean_bb) < 0.35
        assert 0.75 < chi2_ee < 1.3
    both = hp.anafast(
        np.stack([0 * sky.dust_qu[0], *sky.dust_qu]),
        np.stack([0 * sky.sync_qu[0], *sky.sync_qu]),
        lmax=lmax,
        iter=5,
    )
    auto_d = hp.anafast(np.stack([0 * sky.dust_qu[0], *sky.dust_qu]), lmax=lmax, iter=5)
    auto_s = hp.anafast(np.stack([0 * sky.sync_qu[0], *sky.sync_qu]), lmax=lmax, iter=5)
    rho = both[2][10:].sum() / np.sqrt(auto_d[2][10:].sum() * auto_s[2][10:].sum())
    assert rho == pytest.approx(0.5, abs=0.08)


def test_spectral_index_field_has_its_spectrum_and_mean(spectra):
    nside, lmax = 64, 128
    cfg = sky_config(dust={"beta": {"mean": 1.6, "amplitude": 0.05, "gamma": -2.0}})
    sky = draw(cfg, spectra, nside, lmax)
    cl = hp.anafast(sky.beta_d - 1.6, lmax=lmax, iter=5)
    chi2, mean = chi2_per_dof(cl, index_field_cl(0.05, -2.0, lmax), 5, lmax)
    assert 0.75 < chi2 < 1.3 and abs(mean) < 0.35
    assert np.mean(sky.beta_d) == pytest.approx(1.6, abs=2e-3)
    # fields without amplitude are constant
    assert np.all(sky.beta_s == -3.0) and np.all(sky.temp_d_k == 20.0)


def test_b_modes_only_sky_has_no_e_modes(spectra):
    nside, lmax = 16, 32
    sky = draw(sky_config(b_modes_only=True), spectra, nside, lmax)
    for qu in (sky.dust_qu, sky.sync_qu, sky.cmb_qu):
        alm = harmonics.analysis(qu, nside, lmax, spin=2, n_iter=10)
        assert np.abs(alm[0]).max() < 1e-8 * np.abs(alm[1]).max()


def test_true_patch_parameters_are_constant_on_their_patches(spectra):
    nside = 16
    patches = {
        "beta_d": superpixel_patches(nside, 4),
        "temperature_d": superpixel_patches(nside, 2),
        "beta_s": superpixel_patches(nside, 0),
    }
    cfg = sky_config(
        kind="true_patch",
        dust={
            "beta": {"mean": 1.5, "amplitude": 0.3},
            "temperature_k": {"mean": 20.0, "amplitude": 60.0},
        },
        synchrotron={"beta": {"mean": -3.0, "amplitude": 0.3}},
        patches={
            "beta_d": {"superpixel_nside": 4},
            "temperature_d": {"superpixel_nside": 2},
            "beta_s": {"superpixel_nside": 0},
        },
    )
    sky = draw(cfg, spectra, nside, 47, patches)
    for values, labels, k in (
        (sky.beta_d, patches["beta_d"], 192),
        (sky.temp_d_k, patches["temperature_d"], 48),
        (sky.beta_s, patches["beta_s"], 1),
    ):
        assert np.unique(labels).size == k
        for lab in np.unique(labels):
            assert np.ptp(values[labels == lab]) == 0
        assert np.unique(values).size == k


def test_superpixels_are_the_healpix_parents():
    nside, low = 16, 4
    labels = superpixel_patches(nside, low)
    theta, phi = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)))
    assert np.array_equal(labels, hp.ang2pix(low, theta, phi))
    assert np.array_equal(
        patch_mean(np.arange(labels.size, dtype=float), labels)[labels == 0],
        np.full(np.sum(labels == 0), np.arange(labels.size)[labels == 0].mean()),
    )


def test_superpixels_need_a_power_of_two():
    with pytest.raises(ConfigError, match="superpixel_nside 3 is not a power of two"):
        superpixel_patches(16, 3)
    with pytest.raises(ConfigError, match="exceeds the map nside"):
        superpixel_patches(16, 32)


def test_frequency_maps_follow_the_seds_pixel_by_pixel(spectra):
    cfg = sky_config(
        dust={
            "beta": {"mean": 1.5, "amplitude": 0.3},
            "temperature_k": {"mean": 20.0, "amplitude": 30.0},
        },
        synchrotron={"beta": {"mean": -3.0, "amplitude": 0.3}},
    )
    sky = draw(cfg, spectra, 16, 47)
    freqs = [30.0, 100.0, 353.0]
    maps = foreground_maps(sky, freqs)
    p = 123
    for i, nu in enumerate(freqs):
        expect = (
            seds.dust_sed(nu, sky.beta_d[p], sky.temp_d_k[p], 353.0) * sky.dust_qu[:, p]
            + seds.synchrotron_sed(nu, sky.beta_s[p], 23.0) * sky.sync_qu[:, p]
        )
        assert np.allclose(maps[i, :, p], expect, rtol=1e-13)


def test_galactic_envelope_brightens_the_plane(spectra):
    nside = 32
    flat = draw(sky_config(), spectra, nside, 95)
    env = draw(sky_config(galactic_envelope={"amplitude": 10.0}), spectra, nside, 95)
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    ratio = env.dust_qu / flat.dust_qu
    assert np.allclose(ratio[:, np.abs(z) < 0.01], 11.0, rtol=0.05)
    assert np.allclose(ratio[:, np.abs(z) > 0.99], 1.0 + 10 * np.exp(-1 / 0.3), rtol=0.05)


def test_same_seed_same_sky_other_seed_other_sky(spectra):
    a = draw(sky_config(seed=3), spectra, 8, 23)
    b = draw(sky_config(seed=3), spectra, 8, 23)
    c = draw(sky_config(seed=4), spectra, 8, 23)
    assert np.array_equal(a.dust_qu, b.dust_qu) and np.array_equal(a.cmb_qu, b.cmb_qu)
    assert not np.allclose(a.dust_qu, c.dust_qu)


def test_too_cold_dust_is_a_config_error(spectra):
    cfg = sky_config(dust={"temperature_k": {"mean": 6.0, "amplitude": 500.0, "gamma": -2.0}})
    with pytest.raises(ConfigError, match="dust temperature"):
        draw(cfg, spectra, 16, 47)
