"""Structured Newton fits of the clustered spectral likelihood (one compiled loop).

Each cell (pixels sharing one beta_d, one T_d and one beta_s patch) depends on exactly
three parameters, so the exact Hessian is a sum of per-cell 3x3 blocks: its beta_d-beta_d
block is diagonal and the couplings are sparse.  Eliminating beta_d (a Schur complement)
leaves one dense symmetric system of ``K_T_d + K_beta_s`` unknowns per step, assembled
from the pairs of cells that share a beta_d patch.

* exact gradient and Hessian of each cell's chi2/2 (closed form, from the caller),
  assembled by scatter-adds;
* steps capped at ``MAX_STEP`` of each parameter's box (a trust region: a full Newton
  step from a poor start can jump into a spurious minimum on a bound);
* Levenberg-Marquardt damping ``H + lambda (|diag H| + delta)``, lambda lowered after a
  step that decreases the objective and raised (the step refused) otherwise, so far from
  the optimum the step shortens towards scaled gradient descent, and near it the
  iteration is Newton's and converges quadratically;
* box bounds by an active set: a parameter on a bound whose gradient points outwards is
  held there for the step, every step is projected onto the box, and parameters ending
  on a bound are flagged;
* convergence: an accepted step whose decrease and whose Newton decrement are both below
  ``rtol |f|``; a fit that runs out of iterations (or of damping) is reported
  ``converged = False``, never silently.
Shapes are fixed (padded layouts), so the loop ``vmap``s over realisations and runs the
same on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from bmodesep.core.compsep.fitting import FitResult

jax.config.update("jax_enable_x64", True)

LAMBDA_START = 1.0  # from a cold start
LAMBDA_WARM = 0.1  # from a start near the optimum (a warm start; 1e-3 measured slower)
LAMBDA_DOWN = 0.2
LAMBDA_UP = 10.0
LAMBDA_MAX = 1e12
MAX_STEP = 0.1  # of each parameter's bound span, per step


class _Blocks(NamedTuple):
    d: jax.Array  # [k0] diagonal of the beta_d block
    coupling: jax.Array  # [cell, 2] each cell's beta_d coupling to its T_d and beta_s
    e: jax.Array  # [m, m] (T_d, beta_s) block


def _assemble(hess, cell_params, k0: int, n: int) -> _Blocks:
    """The Hessian's blocks from per-cell 3x3 blocks ``hess[cell]``."""
    m = n - k0
    i0 = cell_params[:, 0]
    i1, i2 = cell_params[:, 1] - k0, cell_params[:, 2] - k0
    d = jnp.zeros(k0, hess.dtype).at[i0].add(hess[:, 0, 0])
    e = (
        jnp.zeros((m, m), hess.dtype)
        .at[i1, i1]
        .add(hess[:, 1, 1])
        .at[i2, i2]
        .add(hess[:, 2, 2])
        .at[i1, i2]
        .add(hess[:, 1, 2])
        .at[i2, i1]
        .add(hess[:, 2, 1])
    )
    return _Blocks(d, hess[:, 0, 1:], e)


def _damped_step(blocks: _Blocks, grad, free, lam, k0: int, cell_params, cell_pairs):
    """Solve ``(H + lam (|diag H| + delta)) s = -g`` on the free parameters (Schur on beta_d).

    The beta_d-(T_d, beta_s) coupling C is kept per cell, so the Schur complement
    ``E - C^T D^-1 C`` is a sum over the pairs of cells sharing a beta_d patch: the cost is
    linear in cells and pairs (plus one dense Cholesky of the (T_d, beta_s) block), not
    ``K_beta_d x (K_T_d + K_beta_s)^2``.  Returns the step and whether it is finite.
    """
    d, coupling, e = blocks
    f0, f12 = free[:k0], free[k0:]
    i0 = cell_params[:, 0]
    cols = cell_params[:, 1:] - k0  # [cell, 2] columns of the (T_d, beta_s) block
    diag_e = jnp.diagonal(e)
    scale = jnp.maximum(jnp.max(jnp.abs(d), initial=0.0), jnp.max(jnp.abs(diag_e), initial=0.0))
    delta = 1e-10 * scale + 1e-300
    dd = jnp.where(f0, jnp.maximum(d, 0.0) + lam * (jnp.abs(d) + delta), 1.0)
    u = coupling * f0[i0][:, None] * f12[cols]  # couplings of free parameters only
    ee = e * f12[:, None] * f12[None, :]
    ee = ee + jnp.diag(jnp.where(f12, lam * (jnp.abs(diag_e) + delta), 1.0))
    r = -grad * free
    r0, r12 = r[:k0], r[k0:]
    first, second, weight = cell_pairs[:, 0], cell_pairs[:, 1], cell_pairs[:, 2]
    pair_scale = weight / dd[i0[first]]
    products = u[first][:, :, None] * u[second][:, None, :] * pair_scale[:, None, None]
    schur = ee.at[cols[first][:, :, None], cols[second][:, None, :]].add(-products)
    v = r0 / dd
    rhs = r12 - jnp.zeros_like(r12).at[cols].add(u * v[i0][:, None])
    factor = cho_factor(schur, lower=True)
    s12 = cho_solve(factor, rhs)
    cs12 = jnp.zeros_like(r0).at[i0].add(jnp.sum(u * s12[cols], axis=1))
    s0 = (r0 - cs12) / dd
    step = jnp.concatenate([s0, s12]) * free
    ok = jnp.all(jnp.isfinite(step))
    return jnp.where(ok, step, 0.0), ok


