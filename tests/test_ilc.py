"""Needlet and harmonic ILC (duivenvoorden2025 sec. II.3): known answers of the method."""

import numpy as np
import pytest

from bmodesep.core import harmonics
from bmodesep.core.nilc import ilc
from bmodesep.core.nilc.ilc import channel_beams
from bmodesep.core.randomness import rng_for
from bmodesep.errors import ConfigError, DataError
from bmodesep.settings import instrument_from_spec, preset

SOSAT = instrument_from_spec("sosat", preset("sosat"))
JOINT = ilc.Compression("needlet", ilc.COMPONENTS, "all", ilc.Fiducial())


def random_covariances(n, p, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n + 4, p)) * rng.uniform(0.1, 10, (n, 1, 1))
    return np.einsum("akp,bkp->abp", x, x) / (n + 4)


def test_needlets_are_a_partition_of_unity():
    h = ilc.needlet_windows([300, 120, 60], 383)
    assert h.shape == (4, 384)
    np.testing.assert_allclose((h**2).sum(axis=0), 1.0, atol=1e-12)
    assert np.all(h >= 0)
    for bad in ([60, 120, 300], [300, 300, 60], [300, -1]):
        with pytest.raises(ConfigError, match="FWHM"):
            ilc.needlet_windows(bad, 100)


def test_smoothing_widths_for_sosat_at_nside_128():
    """8 channels, 4 deprojected components, tolerance 0.01: 122, 53, 23 and 7.5 degrees
    (the 91-arcmin 27 GHz beam falls below 1e-3 inside the two finest needlets)."""
    lmax = 383
    beams = channel_beams(SOSAT, lmax)
    plan = ilc.plan_scales(beams, lmax, 5, 4, ilc.Settings())
    assert plan.used.sum(axis=1).tolist() == [8, 8, 7, 7]
    assert not plan.used[2:, SOSAT.frequencies_ghz.index(27)].any()
    fwhm = np.degrees(ilc.fwhm_from_sigma(plan.sigma_rad))
    np.testing.assert_allclose(fwhm, [122, 53, 23, 7.5], rtol=0.02)


@pytest.mark.parametrize("keep", [None, [0], [1]])
def test_unit_response_to_the_preserved_sed_and_zero_to_the_deprojected(keep):
    mixing = ilc.component_seds(SOSAT.frequencies_ghz, ilc.COMPONENTS, ilc.Fiducial())
    cov = random_covariances(8, 500)
    w = ilc.ilc_weights(cov, mixing)
    rows = list(range(5)) if keep is None else keep
    response = np.einsum("cfp,fd->cdp", w[rows], mixing)  # W A
    expected = np.eye(5)[rows][:, :, None]
    # relative to the weights' scale: W A = E to 1e-10
    scale = np.abs(w).max() * np.abs(mixing).max()
    assert np.abs(response - expected).max() < 1e-10 * max(scale, 1.0)
    # the same through ilc_apply on data made of one SED
    for c in range(5):
        s = ilc.ilc_apply(cov, mixing, np.broadcast_to(mixing[:, c, None], (8, 500)))
        np.testing.assert_allclose(s, np.broadcast_to(np.eye(5)[:, c, None], s.shape), atol=1e-9)


def test_ilc_variance_is_not_above_any_single_channel():
    """w^T C w <= C_ff for every channel (each channel alone is a unit-response estimate)."""
    mixing = ilc.component_seds(SOSAT.frequencies_ghz, ["cmb"], ilc.Fiducial())
    cov = random_covariances(8, 300, seed=3)
    w = ilc.ilc_weights(cov, mixing)[0]  # [f, p]
    var = np.einsum("fp,fgp,gp->p", w, cov, w)
    channel_var = np.einsum("ffp->fp", cov)
    assert np.all(var <= channel_var.min(axis=0) * (1 + 1e-12))


def sky_alm(lmax, n_comp, seed):
    ell = np.arange(lmax + 1)
    cl = np.where(ell >= 2, 1.0 / (ell + 5.0) ** 2, 0.0)
    return np.stack(
        [harmonics.gaussian_alm(cl, lmax, rng_for(seed, "ilc-sky", c)) for c in range(n_comp)]
    )


