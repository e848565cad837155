"""Fits of patch configurations over noise realisations, and the grid search (kabalan2025).

A configuration is a patch map per spectral parameter.  For each configuration every
noise realisation is fitted (structured Newton, :mod:`newton`, starting from the
configuration's noiseless fit; or L-BFGS, :mod:`fitting`) and the CMB is reconstructed;
the grid objective is eq. (9),

    sigma^2_CMB = < Var_i[ s_CMB^(i) ] >_pixels        (Q and U, over the zone's pixels),

recorded with the per-realisation spatial variance used by the paper's code, the NLL
mean and spread, and the systematic residual: the CMB reconstructed from the noiseless
foreground-only sky with parameters fitted to it (sec. 4, W(d_fg)).  The global grid
G = {K_beta_d} x {K_T_d} x {K_beta_s} is sliced evenly over P processes whether or not
P divides |G| (sec. 2.4).  Shapes are padded per batch of configurations so that one
compilation serves them all.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bmodesep.core.compsep import fitting, newton
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.compsep.likelihood import PARAMETERS, CellLayout, SpectralModel
from bmodesep.errors import ConfigError, DataError


class GridPoint(NamedTuple):
    beta_d: int
    temperature_d: int
    beta_s: int


def grid_points(grid: Mapping[str, Sequence[int]]) -> list[GridPoint]:
    """All configurations of the grid, beta_d slowest, beta_s fastest."""
    return [GridPoint(*p) for p in itertools.product(*(grid[name] for name in PARAMETERS))]


def chunk_bounds(n_total: int, n_chunks: int, index: int) -> tuple[int, int]:
    """Process ``index`` of ``n_chunks`` gets ``[floor(I N / P), floor((I+1) N / P))``."""
    if not 0 <= index < n_chunks:
        raise ConfigError(f"chunk {index} does not exist among {n_chunks}")
    return index * n_total // n_chunks, (index + 1) * n_total // n_chunks


class Problem(NamedTuple):
    """Everything a zone's fits need, restricted to the zone's pixels."""

    model: SpectralModel
    signal: np.ndarray  # [freq, 2, n_zone] uK_CMB, CMB + foregrounds
    foreground: np.ndarray  # [freq, 2, n_zone] foregrounds alone
    noise: Callable[[int], np.ndarray]  # realisation -> [freq, 2, n_zone]
    n_realisations: int
    ninv: np.ndarray  # [freq] 1/uK_CMB^2 per pixel
    start: Mapping[str, float]
    bounds: Mapping[str, Sequence[float]]
    options: fitting.FitOptions
    # optional, for residual spectra: the true CMB [2, n_zone] and a function from a zone
    # map [2, n_zone] to its BB spectrum C_l
    cmb_true: np.ndarray | None = None
    bb_spectrum: Callable[[np.ndarray], np.ndarray] | None = None
    # JAX devices to spread the realisations over (> 1: batched fits, sharded)
    devices: int = 1


NOISE_CACHE_BYTES = 2 * 1024**3


def memoised_noise(
    noise: Callable[[int], np.ndarray], n_realisations: int, limit_bytes: int = NOISE_CACHE_BYTES
) -> Callable[[int], np.ndarray]:
    """``noise`` whose realisations are drawn once and kept, when all of them fit in
    ``limit_bytes``: every configuration of a grid search fits the same realisations, and
    drawing them (full-sky maps in 15 bands) cost more than a warm-started fit."""
    kept: dict[int, np.ndarray] = {}

    def draw(i: int) -> np.ndarray:
        if i in kept:
            return kept[i]
        maps = noise(i)
        if maps.nbytes * n_realisations <= limit_bytes:
            maps.setflags(write=False)
            kept[i] = maps
        return maps

    return draw


class ConfigResult(NamedTuple):
    params: np.ndarray  # [n_real, n_params] best fit per realisation
    nll: np.ndarray  # [n_real]
    iterations: np.ndarray  # [n_real]
    converged: np.ndarray  # [n_real] bool
    at_bound: np.ndarray  # [n_real, n_params] bool
    cmb: np.ndarray | None  # [n_real, 2, n_zone] reconstructed CMB (when kept)
    cmb_variance: float  # eq. 9, uK^2
    spatial_variance: np.ndarray  # [n_real] variance over pixels of each CMB map, uK^2
    foreground_params: np.ndarray  # [n_params] fitted to the noiseless foreground-only sky
    systematic_components: np.ndarray  # [3, 2, n_zone] W(d_fg): CMB, dust, synchrotron
    systematic_residual: float  # mean over pixels and Q/U of W(d_fg)_CMB^2, uK^2
    total_residual_cl: np.ndarray | None = None  # <C_l(s^(n) - s_true)>_n (eq. 12)
    systematic_cl: np.ndarray | None = None  # C_l(W(d_fg)) (eq. 11)
    components: np.ndarray | None = None  # [3, 2, n_zone] W d of realisation 0 (when kept)


@lru_cache(maxsize=32)
def _compiled_fitter(
    model: SpectralModel,
    memory_size: int,
    max_linesearch_steps: int,
    batched: bool = False,
    method: str = "lbfgs",
    k0: int = 0,
):
    """Compiled fit; tolerance and iteration cap are arguments (no recompilation).

    ``lbfgs``: bulk with the fast form, exact polish.  ``newton``: the structured Newton
    fit of :mod:`newton` on the exact form (``k0``: the number of beta_d patches).
    """
    if method not in fitting.FIT_METHODS:
        raise ConfigError(
            f"unknown fit method '{method}' (known: {', '.join(fitting.FIT_METHODS)})"
        )
    if method == "newton":

        def newton_fit(roots, cells, ninv, x0, lower, upper, max_iterations, rtol, lam):
            cell_params, cell_pairs = cells

            def objective(x):
                return compsep.residual_cells(x, roots, cell_params, ninv, model)

            def derivatives(x):
                return compsep.cell_derivatives(x, roots, cell_params, ninv, model)

            res = newton.minimize_cells(
                objective,
                derivatives,
                x0,
                cell_params,
                cell_pairs,
                k0,
                lower,
                upper,
                max_iterations,
                rtol,
                lam,
            )
            return res._replace(nll=res.nll - compsep.data_term(roots, ninv))

        if batched:
            return jax.jit(
                jax.vmap(newton_fit, in_axes=(0, None, None, None, None, None, None, None, None))
            )
        return jax.jit(newton_fit)

    def fit(roots, cells, ninv, x0, lower, upper, max_iterations, rtol, lam):
        del lam  # Newton's damping; L-BFGS has none
        cell_params = cells[0]
        options = fitting.FitOptions(max_iterations, rtol, memory_size, max_linesearch_steps)

        def fast(x, data):
            return compsep.residual_cells_fast(x, data, cell_params, ninv, model)

        def exact(x, data):
            return compsep.residual_cells(x, data, cell_params, ninv, model)

        curv = compsep.curvature_diagonal(x0, roots, cell_params, ninv, model)
        bulk = fitting.minimize(fast, x0, roots, lower, upper, curv, options)
        polish = fitting.minimize(exact, bulk.params, roots, lower, upper, curv, options)
        return polish._replace(
            nll=polish.nll - compsep.data_term(roots, ninv),
            iterations=bulk.iterations + polish.iterations,
        )

    if batched:
        return jax.jit(jax.vmap(fit, in_axes=(0, None, None, None, None, None, None, None, None)))
    return jax.jit(fit)


def fit_cells(
    model: SpectralModel,
    options: fitting.FitOptions,
    roots,
    layout: CellLayout,
    ninv,
    x0,
    lower,
    upper,
    warm: bool = False,
) -> fitting.FitResult:
    """Fit one data set given its cell statistics; ``warm``: ``x0`` lies near the optimum
    (Newton starts with little damping)."""
    return cell_fitter(model, options, layout, ninv, lower, upper)(roots, x0, warm)


def cell_fitter(
    model: SpectralModel, options: fitting.FitOptions, layout: CellLayout, ninv, lower, upper
) -> Callable[..., fitting.FitResult]:
    """``fit(roots, x0, warm=False)`` for many data sets of one layout: the arguments that
    do not change are converted to device arrays once (each conversion is a dispatch,
    ~10% of a small configuration's time when repeated per fit)."""
    fitter = _compiled_fitter(
        model,
        options.memory_size,
        options.max_linesearch_steps,
        False,
        options.method,
        layout.n_patches[0],
    )
    fixed = (_cells(layout), jnp.asarray(ninv))
    limits = (jnp.asarray(options.max_iterations), jnp.asarray(float(options.rtol)))
    damping = {w: jnp.asarray(newton.LAMBDA_WARM if w else newton.LAMBDA_START) for w in (0, 1)}

    def fit(roots, x0, warm: bool = False) -> fitting.FitResult:
        return fitter(roots, *fixed, x0, lower, upper, *limits, damping[bool(warm)])

    return fit


def _cells(layout: CellLayout):
    """The layout's cells as the compiled fits take them: (cell_params, cell_pairs)."""
    pairs = layout.cell_pairs
    if pairs is None:
        pairs = compsep.beta_d_pairs(layout.cell_params)
    return jnp.asarray(layout.cell_params), jnp.asarray(pairs)


@lru_cache(maxsize=32)
def _compiled_weights(model: SpectralModel):
    return jax.jit(lambda p, ninv, cp: compsep.cell_weights(p, ninv, cp, model))


def parameter_vectors(
    layout: CellLayout, start: Mapping[str, float], bounds: Mapping[str, Sequence[float]]
):
    """Start values and bounds expanded to the layout's flat parameter vector."""

    def expand(values):
        pairs = zip(layout.n_patches, values, strict=True)
        return jnp.concatenate([jnp.full(k, float(v)) for k, v in pairs])

    x0 = expand([start[p] for p in PARAMETERS])
    lower = expand([bounds[p][0] for p in PARAMETERS])
    upper = expand([bounds[p][1] for p in PARAMETERS])
    if bool(jnp.any(x0 < lower) | jnp.any(x0 > upper)):
        raise ConfigError(f"start values {dict(start)} lie outside the bounds {dict(bounds)}")
    return x0, lower, upper


def fit_data(
    layout: CellLayout,
    problem: Problem,
    data,
    options: fitting.FitOptions | None = None,
) -> fitting.FitResult:
    """Fit one data set ``[freq, 2, n_zone]`` of ``problem``'s zone with ``layout``'s patches.

    The fit of each realisation of :func:`evaluate_configuration` from the configured
    start (cell statistics and the fit of ``options.method``), without the CMB
    reconstruction; ``options`` replaces ``problem.options``.  Compiled once per model,
    cell count and fit options.
    """
    x0, lower, upper = parameter_vectors(layout, problem.start, problem.bounds)
    roots = compsep.cell_statistics(data, layout.cell_of_pixel, layout.n_cells)
    return fit_cells(
        problem.model,
        problem.options if options is None else options,
        roots,
        layout,
        problem.ninv,
        x0,
        lower,
        upper,
    )


def noiseless_fit(layout: CellLayout, problem: Problem):
    """The configuration's fit of the noiseless foreground-only sky, from the configured
    start, and W(d_fg) ``[3, 2, n_zone]`` (CMB, dust, synchrotron) at its parameters."""
    for what, arr in (("signal", problem.signal), ("foreground", problem.foreground)):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"the {what} maps of the zone contain NaN or inf")
    ninv = jnp.asarray(problem.ninv)
    x0, lower, upper = parameter_vectors(layout, problem.start, problem.bounds)
    fit = cell_fitter(problem.model, problem.options, layout, ninv, lower, upper)
    roots = compsep.cell_statistics(problem.foreground, layout.cell_of_pixel, layout.n_cells)
    res = fit(roots, x0, False)
    weights = _compiled_weights(problem.model)(res.params, ninv, jnp.asarray(layout.cell_params))
    return res, compsep.apply_weights(np.asarray(weights), problem.foreground, layout.cell_of_pixel)


