"""A screened grid search (kabalan2025's rules at a fraction of the fits).

Pass 1 fits each configuration once, on the noiseless foreground-only sky (the fit the
exhaustive search already makes for the systematic residual W(d_fg) and the warm start),
and predicts what its noise realisations would give.  Pass 2 runs the realisations only
for the configurations whose predicted selection score could be the best
(:func:`candidates`); the selection then reads measured values only.

The predicted CMB variance (eq. 9) is first order in the noise.  At the fitted indices
beta^, the reconstructed CMB of realisation i is

    s_i = W(beta^ + db_i) (d_0 + n_i)  ~  W(beta^) (d_0 + n_i) + J db_i,
    J = d(W(beta) d_0)_CMB / d beta,     db_i ~ N(0, H^-1),

with H the Hessian of chi2/2 (the profile likelihood, :mod:`likelihood`) at the noiseless
data d_0 (the CMB + foreground sky the realisations are fitted on).  The two terms are
uncorrelated (the profile score is orthogonal to the amplitudes' score), so per pixel of
cell c

    Var[s_CMB] = [(A^T N^-1 A)^-1]_CMB,CMB + j_p^T Sigma_c j_p,

Sigma_c the 3x3 block of H^-1 of the cell's (beta_d, T_d, beta_s).  H^-1 is never formed:
its beta_d block is diagonal and the (T_d, beta_s) block small, so the cell blocks come
from the Schur complement, as the Newton step does (:mod:`newton`).  Averaged over the
zone, the index term needs only each cell's statistic D_c = sum d d^T:
sum_p j_p^T Sigma j_p = tr(Sigma_c G_c D_c G_c^T), G_c = dW_c[CMB]/d(beta_c).
Parameters on a bound of the noiseless fit are held fixed (no variance), as are those
touching no data; where that matters (indices running to their bounds in noise, low
signal to noise) the prediction is first order only: the validation measures it against
the Monte Carlo variance (BENCHMARKS.md).

The predicted mean -ln L over realisations is -ln L(beta^; d_0) minus the noise's
expected contribution (3 per pixel and Stokes parameter, the same for every
configuration) and half the number of free indices (what fitting them gains).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bmodesep.core.compsep import gridsearch, newton
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.compsep.likelihood import CellLayout
from bmodesep.core.compsep.selection import Criteria, Rule, select
from bmodesep.errors import ConfigError

SEARCHES = ("exhaustive", "screened")


class Prediction(NamedTuple):
    """Pass 1 of one configuration: its noiseless fit and the predicted realisations."""

    foreground_params: np.ndarray  # [n_params] fitted to the noiseless foreground-only sky
    converged: bool
    at_bound: np.ndarray  # [n_params] bool, of that fit
    systematic_components: np.ndarray  # [3, 2, n_zone] W(d_fg): CMB, dust, synchrotron
    systematic_residual: float  # mean square of W(d_fg)_CMB, uK^2 (exact, as the grid's)
    noise_variance: float  # zone mean of [(A^T N^-1 A)^-1]_CMB, uK^2
    index_variance: float  # zone mean of j^T Sigma j, uK^2
    nll_mean: float  # predicted mean -ln L over realisations
    free_parameters: int  # indices neither on a bound nor without data
    systematic_cl: np.ndarray | None = None  # C_l(W(d_fg)) (eq. 11)
    statistical_cl: np.ndarray | None = None  # predicted <C_l(s - s_true)> - C_l(W(d_fg))

    @property
    def cmb_variance(self) -> float:
        """The predicted eq. 9, uK^2."""
        return self.noise_variance + self.index_variance


def _cell_blocks(hess, cell_params, free, k0: int):
    """The 3x3 blocks ``[cell, 3, 3]`` of H^-1 for every cell's (beta_d, T_d, beta_s),
    from the per-cell Hessians; fixed parameters (``free`` False) get zero rows and
    columns.  The beta_d block of H is diagonal (``d``), so with the coupling ``c`` and
    the (T_d, beta_s) block ``e``, S = e - c^T d^-1 c and
    H^-1 = [[d^-1 + d^-1 c S^-1 c^T d^-1, -d^-1 c S^-1], [., S^-1]]."""
    m = free.shape[0] - k0
    i0, j12 = cell_params[:, 0], cell_params[:, 1:] - k0
    f0, f12 = free[:k0], free[k0:]
    d = jnp.zeros(k0, hess.dtype).at[i0].add(hess[:, 0, 0])
    d = jnp.where(f0 & (d > 0), d, 1.0)
    coupling = hess[:, 0, 1:] * f0[i0][:, None] * f12[j12]
    c = jnp.zeros((k0, m), hess.dtype).at[i0[:, None], j12].add(coupling)
    e = jnp.zeros((m, m), hess.dtype).at[j12[:, :, None], j12[:, None, :]].add(hess[:, 1:, 1:])
    keep = f12[:, None] & f12[None, :]
    e = jnp.where(keep, e, 0.0) + jnp.diag(jnp.where(f12, 0.0, 1.0))
    s_inv = jnp.linalg.inv(e - (c / d[:, None]).T @ c) * keep
    cs = c @ s_inv  # [k0, m]
    var0 = (1.0 / d + jnp.sum(cs * c, axis=1) / d**2) * f0
    cov0 = -(cs / d[:, None]) * f0[:, None]
    corner = var0[i0][:, None, None]
    edge = cov0[i0[:, None], j12]  # [cell, 2]
    inner = s_inv[j12[:, :, None], j12[:, None, :]]  # [cell, 2, 2]
    top = jnp.concatenate([corner[:, :, 0], edge], axis=1)[:, None, :]  # [cell, 1, 3]
    rest = jnp.concatenate([edge[:, :, None], inner], axis=2)  # [cell, 2, 3]
    return jnp.concatenate([top, rest], axis=1)


def _cmb_weight_jacobian(params, ninv, cell_params, model):
    """``G[cell, 3, freq]``: d W_c[CMB, :] / d(the cell's beta_d, T_d, beta_s)."""
    p = params[cell_params]  # [cell, 3]

    def cmb_row(q):
        a = compsep.mixing_matrix(model, q[:, 0], q[:, 1], q[:, 2])
        b = a * ninv[None, :, None]
        k = compsep._inv3_sym(jnp.einsum("cfi,cfj->cij", a, b))
        return jnp.einsum("cj,cfj->cf", k[:, 0], b)

    def along(axis):
        tangent = jnp.zeros_like(p).at[:, axis].set(1.0)
        return jax.jvp(cmb_row, (p,), (tangent,))[1]

    return jnp.stack([along(a) for a in range(3)], axis=1)


def _noise_term(params, ninv, cell_params, model):
    """``[(A^T N^-1 A)^-1]_CMB,CMB`` per cell."""
    p = params[cell_params]
    a = compsep.mixing_matrix(model, p[:, 0], p[:, 1], p[:, 2])
    k = compsep._inv3_sym(jnp.einsum("cfi,cfj->cij", a, a * ninv[None, :, None]))
    return k[:, 0, 0]


@partial(jax.jit, static_argnames=("model", "k0"))
def _predicted_terms(params, roots, cell_params, counts, free, ninv, model, k0: int):
    """Sums over the zone of the index term, of the noise term and -ln L at ``params``
    (padding cells: no pixels, zero statistics, no contribution)."""
    _, hess = compsep.cell_derivatives(params, roots, cell_params, ninv, model)
    sigma = _cell_blocks(hess, cell_params, free, k0)
    jac = _cmb_weight_jacobian(params, ninv, cell_params, model)  # [cell, 3, f]
    data = jnp.matmul(roots, jnp.swapaxes(roots, 1, 2))  # D_c
    gdg = jnp.einsum("caf,cfg,cbg->cab", jac, data, jac)
    per_cell = _noise_term(params, ninv, cell_params, model)
    noise = jnp.sum(per_cell * 2 * counts)
    nll = compsep.nll_cells(params, roots, cell_params, ninv, model)
    return jnp.sum(sigma * gdg), noise, nll, per_cell, jac, hess


@partial(jax.jit, static_argnames="k0")
def _index_draws(hess, z, cell_params, cell_pairs, free, k0: int):
    """Draws of the index error db ~ N(0, H^-1) ``[draw, n_params]``: g = sum_c L_c z_c has
    covariance H (L_c L_c^T each cell's block, negative curvature clipped), and H db = g is
    solved as the Newton step solves it (Schur complement on beta_d, no damping)."""
    evals, evecs = jnp.linalg.eigh(hess)
    roots = evecs * jnp.sqrt(jnp.clip(evals, 0.0, None))[:, None, :]  # [cell, 3, 3]
    n = free.shape[0]
    blocks = newton._assemble(hess, cell_params, k0, n)

    def one(zk):
        g = (
            jnp.zeros(n, hess.dtype)
            .at[cell_params.ravel()]
            .add(jnp.einsum("cab,cb->ca", roots, zk).ravel())
        )
        step, _ = newton._damped_step(blocks, -g, free, 0.0, k0, cell_params, cell_pairs)
        return step

    return jax.vmap(one)(z)


def needs_statistical(rule: Rule) -> bool:
    """Whether the screen of ``rule`` reads the predicted statistical BB (r_aware against
    the statistical residual): only then does pass 1 draw its residual maps."""
    return rule.name == "r_aware" and rule.reference == "statistical"


def predict_configuration(
    layout: CellLayout, problem: gridsearch.Problem, statistical: bool = True
) -> Prediction:
    """Pass 1 of the screened search for one configuration (one fit).  Layouts padded to
    common sizes (``gridsearch.pad_layouts``) share one compilation.  With sky spectra
    (``problem.bb_spectrum``) the systematic BB is measured, and with ``statistical``
    the statistical BB predicted too (16 residual maps and their spectra: about half of
    pass 1's time at nside 64, needed only where :func:`needs_statistical`)."""
    fg_fit, components = gridsearch.noiseless_fit(layout, problem)
    index = compsep.cell_index(layout.cell_of_pixel, layout.n_cells)
    roots = compsep.cell_statistics(problem.signal, layout.cell_of_pixel, layout.n_cells, index)
    counts = np.diff(index.starts)  # pixels per cell (padding cells: none)
    touched = np.zeros(layout.n_params, bool)
    touched[layout.cell_params[counts > 0].ravel()] = True
    free = touched & ~np.asarray(fg_fit.at_bound)
    index_sum, noise_sum, nll, per_cell, jac, hess = _predicted_terms(
        fg_fit.params,
        jnp.asarray(roots),
        jnp.asarray(layout.cell_params),
        jnp.asarray(counts, dtype=float),
        jnp.asarray(free),
        jnp.asarray(problem.ninv),
        problem.model,
        layout.n_patches[0],
    )
    statistical_cl = None
    if statistical and problem.bb_spectrum is not None:
        statistical_cl = _statistical_spectrum(
            layout, problem, np.asarray(per_cell), np.asarray(jac), hess, free
        )
    n_values = 2 * layout.cell_of_pixel.size  # Q and U of every zone pixel
    n_free = int(free.sum())
    fg_cmb = np.asarray(components[0])
    return Prediction(
        foreground_params=np.asarray(fg_fit.params),
        converged=bool(fg_fit.converged),
        at_bound=np.asarray(fg_fit.at_bound),
        systematic_components=np.asarray(components),
        systematic_residual=float(np.mean(fg_cmb**2)),
        noise_variance=float(noise_sum) / n_values,
        index_variance=float(index_sum) / n_values,
        nll_mean=float(nll) - 1.5 * n_values - 0.5 * n_free,
        free_parameters=n_free,
        systematic_cl=None if problem.bb_spectrum is None else problem.bb_spectrum(fg_cmb),
        statistical_cl=statistical_cl,
    )


STATISTICAL_DRAWS = 16


def _statistical_spectrum(layout, problem, per_cell, jac, hess, free, draws=STATISTICAL_DRAWS):
    """The predicted statistical BB residual: the mean spectrum of ``draws`` first-order
    residual maps, white noise of each cell's variance [(A^T N^-1 A)^-1]_CMB plus the
    index errors db ~ N(0, H^-1) propagated (j_p . db).  Unlike the variance, the
    spectrum sees that the index term is correlated over patches (more power on large
    scales than white noise of the same variance).  Fixed seed: a function of the
    configuration and the data alone."""
    rng = np.random.default_rng(0)
    cells = layout.cell_of_pixel
    z = rng.standard_normal((draws, layout.n_cells, 3))
    steps = np.asarray(
        _index_draws(
            hess,
            jnp.asarray(z),
            jnp.asarray(layout.cell_params),
            jnp.asarray(_pairs(layout)),
            jnp.asarray(free),
            layout.n_patches[0],
        )
    )  # [draw, n_params]
    # j_p [pix, 3, stokes] = G_c d(p)
    j = np.einsum("paf,fsp->pas", jac[cells], np.asarray(problem.signal), optimize=True)
    per_pixel = steps[:, layout.cell_params[cells]]  # [draw, pix, 3]
    index_maps = np.einsum("pas,kpa->ksp", j, per_pixel, optimize=True)
    sigma = np.sqrt(np.clip(per_cell, 0.0, None))[cells]
    noise_maps = sigma * rng.standard_normal((draws, 2, cells.size))
    return np.mean([problem.bb_spectrum(m) for m in index_maps + noise_maps], axis=0)


def _pairs(layout: CellLayout) -> np.ndarray:
    pairs = layout.cell_pairs
    return compsep.beta_d_pairs(layout.cell_params) if pairs is None else pairs


class Screen(NamedTuple):
    """Which configurations pass 2 measures, and why."""

    candidates: np.ndarray  # [n_config] bool
    best_predicted: int  # the configuration the rule picks from the predictions


def candidates(predicted: Criteria, free: np.ndarray, rule: Rule, margin: float) -> Screen:
    """Configurations whose measured selection score could be the best under ``rule``.

    Each predicted variance v is taken to lie within ``[v / (1 + margin), v (1 + margin)]``
    (the predicted statistical BB of r_aware likewise); a configuration is a candidate
    when its most favourable score is no worse than the least unfavourable score of a
    configuration that is eligible even at its least favourable (the rule's condition,
    where it has one).  Where no configuration is surely eligible, the rule's fallback
    (the least ratio) is screened the same way.  For ``nll`` the predicted mean -ln L is
    taken to lie within ``margin x (free indices / 2 + 1)`` of the truth.  The candidates
    always include the configuration the rule picks from the predictions.
    """
    if margin < 0:
        raise ConfigError(f"compsep.grid.margin must be >= 0, not {margin}")
    v = np.asarray(predicted.cmb_variance, dtype=float)
    syst = np.asarray(predicted.systematic_residual, dtype=float)
    up, down = 1.0 + margin, 1.0 / (1.0 + margin)
    best, _ = select(predicted, rule)
    if rule.name == "variance":
        keep = _overlap(v * down, v * up, np.ones(v.size, bool))
    elif rule.name == "variance_plus_systematic":
        keep = _overlap(v * down + syst, v * up + syst, np.ones(v.size, bool))
    elif rule.name == "nll":
        nll = np.asarray(predicted.nll_mean, dtype=float)
        slack = margin * (np.asarray(free, dtype=float) / 2.0 + 1.0)
        keep = _overlap(nll - slack, nll + slack, np.ones(v.size, bool))
    elif rule.name in ("threshold", "r_aware"):
        if rule.name == "threshold":
            # the ratio s / v is least with the largest variance, most with the smallest
            r_lo, r_hi, limit = syst / (v * up), syst / (v * down), rule.relative_threshold
        elif rule.reference == "tensor":  # no predicted quantity in the ratio
            r_lo = r_hi = np.asarray(predicted.systematic_bb, dtype=float) / (
                rule.reference_r * float(predicted.tensor_bb)
            )
            limit = rule.fraction
        else:
            stat = np.asarray(predicted.statistical_bb, dtype=float)
            sbb = np.asarray(predicted.systematic_bb, dtype=float)
            r_lo, r_hi, limit = sbb / (stat * up), sbb / (stat * down), rule.fraction
        surely, maybe = r_hi <= limit, r_lo <= limit
        if surely.any():  # the measured eligible set holds them: its least variance is bounded
            keep = maybe & _overlap(v * down, v * up, surely)
        else:  # any maybe-eligible one, or the fallback (the least ratio) if none is
            keep = maybe | _overlap(r_lo, r_hi, np.ones(v.size, bool))
    else:
        raise ConfigError(f"unknown selection rule '{rule.name}'")
    keep[best] = True
    return Screen(keep, int(best))


def _overlap(lo: np.ndarray, hi: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Configurations whose lower bound is at most the least upper bound ``among``."""
    if not among.any():
        return np.zeros(lo.size, bool)
    return lo <= np.min(hi[among])


def fits_fraction(n_configurations: int, n_candidates: int, n_realisations: int) -> float:
    """Fits of the screened search (one per configuration, then the realisations and the
    noiseless fit of each candidate) over the exhaustive grid's (realisations + 1 each)."""
    exhaustive = n_configurations * (n_realisations + 1)
    return (n_configurations + n_candidates * (n_realisations + 1)) / exhaustive