def observe(components_alm, mixing, beams):
    return (
        np.einsum("fc,cl->fl", mixing, components_alm)
        * beams[:, harmonics.alm_ell(beams.shape[1] - 1)]
    )


@pytest.mark.parametrize("basis", ["needlet", "harmonic"])
def test_joint_ilc_of_a_noiseless_sky_of_the_assumed_seds_returns_the_components(basis):
    nside, lmax = 32, 64
    beams = channel_beams(SOSAT, lmax)
    mixing = ilc.component_seds(SOSAT.frequencies_ghz, ilc.COMPONENTS, ilc.Fiducial())
    s = sky_alm(lmax, 5, seed=1)
    alm = observe(s, mixing, beams)
    comp = ilc.Compression(basis, ilc.COMPONENTS, "all", ilc.Fiducial())
    # 10 Jacobi iterations: the analysis itself is exact to 1e-11 here (3 give 6e-6)
    settings = ilc.Settings(n_iter_out=10)
    out = ilc.compress(alm, beams, SOSAT.frequencies_ghz, comp, nside, lmax, settings=settings)
    target = beams[np.argmax(beams[:, -1])]  # the smallest beam
    expected = harmonics.almxfl(s, target)
    for c in range(5):
        err = np.linalg.norm(out.alm[c] - expected[c]) / np.linalg.norm(expected[c])
        assert err < 1e-9, (ilc.COMPONENTS[c], err)


def noisy_sosat(nside, lmax, seed=2):
    beams = channel_beams(SOSAT, lmax)
    mixing = ilc.component_seds(SOSAT.frequencies_ghz, ilc.COMPONENTS, ilc.Fiducial())
    s = sky_alm(lmax, 5, seed) * np.array([1.0, 30.0, 3.0, 5.0, 1.0])[:, None]
    noise = np.stack(
        [
            harmonics.gaussian_alm(np.full(lmax + 1, 1e-4), lmax, rng_for(seed, "ilc-noise", f))
            for f in range(8)
        ]
    )
    return observe(s, mixing, beams) + noise, beams