def evaluate_configuration(
    layout: CellLayout,
    problem: Problem,
    keep_maps: bool = False,
) -> ConfigResult:
    """Fit every noise realisation and the foreground-only sky for one configuration."""
    weights_fn = _compiled_weights(problem.model)
    index = compsep.cell_index(layout.cell_of_pixel, layout.n_cells)
    ninv = jnp.asarray(problem.ninv)
    cell_params = jnp.asarray(layout.cell_params)
    x0, lower, upper = parameter_vectors(layout, problem.start, problem.bounds)

    def reconstruct(params, d, components=3):
        weights = np.asarray(weights_fn(params, ninv, cell_params))[:, :components]
        return compsep.apply_weights(weights, d, layout.cell_of_pixel)

    fit = cell_fitter(problem.model, problem.options, layout, ninv, lower, upper)

    def fit_and_reconstruct(d, start, warm, components=3):
        roots = compsep.cell_statistics(d, layout.cell_of_pixel, layout.n_cells, index)
        res = fit(roots, start, warm)
        return res, reconstruct(res.params, d, components)

    fg_fit, fg_components = noiseless_fit(layout, problem)
    # warm start: every realisation starts from the noiseless (foreground-only) fit
    warm = problem.options.warm_start
    start = fg_fit.params if warm else x0
    batched = problem.options.batched or problem.devices > 1
    if batched:
        batch = _batched_fits(layout, problem, start, lower, upper, warm)
    fits, cmb_maps, spatial = [], [], []
    mean = m2 = total_cl = first = None
    for i in range(problem.n_realisations):  # default a loop: batched was ~10x slower on CPU
        # kept maps: every component of the first realisation (its foreground amplitudes)
        n_comp = 3 if keep_maps and i == 0 else 1
        if batched:
            res = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], batch)
            comps = reconstruct(res.params, problem.signal + problem.noise(i), n_comp)
        else:
            d = problem.signal + problem.noise(i)
            res, comps = fit_and_reconstruct(d, start, warm, components=n_comp)
        if n_comp == 3:
            first = np.asarray(comps)
        cmb = np.asarray(comps[0])
        if problem.bb_spectrum is not None:
            cl = problem.bb_spectrum(cmb - problem.cmb_true)
            total_cl = cl if total_cl is None else total_cl + cl
        fits.append(jax.device_get(res))
        spatial.append(float(np.var(cmb)))
        if keep_maps:
            cmb_maps.append(cmb)
        if mean is None:
            mean, m2 = cmb.copy(), np.zeros_like(cmb)
        else:  # Welford: variance over realisations without holding every map
            delta = cmb - mean
            mean += delta / (i + 1)
            m2 += delta * (cmb - mean)
    n = problem.n_realisations
    cmb_variance = float(np.mean(m2 / (n - 1))) if n > 1 else float("nan")
    fg_cmb = np.asarray(fg_components[0])
    return ConfigResult(
        params=np.stack([np.asarray(f.params) for f in fits]),
        nll=np.array([float(f.nll) for f in fits]),
        iterations=np.array([int(f.iterations) for f in fits]),
        converged=np.array([bool(f.converged) for f in fits]),
        at_bound=np.stack([np.asarray(f.at_bound) for f in fits]),
        cmb=np.stack(cmb_maps) if keep_maps else None,
        cmb_variance=cmb_variance,
        spatial_variance=np.array(spatial),
        foreground_params=np.asarray(fg_fit.params),
        systematic_components=np.asarray(fg_components),
        systematic_residual=float(np.mean(fg_cmb**2)),
        total_residual_cl=None if total_cl is None else total_cl / problem.n_realisations,
        systematic_cl=None if problem.bb_spectrum is None else problem.bb_spectrum(fg_cmb),
        components=first,
    )


