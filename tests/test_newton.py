"""The structured Newton fit: known answers, the long-run optimum, bounds, flags."""

import jax.numpy as jnp
import numpy as np
import pytest
from test_compsep import BOUNDS, MODEL, START, cap, components, mix, spectra_sky_32  # noqa: F401

from bmodesep.core.compsep import clustering, fitting, gridsearch, newton
from bmodesep.core.compsep import likelihood as compsep

NEWTON = fitting.FitOptions(method="newton")


def fit(layout, problem, data, options):
    return gridsearch.fit_data(layout, problem, data, options)


def test_schur_step_solves_the_full_damped_system():
    """The Schur-complement step equals a dense solve of the assembled Hessian."""
    rng = np.random.default_rng(0)
    k0, k1, k2, n_cells = 5, 3, 2, 12
    cell_params = np.stack(
        [
            rng.integers(0, k0, n_cells),
            k0 + rng.integers(0, k1, n_cells),
            k0 + k1 + rng.integers(0, k2, n_cells),
        ],
        axis=1,
    )
    blocks3 = rng.normal(size=(n_cells, 3, 3))
    hess = np.einsum("cij,ckj->cik", blocks3, blocks3) + 0.1 * np.eye(3)  # SPD per cell
    n = k0 + k1 + k2
    full = np.zeros((n, n))
    for c in range(n_cells):
        idx = cell_params[c]
        full[np.ix_(idx, idx)] += hess[c]
    grad = rng.normal(size=n)
    free = np.ones(n, bool)
    free[[1, 6]] = False
    lam = 0.3
    blocks = newton._assemble(jnp.asarray(hess), jnp.asarray(cell_params), k0, n)
    step, ok = newton._damped_step(blocks, jnp.asarray(grad), jnp.asarray(free), lam, k0)
    scale = max(np.abs(np.diag(full)).max(), 0.0)
    damped = full + lam * np.diag(np.abs(np.diag(full)) + 1e-10 * scale)
    keep = np.flatnonzero(free)
    want = np.zeros(n)
    want[keep] = np.linalg.solve(damped[np.ix_(keep, keep)], -grad[keep])
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(step), want, rtol=1e-10, atol=1e-12)


def test_noiseless_multipatch_sky_gives_back_its_parameters():
    """Known answer: patch-constant parameters, no noise: the minimum is the truth."""
    nside = 16
    zone = cap(nside, 0.2)
    patches = {
        "beta_d": clustering.kmeans_patches(zone, 6, 0),
        "temperature_d": clustering.kmeans_patches(zone, 3, 0),
        "beta_s": clustering.kmeans_patches(zone, 2, 0),
    }
    layout = compsep.cell_layout(patches, zone)
    rng = np.random.default_rng(2)
    truth = np.concatenate(
        [
            1.55 + 0.1 * rng.standard_normal(6),
            19 + 2 * rng.standard_normal(3),
            -3 + 0.1 * rng.standard_normal(2),
        ]
    )
    per_pixel = truth[layout.pixel_params]  # [pix, 3]
    cmb, dust, sync = components(layout.pixels.size, 4)
    d = mix(tuple(per_pixel.T), cmb, dust, sync)
    problem = gridsearch.Problem(
        MODEL, d, d, lambda i: np.zeros_like(d), 2, np.ones(15), START, BOUNDS, NEWTON
    )
    res = fit(layout, problem, d, NEWTON._replace(rtol=1e-14))
    assert bool(res.converged) and not np.asarray(res.at_bound).any()
    np.testing.assert_allclose(np.asarray(res.params), truth, rtol=1e-7)
    assert int(res.iterations) < 60


@pytest.mark.parametrize("kind", ["multires", "kmeans"])
def test_every_realisation_reaches_the_long_lbfgs_optimum(spectra_sky_32, kind):  # noqa: F811
    zone, problem, multires_layout, _ = spectra_sky_32
    if kind == "multires":
        layout = multires_layout
    else:
        patches = {
            p: clustering.kmeans_patches(zone, k, 0)
            for p, k in zip(compsep.PARAMETERS, (40, 6, 3), strict=True)
        }
        layout = compsep.cell_layout(patches, zone)
    long_run = fitting.FitOptions(rtol=1e-15, max_iterations=4000)
    for i in range(3):  # realisation 2 has a spurious minimum on a bound (see BENCHMARKS.md)
        data = problem.signal + problem.noise(i)
        ours = fit(layout, problem, data, NEWTON)
        ref = fit(layout, problem, data, long_run)
        assert bool(ours.converged)
        assert abs(float(ours.nll - ref.nll)) <= 1e-3
        assert float(ours.nll) <= float(ref.nll) + 1e-6
        inside = ~np.asarray(ours.at_bound) & ~np.asarray(ref.at_bound)
        np.testing.assert_allclose(
            np.asarray(ours.params)[inside], np.asarray(ref.params)[inside], rtol=1e-5
        )


def test_bounds_are_held_and_flagged_with_the_gradient_outwards():
    nside = 8
    zone = cap(nside, 0.0)
    patches = {p: clustering.single_patch(zone) for p in compsep.PARAMETERS}
    layout = compsep.cell_layout(patches, zone)
    n = layout.pixels.size
    cmb, dust, sync = components(n, 5)
    d = mix((np.full(n, 1.9), np.full(n, 20.0), np.full(n, -3.0)), cmb, dust, sync)
    bounds = dict(BOUNDS, beta_d=(0.5, 1.7))
    problem = gridsearch.Problem(
        MODEL, d, d, lambda i: np.zeros_like(d), 2, np.ones(15), START, bounds, NEWTON
    )
    res = gridsearch.evaluate_configuration(layout, problem)
    assert res.converged.all()
    assert res.at_bound[0, 0] and not res.at_bound[0, 1:].any()
    assert res.params[0, 0] == pytest.approx(1.7)


def test_a_fit_cut_short_is_flagged_not_converged(spectra_sky_32):  # noqa: F811
    _, problem, layout, _ = spectra_sky_32
    data = problem.signal + problem.noise(0)
    res = fit(layout, problem, data, NEWTON._replace(max_iterations=2))
    assert int(res.iterations) == 2 and not bool(res.converged)


def test_batched_newton_fits_equal_the_loop(spectra_sky_32):  # noqa: F811
    _, problem, layout, _ = spectra_sky_32
    small = problem._replace(n_realisations=2, options=NEWTON)
    loop = gridsearch.evaluate_configuration(layout, small)
    batch = gridsearch.evaluate_configuration(
        layout, small._replace(options=NEWTON._replace(batched=True))
    )
    assert batch.converged.all() and loop.converged.all()
    np.testing.assert_allclose(batch.nll, loop.nll, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch.params, loop.params, rtol=1e-8)