def test_fast_path_agrees_with_the_exact_path():
    nside, lmax = 32, 95
    alm, beams = noisy_sosat(nside, lmax)
    fast = ilc.compress(alm, beams, SOSAT.frequencies_ghz, JOINT, nside, lmax).alm
    exact = ilc.compress(
        alm, beams, SOSAT.frequencies_ghz, JOINT, nside, lmax, settings=ilc.Settings(exact=True)
    ).alm
    rel = np.linalg.norm(fast - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert np.all(rel < 1e-3), rel


def test_channel_order_does_not_matter():
    nside, lmax = 32, 64
    alm, beams = noisy_sosat(nside, lmax)
    freqs = np.asarray(SOSAT.frequencies_ghz)
    ref = ilc.compress(alm, beams, freqs, JOINT, nside, lmax).alm
    order = np.array([5, 0, 7, 2, 1, 6, 3, 4])
    shuffled = ilc.compress(alm[order], beams[order], freqs[order], JOINT, nside, lmax).alm
    np.testing.assert_allclose(shuffled, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_constrained_ilc_keeps_one_component_and_costs_variance():
    nside, lmax = 32, 64
    alm, beams = noisy_sosat(nside, lmax)
    freqs = SOSAT.frequencies_ghz
    joint = ilc.compress(alm, beams, freqs, JOINT, nside, lmax).alm
    constrained = ilc.compress(alm, beams, freqs, JOINT._replace(keep="cmb"), nside, lmax).alm
    assert constrained.shape == (1, joint.shape[1])
    # the CMB row of the joint ILC is the constrained ILC that deprojects the others,
    # up to the smoothing width (same N_deproj here, so identical)
    np.testing.assert_allclose(constrained[0], joint[0], atol=1e-9 * np.abs(joint[0]).max())
    plain = ilc.compress(
        alm, beams, freqs, ilc.Compression("needlet", ("cmb",), "cmb", ilc.Fiducial()), nside, lmax
    ).alm
    power = [np.sum(np.abs(a[0]) ** 2) for a in (plain, constrained)]
    assert power[0] < power[1]  # deprojection costs variance
    # every (rebeamed) channel alone is a unit-response CMB estimate: the NILC beats them all
    channels = ilc.rebeam(alm, beams)
    assert power[0] < np.sum(np.abs(channels) ** 2, axis=1).min()


def test_bad_inputs_are_refused():
    nside, lmax = 32, 64
    alm, beams = noisy_sosat(nside, lmax)
    freqs = SOSAT.frequencies_ghz
    with pytest.raises(DataError, match=r"3 channel.*5 components"):
        ilc.compress(alm[:3], beams[:3], freqs[:3], JOINT, nside, lmax)
    twice = ilc.Compression("needlet", ("cmb", "dust", "cmb"), "all", ilc.Fiducial())
    with pytest.raises(ConfigError, match="repeated"):
        ilc.compress(alm, beams, freqs, twice, nside, lmax)
    mixing = ilc.component_seds(freqs, ["cmb", "dust"], ilc.Fiducial())
    degenerate = np.stack([mixing[:, 0], mixing[:, 1], 2 * mixing[:, 1]], axis=1)
    with pytest.raises(DataError, match="degenerate"):
        ilc.needlet_ilc(alm, beams, degenerate, nside, lmax)
    with pytest.raises(DataError, match="degenerate"):
        ilc.harmonic_ilc(alm, beams, degenerate, lmax)
    bad = alm.copy()
    bad[2, 5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        ilc.compress(bad, beams, freqs, JOINT, nside, lmax)
    with pytest.raises(DataError, match="NaN"):
        ilc.b_mode_alm(np.full((2, 12 * nside**2), np.nan), nside, lmax)
    with pytest.raises(DataError, match="shape"):
        ilc.b_mode_alm(np.zeros((2, 100)), nside, lmax)


def test_moment_seds_are_the_derivatives():
    freqs = np.array([27.0, 93.0, 280.0])
    fid = ilc.Fiducial(beta_d=1.5, temperature_d=19.6, beta_s=-3.0)
    a = ilc.component_seds(freqs, ilc.COMPONENTS, fid)
    eps = 1e-6
    up = ilc.component_seds(
        freqs, ["dust", "synchrotron"], fid._replace(beta_d=1.5 + eps, beta_s=-3 + eps)
    )
    down = ilc.component_seds(
        freqs, ["dust", "synchrotron"], fid._replace(beta_d=1.5 - eps, beta_s=-3 - eps)
    )
    np.testing.assert_allclose(a[:, 3:], (up - down) / (2 * eps), rtol=1e-6)
    ref = ilc.component_seds([353.0, 23.0], ["dust", "synchrotron"], fid)
    assert ref[0, 0] == pytest.approx(1.0) and ref[1, 1] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown ILC components"):
        ilc.component_seds(freqs, ["cmb", "free-free"], fid)


def test_compress_all_is_compress_of_each_split_and_its_synthesis():
    """compress_all of maps from a function of (realisation, split): each split's alm equal
    the plain b_mode_alm -> compress path, the maps their synthesis."""
    nside, lmax = 16, 32
    beams = channel_beams(SOSAT, lmax)
    comp = ilc.Compression("harmonic", ("cmb", "dust"), "all", ilc.Fiducial())
    rng = np.random.default_rng(5)
    qu = rng.normal(size=(2, 3, len(SOSAT.frequencies_ghz), 2, harmonics.npix(nside)))
    settings = ilc.Settings()
    done = ilc.compress_all(
        lambda i, s: qu[i, s],
        2,
        3,
        beams,
        SOSAT.frequencies_ghz,
        comp,
        nside,
        lmax,
        lmax,
        settings,
        8,
    )
    assert done.alm.shape == (2, 3, 2, harmonics.alm_size(lmax)) and done.plan is None
    for i, s in [(0, 0), (1, 2)]:
        alm = ilc.b_mode_alm(qu[i, s], nside, lmax, 3)
        one = ilc.compress(alm, beams, SOSAT.frequencies_ghz, comp, nside, lmax, lmax, settings, 8)
        np.testing.assert_array_equal(done.alm[i, s], one.alm)
        np.testing.assert_allclose(
            done.maps[i, s, 1], harmonics.synthesis(one.alm[1], nside, lmax, 0)[0], atol=1e-12
        )