class Observation(NamedTuple):
    """The fit of maps that contain their noise (an observation) and the sky it implies."""

    fit: fitting.FitResult
    components: np.ndarray  # [3, 2, n_zone] W d: CMB, dust, synchrotron
    model: np.ndarray  # [freq, 2, n_zone] A(beta_hat) W d: the best-fit sky, noiseless
    foreground_model: np.ndarray  # [freq, 2, n_zone] its foreground part


def fit_observation(layout: CellLayout, problem: Problem) -> Observation:
    """Fit the observed maps ``problem.signal`` (noise included) once, from the
    configured start, and build the sky of the best fit, ``A(beta_hat) W d``."""
    if not np.all(np.isfinite(problem.signal)):
        raise DataError("the observed maps of the zone contain NaN or inf")
    res = fit_data(layout, problem, problem.signal)
    weights = _compiled_weights(problem.model)(
        res.params, jnp.asarray(problem.ninv), jnp.asarray(layout.cell_params)
    )
    comps = compsep.apply_weights(np.asarray(weights), problem.signal, layout.cell_of_pixel)
    p = np.asarray(res.params)[layout.pixel_params]  # [n_zone, 3]
    a = np.asarray(compsep.mixing_matrix(problem.model, p[:, 0], p[:, 1], p[:, 2]))
    model = np.einsum("pfi,isp->fsp", a, comps)
    foreground = np.einsum("pfi,isp->fsp", a[..., 1:], comps[1:])
    return Observation(jax.device_get(res), comps, model, foreground)