def minimize_cells(
    objective: Callable[[jax.Array], jax.Array],
    cell_derivatives: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x0: jax.Array,
    cell_params: jax.Array,
    cell_pairs: jax.Array,
    k0: int,
    lower: jax.Array,
    upper: jax.Array,
    max_iterations: jax.Array | int,
    rtol: jax.Array | float,
    lambda_start: jax.Array | float = LAMBDA_START,
) -> FitResult:
    """Minimise ``objective(x) = sum_c f_c(x[cell_params[c]])`` inside the box.

    ``cell_derivatives(x)`` returns each cell's gradient ``[cell, 3]`` and Hessian
    ``[cell, 3, 3]`` with respect to its parameters; ``cell_params[c]`` holds the cell's
    (beta_d, T_d, beta_s) indices into ``x``, every beta_d index below ``k0`` and every
    other index at or above it; ``cell_pairs``: as ``CellLayout.cell_pairs``.
    ``lambda_start``: the initial damping (small for a start near the optimum, such as a
    warm start).
    """
    n = x0.shape[0]
    total = objective

    def derivatives(x):
        grad, hess = cell_derivatives(x)
        g = jnp.zeros(n, x.dtype).at[cell_params.ravel()].add(grad.ravel())
        return g, _assemble(hess, cell_params, k0, n)

    class Carry(NamedTuple):
        x: jax.Array
        f: jax.Array
        g: jax.Array
        blocks: _Blocks
        lam: jax.Array
        it: jax.Array
        dec: jax.Array
        done: jax.Array
        stuck: jax.Array

    def cond(c):
        return (c.it < max_iterations) & ~c.done & ~c.stuck

    def body(c):
        span = upper - lower
        at_low = (c.x <= lower + 1e-12 * span) & (c.g > 0)
        at_high = (c.x >= upper - 1e-12 * span) & (c.g < 0)
        free = ~(at_low | at_high)
        step, ok = _damped_step(c.blocks, c.g, free, c.lam, k0, cell_params, cell_pairs)
        # a trust region in parameter space: no parameter moves by more than MAX_STEP of
        # its box in one step (a long step far from the optimum can land in another basin)
        reach = jnp.max(jnp.abs(step) / (MAX_STEP * span))
        step = step / jnp.maximum(reach, 1.0)
        x_new = jnp.clip(c.x + step, lower, upper)
        f_new = total(x_new)
        accept = ok & jnp.isfinite(f_new) & (f_new <= c.f)
        decrease = c.f - f_new
        dec = 0.5 * jnp.abs(jnp.dot(c.g * free, step))
        denom = jnp.maximum(jnp.abs(c.f), 1.0)
        small = (decrease <= rtol * denom) & (dec <= rtol * denom)
        # derivatives at the new point, unless the fit ends here (the loop stops on done)
        g_new, blocks_new = jax.lax.cond(
            accept & ~small, lambda: derivatives(x_new), lambda: (c.g, c.blocks)
        )
        lam = jnp.where(accept, jnp.maximum(c.lam * LAMBDA_DOWN, 1e-15), c.lam * LAMBDA_UP)
        return Carry(
            x=jnp.where(accept, x_new, c.x),
            f=jnp.where(accept, f_new, c.f),
            g=g_new,
            blocks=blocks_new,
            lam=lam,
            it=c.it + 1,
            dec=jnp.where(accept, dec, c.dec),
            done=accept & small,
            stuck=lam > LAMBDA_MAX,
        )

    g0, b0 = derivatives(x0)
    f0 = total(x0)
    init = Carry(
        x0,
        f0,
        g0,
        b0,
        jnp.asarray(lambda_start, x0.dtype),
        jnp.asarray(0),
        jnp.asarray(jnp.inf, x0.dtype),
        jnp.asarray(False),
        jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, init)
    span = upper - lower
    at_bound = (out.x <= lower + 1e-9 * span) | (out.x >= upper - 1e-9 * span)
    return FitResult(out.x, out.f, out.it, out.done, at_bound, out.dec)
