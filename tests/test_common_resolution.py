"""Parametric separation for instruments with beams and splits (SO-SAT-like): the bands at
one resolution, the splits averaged, the noise variance that leaves; a beam-free
instrument untouched."""

import dataclasses

import numpy as np
import pytest
from conftest import tiny_config

from bmodesep.config import validate_config
from bmodesep.core import harmonics
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate import common_resolution as cr
from bmodesep.core.simulate.instrument import observe_signal, simulate_noise
from bmodesep.products import io
from bmodesep.settings import instrument_from_spec, preset
from bmodesep.stages import compsep, rlike, simulate

SOSAT = instrument_from_spec("sosat", preset("sosat"))
LITEBIRD = instrument_from_spec("litebird", preset("litebird"))


@pytest.mark.parametrize("lmax", [64, 95])
def test_reconvolved_bands_carry_one_cmb_at_the_widest_beam(spectra, lmax):
    nside = 32
    cl = np.zeros((4, lmax + 1))
    cl[:3] = spectra.lensed_scalar[:3, : lmax + 1]
    alm = harmonics.correlated_gaussian_alm(
        np.array([[cl[1], cl[3]], [cl[3], cl[2]]]), lmax, rng_for(1, "cmb")
    )
    alm = np.stack([alm[0], alm[1]])
    qu = harmonics.synthesis(alm, nside, lmax, 2)
    observed = observe_signal(SOSAT, alm, qu, np.zeros((8, 2, qu.shape[-1])), nside, lmax)
    bands = cr.reconvolve(observed.total_qu, cr.beam_ratio(SOSAT, lmax), nside, lmax)
    seen = cr.cmb_as_seen(alm, qu, SOSAT, nside, lmax)
    scale = np.std(seen)
    if lmax == 2 * nside:  # where the spin-2 analysis is accurate: the same maps
        assert np.max(np.abs(bands - seen[None])) < 1e-3 * scale
    # at any band limit: the same BB power below 2 nside, to 1 %
    b_seen = harmonics.analysis(seen, nside, lmax, 2, 3)[1]
    ref = harmonics.cross_spectrum(b_seen, b_seen, lmax)[30 : 2 * nside]
    for band in bands:
        b = harmonics.analysis(band, nside, lmax, 2, 3)[1]
        np.testing.assert_allclose(
            harmonics.cross_spectrum(b, b, lmax)[30 : 2 * nside], ref, rtol=0.01
        )
    # the widest beam is the 27 GHz one (91 arcmin), and every ratio is at most 1
    ratio = cr.beam_ratio(SOSAT, lmax)
    assert np.all(ratio[:, 2:] <= 1 + 1e-12) and np.allclose(ratio[1], 1.0)  # l >= 2: spin 2
    # before: the bands differ by their beams
    assert np.max(np.abs(observed.total_qu[4] - observed.total_qu[1])) > 0.1 * scale


@pytest.mark.parametrize("instrument", ["sosat", "white_two_splits"])
def test_pixel_noise_variance_is_that_of_the_noise_simulations(instrument):
    inst = SOSAT if instrument == "sosat" else dataclasses.replace(LITEBIRD, splits=2)
    nside, lmax = 16, 47
    ratio = cr.beam_ratio(inst, lmax)
    maps = np.stack(
        [
            cr.coadd(cr.reconvolve(simulate_noise(inst, nside, lmax, 3, i).qu, ratio, nside, lmax))
            for i in range(24)
        ]
    )  # [real, freq, 2, npix]
    measured = maps.var(axis=(0, 2, 3))
    expected = cr.pixel_noise_variance(inst, nside, lmax)
    # 24 x 2 x 3072 correlated samples per band: a few per cent; 1/f bands scatter more
    np.testing.assert_allclose(measured / expected, 1.0, atol=0.15)
    assert abs(np.median(measured / expected) - 1) < 0.06


def test_a_beam_free_single_split_instrument_is_left_untouched():
    assert not cr.needed(LITEBIRD) and cr.map_transfer(LITEBIRD, 47) is None
    qu = np.ones((2, 12 * 16**2))
    assert cr.cmb_as_seen(None, qu, LITEBIRD, 16, 47) is qu
    assert cr.needed(SOSAT) and cr.needed(dataclasses.replace(LITEBIRD, splits=2))


@pytest.mark.slow
def test_so_sat_data_run_through_the_fit_and_the_r_stage(tmp_path):
    """SO-SAT-like simulation (beams, filter, 1/f noise, two splits) through compsep_fit
    and r_likelihood: the fit recovers the sky's mean beta_d, the r stage runs on the
    reconvolved maps with the common transfer in its theory."""
    base = tiny_config(nside=32)
    sky = dict(base["skies"]["grf"], galactic_envelope={"amplitude": 0.0})
    sky["dust"] = {"beta": {"mean": 1.54, "amplitude": 0.0}}
    sky["synchrotron"] = {"beta": {"mean": -3.0, "amplitude": 0.0}}
    cfg = validate_config(
        dict(
            base,
            skies={"grf": sky},
            # lmax 2 nside, where the spin-2 analyses of the reconvolution are accurate
            simulations={"so": dict(base["simulations"]["so"], noise_realisations=4, lmax=64)},
            compsep=dict(base["compsep"], simulations=["so"], zones=["GAL060_L"]),
        )
    )
    paths = {k: tmp_path / f"{k}.h5" for k in ("camb", "sky", "masks", "signal", "fit", "r")}
    simulate.camb_spectra(cfg, paths["camb"])
    simulate.sky(cfg, "so", paths["camb"], paths["sky"])
    simulate.masks(cfg, "so", paths["masks"], sky=paths["sky"])
    simulate.frequency_maps(cfg, "so", paths["sky"], paths["signal"])
    compsep.compsep_fit(
        cfg, "so", "GAL060_L", "single", paths["masks"], paths["signal"], paths["fit"]
    )
    fit = io.read_product(paths["fit"], "compsep_fit")
    assert fit["converged"].all()
    maps = fit["parameter_maps"]  # beta_d, T_d, beta_s per zone pixel
    beta_d = maps.reshape(-1, 3, maps.shape[-1])[:, 0, 0]  # one patch: one value each
    assert abs(np.mean(beta_d) - 1.54) < 3 * max(np.std(beta_d), 1e-3) / np.sqrt(beta_d.size)
    rlike.r_likelihood(cfg, "so", "single", paths["sky"], paths["camb"], [paths["fit"]], paths["r"])
    r = io.read_product(paths["r"], "r_likelihood")
    assert r["likelihood"].max() == 1.0 and np.all(np.isfinite(r["r_hat_per_realisation"]))