def evaluate_observation(
    layout: CellLayout, problem: Problem, keep_maps: bool = True
) -> tuple[ConfigResult, Observation]:
    """An observation's configuration: its fit, and the statistical residual around it
    by a parametric bootstrap, :func:`evaluate_configuration` of the best-fit sky
    ``A(beta_hat) W d`` plus each noise realisation (noise and spectral-index errors of
    the fit, first order in neither).  The best-fit sky lies in the model, so its
    systematic residual is zero by construction: the observation's foreground residual is
    unknown without truth and stays in the data.  ``components`` of the result are the
    observation's ``W d``; ``cmb_true`` of the bootstrap is their CMB."""
    obs = fit_observation(layout, problem)
    boot = problem._replace(
        signal=obs.model,
        foreground=obs.foreground_model,
        cmb_true=obs.components[0],
    )
    result = evaluate_configuration(layout, boot, keep_maps)
    return result._replace(components=obs.components), obs


def _batched_fits(layout: CellLayout, problem: Problem, x0, lower, upper, warm: bool):
    """All realisations fitted at once with ``vmap`` (the batch runs as long as its slowest)."""
    index = compsep.cell_index(layout.cell_of_pixel, layout.n_cells)
    roots = jnp.asarray(
        np.stack(
            [
                compsep.cell_statistics(
                    problem.signal + problem.noise(i), layout.cell_of_pixel, layout.n_cells, index
                )
                for i in range(problem.n_realisations)
            ]
        )
    )
    fitter = _compiled_fitter(
        problem.model,
        problem.options.memory_size,
        problem.options.max_linesearch_steps,
        True,
        problem.options.method,
        layout.n_patches[0],
    )
    opts = problem.options
    n = problem.n_realisations
    roots = shard_over_devices(roots, problem.devices)
    result = fitter(
        roots,
        _cells(layout),
        jnp.asarray(problem.ninv),
        x0,
        lower,
        upper,
        jnp.asarray(opts.max_iterations),
        jnp.asarray(float(opts.rtol)),
        jnp.asarray(newton.LAMBDA_WARM if warm else newton.LAMBDA_START),
    )
    return jax.tree_util.tree_map(lambda leaf: leaf[:n], result)


