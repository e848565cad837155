import healpy as hp
import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.randomness import rng_for


def test_alm_layout_matches_healpy():
    lmax = 12
    ell, m = hp.Alm.getlm(lmax)
    assert np.array_equal(harmonics.alm_ell(lmax), ell)
    assert np.array_equal(harmonics.alm_m(lmax), m)
    assert harmonics.alm_size(lmax) == hp.Alm.getsize(lmax)


def test_spin2_synthesis_matches_healpy():
    nside, lmax = 16, 47
    alm = harmonics.gaussian_alm(np.ones(lmax + 1), lmax, rng_for(1, "t"))
    eb = np.stack([alm, 0.5 * alm])
    eb[:, harmonics.alm_ell(lmax) < 2] = 0
    ours = harmonics.synthesis(eb, nside, lmax, spin=2)
    theirs = hp.alm2map(np.stack([np.zeros_like(alm), *eb]), nside, lmax=lmax)[1:]
    assert np.allclose(ours, theirs, atol=1e-10 * np.abs(theirs).max())


def test_iterated_analysis_equals_healpy_and_converges():
    nside, lmax = 16, 2 * 16
    alm = harmonics.gaussian_alm(np.ones(lmax + 1), lmax, rng_for(2, "t"))
    eb = np.stack([alm, 0.5 * alm])
    eb[:, harmonics.alm_ell(lmax) < 2] = 0
    maps = harmonics.synthesis(eb, nside, lmax, spin=2)
    for n_iter in (0, 3):
        ours = harmonics.analysis(maps, nside, lmax, spin=2, n_iter=n_iter)
        theirs = hp.map2alm(np.stack([np.zeros_like(maps[0]), *maps]), lmax=lmax, iter=n_iter)[1:]
        assert np.abs(ours - theirs).max() < 1e-12 * np.abs(eb).max()
    # Jacobi iterations converge to the exact inverse for a band-limited map
    back = harmonics.analysis(maps, nside, lmax, spin=2, n_iter=10)
    assert np.abs(back - eb).max() < 1e-9 * np.abs(eb).max()


def test_gaussian_alm_has_its_power_spectrum():
    lmax = 300
    cl = 1.0 / (np.arange(lmax + 1) + 10.0) ** 2
    alm = harmonics.gaussian_alm(cl, lmax, rng_for(3, "t"))
    measured = harmonics.cross_spectrum(alm, alm, lmax)
    assert np.allclose(measured, hp.alm2cl(alm), rtol=1e-12)
    ell = np.arange(lmax + 1)
    z = (measured - cl)[50:] / (cl * np.sqrt(2.0 / (2 * ell + 1)))[50:]
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and 0.8 < z.std() < 1.2


def test_correlated_alm_have_the_requested_correlation():
    lmax = 400
    c1, c2 = np.ones(lmax + 1), 4.0 * np.ones(lmax + 1)
    rho = 0.6
    cov = np.array([[c1, rho * np.sqrt(c1 * c2)], [rho * np.sqrt(c1 * c2), c2]])
    a = harmonics.correlated_gaussian_alm(cov, lmax, rng_for(4, "t"))
    x = harmonics.cross_spectrum(a[0], a[1], lmax)[2:].sum()
    n1 = harmonics.cross_spectrum(a[0], a[0], lmax)[2:].sum()
    n2 = harmonics.cross_spectrum(a[1], a[1], lmax)[2:].sum()
    assert abs(x / np.sqrt(n1 * n2) - rho) < 0.02


def test_gaussian_beam_matches_healpy_polarisation_beam():
    lmax = 200
    ours = harmonics.gaussian_beam(30.0, lmax, spin=2)
    theirs = hp.gauss_beam(np.radians(0.5), lmax=lmax, pol=True)[:, 1]
    assert np.allclose(ours, theirs, rtol=1e-10)
    assert np.allclose(
        harmonics.gaussian_beam(30.0, lmax, spin=0),
        hp.gauss_beam(np.radians(0.5), lmax=lmax),
        rtol=1e-10,
    )


def test_pixel_geometry_matches_healpy():
    """The ducc0 pixel helpers the compsep jobs use instead of importing healpy."""
    for nside in (1, 4, 32):
        pix = np.arange(12 * nside**2)
        assert harmonics.nside_of(pix.size) == nside == hp.npix2nside(pix.size)
        np.testing.assert_allclose(
            harmonics.pix2vec(nside, pix), np.stack(hp.pix2vec(nside, pix), axis=-1), atol=1e-15
        )
        np.testing.assert_array_equal(harmonics.ring2nest(nside, pix), hp.ring2nest(nside, pix))
        np.testing.assert_array_equal(harmonics.nest2ring(nside, pix), hp.nest2ring(nside, pix))
    assert harmonics.nside_of(12 * 3**2) == 3 and hp.isnpixok(12 * 3**2)  # RING: any nside
    for n in (11, 13, 47, 49151):  # none is 12 nside^2
        assert harmonics.nside_of(n) is None and not hp.isnpixok(n)
    assert harmonics.nside_of(0) is None


def test_alm_lmax_inverts_the_layout_size():
    import pytest

    from bmodesep.errors import DataError

    for lmax in (0, 1, 2, 7, 64, 383):
        assert harmonics.alm_lmax(harmonics.alm_size(lmax)) == lmax
    with pytest.raises(DataError, match="5 coefficients are not a triangular alm layout"):
        harmonics.alm_lmax(5)
