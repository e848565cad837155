import healpy as hp
import numpy as np
import pytest

from bmodesep.core import harmonics
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate.cmb import cmb_alm


def dl(cl, ell):
    return ell * (ell + 1) * cl[ell] / (2 * np.pi)


def test_tensor_template_is_r1_with_flat_tilt(spectra):
    ell = 80
    # the recombination bump of r = 1: D_80^BB ~ 0.065 uK^2 (r = 0.01 -> 6.5e-4)
    assert dl(spectra.cl("BB", 1.0, 0.0), ell) == pytest.approx(0.065, rel=0.1)
    assert np.all(spectra.tensor_r1[2, 2:] > 0)
    # lensing BB is nearly white, ~2e-6 uK^2, on large scales
    assert spectra.cl("BB", 0.0, 1.0)[50] == pytest.approx(2e-6, rel=0.3)


def test_a_lens_scales_only_bb(spectra):
    ee1, ee2 = spectra.cl("EE", 0.0, 1.0), spectra.cl("EE", 0.0, 0.3)
    bb1, bb2 = spectra.cl("BB", 0.0, 1.0), spectra.cl("BB", 0.0, 0.3)
    assert np.array_equal(ee1, ee2)
    assert np.allclose(bb2[2:], 0.3 * bb1[2:])


def test_cmb_realisation_has_the_model_spectra(spectra):
    lmax, r, a_lens = 250, 0.1, 0.5
    alm = cmb_alm(spectra, r, a_lens, lmax, rng_for(1, "cmb"))
    ell = np.arange(lmax + 1)
    for i, which in enumerate(("EE", "BB")):
        model = spectra.cl(which, r, a_lens)[: lmax + 1]
        measured = harmonics.cross_spectrum(alm[i], alm[i], lmax)
        sel = slice(10, None)
        z = (measured - model)[sel] / (model * np.sqrt(2 / (2 * ell + 1)))[sel]
        assert abs(z.mean()) < 4 / np.sqrt(z.size), which
        assert 0.85 < z.std() < 1.15, which


def test_cmb_qu_maps_give_back_their_alm(spectra):
    nside, lmax = 32, 64
    alm = cmb_alm(spectra, 0.0, 1.0, lmax, rng_for(2, "cmb"))
    qu = harmonics.synthesis(alm, nside, lmax, spin=2)
    cls = hp.anafast(np.stack([np.zeros_like(qu[0]), *qu]), lmax=lmax, iter=10)
    assert np.allclose(cls[1][2:], harmonics.cross_spectrum(alm[0], alm[0], lmax)[2:], rtol=1e-6)
    assert np.allclose(cls[2][2:], harmonics.cross_spectrum(alm[1], alm[1], lmax)[2:], rtol=1e-6)


def test_b_modes_only_and_reproducibility(spectra):
    a = cmb_alm(spectra, 0.01, 1.0, 60, rng_for(3, "cmb"), b_modes_only=True)
    assert np.all(a[0] == 0) and np.any(a[1] != 0)
    b = cmb_alm(spectra, 0.01, 1.0, 60, rng_for(3, "cmb"), b_modes_only=True)
    assert np.array_equal(a, b)


def test_lmax_beyond_spectra_is_refused(spectra):
    with pytest.raises(ValueError, match="lmax"):
        cmb_alm(spectra, 0.0, 1.0, spectra.lmax + 1, rng_for(1, "cmb"))