def shard_over_devices(batch, devices: int):
    """Spread the leading (realisation) axis of ``batch`` over the first ``devices`` devices.

    The batch is padded to a multiple of ``devices`` by repeating its last entry (the
    caller drops the padding); ``jit`` then runs each device's share where it lies.
    """
    if devices <= 1:
        return batch
    available = jax.devices()
    if devices > len(available):
        raise ConfigError(
            f"{devices} JAX devices requested, but JAX sees {len(available)} "
            f"({', '.join(sorted({d.platform for d in available}))}): check the job's GPU "
            "request (resources gpu) and that the CUDA build of jax is installed"
        )
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(available[:devices]), ("realisation",))
    sharding = NamedSharding(mesh, PartitionSpec("realisation"))

    def place(leaf):
        pad = -leaf.shape[0] % devices
        if pad:
            leaf = jnp.concatenate([leaf, jnp.repeat(leaf[-1:], pad, axis=0)])
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map(place, batch)


def pad_layouts(layouts: Sequence[CellLayout]) -> list[CellLayout]:
    """Pad a batch of layouts to common cell and parameter counts (one compilation)."""
    if not layouts:
        return []
    n_cells = max(lay.n_cells for lay in layouts)
    n_patches = [max(lay.n_patches[i] for lay in layouts) for i in range(3)]
    n_pairs = max(len(lay.cell_pairs) for lay in layouts)
    return [compsep.pad_layout(lay, n_cells, n_patches, n_pairs) for lay in layouts]
