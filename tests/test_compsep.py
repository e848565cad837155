"""Spectral likelihood and fits with known answers (kabalan2025 secs. 2-3)."""

import healpy as hp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmodesep.core.compsep import clustering, fitting, gridsearch
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.simulate.instrument import white_noise_sigma_per_pixel
from bmodesep.errors import ConfigError, DataError
from bmodesep.settings import instrument_from_spec, preset

LITEBIRD = instrument_from_spec("litebird", preset("litebird"))
MODEL = compsep.SpectralModel(LITEBIRD.frequencies_ghz)
START = {"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0}
BOUNDS = {"beta_d": (0.5, 5.0), "temperature_d": (5.0, 100.0), "beta_s": (-6.0, -0.5)}


def cap(nside, zmin=0.5):
    return hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2] > zmin


def components(n, seed=0):
    """CMB, dust and synchrotron Q/U amplitudes at the reference frequencies, uK_CMB."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.0, (2, n)), rng.normal(0, 10.0, (2, n)), rng.normal(0, 5.0, (2, n))


def mix(params_per_pixel, cmb, dust, sync):
    a = np.asarray(compsep.mixing_matrix(MODEL, *params_per_pixel))  # [pix, f, 3]
    return (
        a[:, :, 0].T[:, None] * cmb[None]
        + a[:, :, 1].T[:, None] * dust[None]
        + a[:, :, 2].T[:, None] * sync[None]
    )


def single_layout(zone):
    patches = {p: clustering.single_patch(zone) for p in compsep.PARAMETERS}
    return compsep.cell_layout(patches, zone)


def test_mixing_matrix_columns_are_the_seds():
    a = compsep.mixing_matrix(MODEL, 1.6, 19.0, -3.1)
    assert np.allclose(a[:, 0], 1.0)
    from bmodesep.core import seds

    assert np.allclose(a[:, 1], seds.dust_sed(np.array(LITEBIRD.frequencies_ghz), 1.6, 19.0))
    assert np.allclose(a[:, 2], seds.synchrotron_sed(np.array(LITEBIRD.frequencies_ghz), -3.1))


def test_inverse_3x3_is_exact():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(50, 3, 3))
    m = m @ np.swapaxes(m, 1, 2) + 0.1 * np.eye(3)
    assert np.allclose(np.asarray(compsep._inv3_sym(jnp.asarray(m))) @ m, np.eye(3), atol=1e-10)


@pytest.mark.slow
def test_cell_statistics_reproduce_the_per_pixel_likelihood():
    nside = 16
    zone = cap(nside, 0.2)
    patches = {
        "beta_d": clustering.kmeans_patches(zone, 12, 0),
        "temperature_d": clustering.kmeans_patches(zone, 3, 1),
        "beta_s": clustering.multires_patches(zone, 2),
    }
    layout = compsep.cell_layout(patches, zone)
    rng = np.random.default_rng(2)
    d = rng.normal(0, 3, (15, 2, layout.pixels.size))
    ninv = 1.0 / rng.uniform(0.5, 2.0, 15) ** 2
    x = jnp.asarray(rng.uniform([1.3] * layout.n_params, [1.8] * layout.n_params))
    x = x.at[layout.n_patches[0] : layout.n_patches[0] + layout.n_patches[1]].set(21.0)
    stats = compsep.cell_statistics(d, layout.cell_of_pixel, layout.n_cells)
    cells = compsep.nll_cells(x, stats, jnp.asarray(layout.cell_params), jnp.asarray(ninv), MODEL)
    pixels = compsep.nll_pixels(
        x,
        d,
        jnp.broadcast_to(jnp.asarray(ninv)[:, None], (15, d.shape[-1])),
        jnp.asarray(layout.pixel_params),
        MODEL,
    )
    assert float(cells) == pytest.approx(float(pixels), rel=1e-12)


def test_autodiff_gradient_matches_finite_differences():
    nside = 8
    zone = cap(nside, 0.0)
    layout = compsep.cell_layout(
        {
            "beta_d": clustering.multires_patches(zone, 2),
            "temperature_d": clustering.single_patch(zone),
            "beta_s": clustering.multires_patches(zone, 1),
        },
        zone,
    )
    cmb, dust, sync = components(layout.pixels.size)
    d = mix(
        (np.full(cmb.shape[1], 1.5), np.full(cmb.shape[1], 20.0), np.full(cmb.shape[1], -3.0)),
        cmb,
        dust,
        sync,
    )
    d = d + np.random.default_rng(3).normal(0, 0.5, d.shape)
    ninv = jnp.full(15, 4.0)
    stats = compsep.cell_statistics(d, layout.cell_of_pixel, layout.n_cells)
    cp = jnp.asarray(layout.cell_params)
    x = jnp.asarray(
        np.r_[
            np.linspace(1.4, 1.7, layout.n_patches[0]),
            19.0,
            np.linspace(-3.2, -2.9, layout.n_patches[2]),
        ]
    )
    f = jax.jit(lambda v: compsep.nll_cells(v, stats, cp, ninv, MODEL))
    g = jax.jit(jax.grad(lambda v: compsep.nll_cells(v, stats, cp, ninv, MODEL)))
    grad = np.asarray(g(x))
    curvature = jax.jit(lambda v: compsep.curvature_diagonal(v, stats, cp, ninv, MODEL))
    diag = np.asarray(curvature(x))
    for i in range(x.size):
        h = 1e-5 * max(1.0, abs(float(x[i])))
        xp, xm = x.at[i].add(h), x.at[i].add(-h)
        fd = (float(f(xp)) - float(f(xm))) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-6 * np.abs(grad).max())
        fd2 = (float(g(xp)[i]) - float(g(xm)[i])) / (2 * h)
        assert diag[i] == pytest.approx(fd2, rel=1e-4, abs=1e-6 * np.abs(diag).max())


def test_noiseless_single_patch_sky_gives_back_its_parameters():
    nside = 16
    zone = cap(nside, 0.3)
    layout = single_layout(zone)
    n = layout.pixels.size
    truth = (1.62, 18.5, -2.85)
    cmb, dust, sync = components(n, 4)
    d = mix(tuple(np.full(n, t) for t in truth), cmb, dust, sync)
    problem = gridsearch.Problem(
        MODEL,
        d,
        d,
        lambda i: np.zeros_like(d),
        2,
        np.full(15, 1.0),
        START,
        BOUNDS,
        fitting.FitOptions(rtol=1e-16, max_iterations=3000),
    )
    result = gridsearch.evaluate_configuration(layout, problem, keep_maps=True)
    assert np.allclose(result.params[0], truth, rtol=0, atol=1e-6)
    assert result.converged.all() and not result.at_bound.any()
    # at the true parameters the reconstruction returns the components exactly: W(A s) = s
    assert np.allclose(result.systematic_components[0], cmb, atol=1e-6)
    assert np.allclose(result.systematic_components[1], dust, atol=1e-6)


@pytest.mark.slow
def test_fit_reaches_the_optimum_of_a_long_run(spectra_sky_32):
    _, problem, layout, _ = spectra_sky_32
    data = jnp.asarray(problem.signal + problem.noise(0))
    roots = compsep.cell_statistics(data, layout.cell_of_pixel, layout.n_cells)
    x0, lower, upper = gridsearch.parameter_vectors(layout, START, BOUNDS)
    args = (roots, layout, problem.ninv, x0, lower, upper)
    short = gridsearch.fit_cells(MODEL, fitting.FitOptions(method="lbfgs"), *args)
    long = gridsearch.fit_cells(
        MODEL, fitting.FitOptions(method="lbfgs", rtol=0.0, max_iterations=1500), *args
    )
    assert bool(short.converged) and int(short.iterations) < 1000
    assert -1e-6 < float(short.nll - long.nll) < 0.05  # in -ln L


@pytest.mark.slow
def test_batched_fits_equal_the_loop(spectra_sky_32):
    zone, problem, _, _ = spectra_sky_32
    layout = compsep.cell_layout(
        {
            "beta_d": clustering.multires_patches(zone, 2),
            "temperature_d": clustering.single_patch(zone),
            "beta_s": clustering.single_patch(zone),
        },
        zone,
    )
    small = problem._replace(n_realisations=3)
    loop = gridsearch.evaluate_configuration(layout, small)
    batch = gridsearch.evaluate_configuration(
        layout, small._replace(options=fitting.FitOptions(batched=True))
    )
    assert batch.converged.all()
    assert np.allclose(batch.nll, loop.nll, rtol=0, atol=0.05)
    assert np.allclose(batch.params, loop.params, atol=1e-3)
    assert batch.cmb_variance == pytest.approx(loop.cmb_variance, rel=1e-3)


@pytest.mark.slow
def test_multiresolution_beats_one_patch_on_a_varying_sky(spectra_sky_32):
    zone, problem, _, truth = spectra_sky_32
    errors = {}
    for name, nsd in (("single", 0), ("multires", 8)):
        patches = {
            "beta_d": clustering.multires_patches(zone, nsd),
            "temperature_d": clustering.single_patch(zone),
            "beta_s": clustering.single_patch(zone),
        }
        layout = compsep.cell_layout(patches, zone)
        res = gridsearch.evaluate_configuration(layout, problem._replace(n_realisations=2))
        beta_map = res.foreground_params[layout.pixel_params[:, 0]]
        errors[name] = np.sqrt(np.mean((beta_map - truth) ** 2))
        errors[name + "_syst"] = res.systematic_residual
    assert errors["multires"] < 0.7 * errors["single"]
    assert errors["multires_syst"] < 0.5 * errors["single_syst"]


def test_parameters_ending_on_a_bound_are_flagged():
    nside = 8
    zone = cap(nside, 0.0)
    layout = single_layout(zone)
    n = layout.pixels.size
    cmb, dust, sync = components(n, 5)
    d = mix((np.full(n, 1.9), np.full(n, 20.0), np.full(n, -3.0)), cmb, dust, sync)
    bounds = dict(BOUNDS, beta_d=(0.5, 1.7))
    problem = gridsearch.Problem(
        MODEL, d, d, lambda i: np.zeros_like(d), 2, np.ones(15), START, bounds, fitting.FitOptions()
    )
    res = gridsearch.evaluate_configuration(layout, problem)
    assert res.at_bound[0, 0] and not res.at_bound[0, 1:].any()
    assert res.params[0, 0] == pytest.approx(1.7)


def test_bad_inputs_are_clear_errors():
    nside = 8
    zone = cap(nside, 0.0)
    good = clustering.single_patch(zone)
    outside = good.copy()
    outside[np.flatnonzero(~zone)[0]] = 0
    with pytest.raises(DataError, match="beta_d labels pixels outside the zone"):
        compsep.cell_layout({"beta_d": outside, "temperature_d": good, "beta_s": good}, zone)
    gap = good.copy()
    gap[np.flatnonzero(zone)[:10]] = 2
    with pytest.raises(DataError, match="beta_s: zone labels must be the contiguous set"):
        compsep.cell_layout({"beta_d": good, "temperature_d": good, "beta_s": gap}, zone)
    layout = single_layout(zone)
    d = np.ones((15, 2, layout.pixels.size))
    d[3, 0, 5] = np.nan
    problem = gridsearch.Problem(
        MODEL, d, d, lambda i: np.zeros_like(d), 2, np.ones(15), START, BOUNDS, fitting.FitOptions()
    )
    with pytest.raises(DataError, match="signal maps of the zone contain NaN"):
        gridsearch.evaluate_configuration(layout, problem)
    with pytest.raises(ConfigError, match="outside the bounds"):
        gridsearch.parameter_vectors(layout, dict(START, temperature_d=200.0), BOUNDS)


@pytest.fixture(scope="module")
def spectra_sky_32():
    """A GRF sky with spatially varying beta_d at nside 32 seen by LiteBIRD, in a polar cap."""
    from bmodesep.config import validate_config
    from bmodesep.core.simulate.cmb import compute_camb_spectra
    from bmodesep.core.simulate.instrument import simulate_noise
    from bmodesep.core.simulate.sky import foreground_maps, simulate_parametric_sky
    from bmodesep.settings import cosmology, sky_model

    nside, lmax = 32, 95
    cfg = validate_config(
        {
            "skies": {
                "s": {
                    "kind": "grf",
                    "seed": 3,
                    "dust": {"amplitude_uk2": 100.0, "beta": {"mean": 1.54, "amplitude": 2.0}},
                    "synchrotron": {"beta": {"mean": -3.0}},
                    "galactic_envelope": {"amplitude": 10.0},
                }
            }
        }
    )
    spectra = compute_camb_spectra(cosmology(cfg["cmb"]), lmax)
    sky = simulate_parametric_sky(sky_model(cfg["skies"]["s"]), 0.0, 1.0, spectra, nside, lmax)
    zone = cap(nside, 0.0)
    pix = np.flatnonzero(zone)
    fg = foreground_maps(sky, LITEBIRD.frequencies_ghz)[:, :, pix]
    signal = fg + sky.cmb_qu[None][:, :, pix]
    sigma = white_noise_sigma_per_pixel(LITEBIRD, nside)
    problem = gridsearch.Problem(
        MODEL,
        signal,
        fg,
        lambda i: simulate_noise(LITEBIRD, nside, lmax, 8, i).qu[0][:, :, pix],
        4,
        1.0 / sigma**2,
        START,
        BOUNDS,
        fitting.FitOptions(),
    )
    layout = compsep.cell_layout(
        {
            "beta_d": clustering.multires_patches(zone, 8),
            "temperature_d": clustering.multires_patches(zone, 2),
            "beta_s": clustering.multires_patches(zone, 1),
        },
        zone,
    )
    return zone, problem, layout, sky.beta_d[pix]
