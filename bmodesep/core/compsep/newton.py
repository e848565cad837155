"""Structured Newton fits of the clustered spectral likelihood (one compiled loop).

Each cell (pixels sharing one beta_d, one T_d and one beta_s patch) depends on exactly
three parameters, so the exact Hessian is a sum of per-cell 3x3 blocks: its beta_d-beta_d
block is diagonal and the couplings are sparse.  Eliminating beta_d (a Schur complement)
leaves one dense symmetric system of ``K_T_d + K_beta_s`` unknowns per step.

* exact gradient and Hessian by autodiff of each cell's chi2/2, assembled by scatter-adds;
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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve

from bmodesep.core.compsep.fitting import FitResult

jax.config.update("jax_enable_x64", True)

LAMBDA_START = 1.0
LAMBDA_DOWN = 0.2
LAMBDA_UP = 10.0
LAMBDA_MAX = 1e12
MAX_STEP = 0.1  # of each parameter's bound span, per step


class _Blocks(NamedTuple):
    d: jax.Array  # [k0] diagonal of the beta_d block
    c: jax.Array  # [k0, m] beta_d coupling to (T_d, beta_s)
    e: jax.Array  # [m, m] (T_d, beta_s) block


def _assemble(hess, cell_params, k0: int, n: int) -> _Blocks:
    """The Hessian's blocks from per-cell 3x3 blocks ``hess[cell]``."""
    m = n - k0
    i0 = cell_params[:, 0]
    i1, i2 = cell_params[:, 1] - k0, cell_params[:, 2] - k0
    d = jnp.zeros(k0, hess.dtype).at[i0].add(hess[:, 0, 0])
    c = jnp.zeros((k0, m), hess.dtype).at[i0, i1].add(hess[:, 0, 1]).at[i0, i2].add(hess[:, 0, 2])
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
    return _Blocks(d, c, e)


def _damped_step(blocks: _Blocks, grad, free, lam, k0: int):
    """Solve ``(H + lam (|diag H| + delta)) s = -g`` on the free parameters (Schur on beta_d).

    Returns the step and whether the damped Schur complement was positive definite.
    """
    d, c, e = blocks
    f0, f12 = free[:k0], free[k0:]
    diag_e = jnp.diagonal(e)
    scale = jnp.maximum(jnp.max(jnp.abs(d), initial=0.0), jnp.max(jnp.abs(diag_e), initial=0.0))
    delta = 1e-10 * scale + 1e-300
    dd = jnp.where(f0, jnp.maximum(d, 0.0) + lam * (jnp.abs(d) + delta), 1.0)
    cc = c * f0[:, None] * f12[None, :]
    ee = e * f12[:, None] * f12[None, :]
    ee = ee + jnp.diag(jnp.where(f12, lam * (jnp.abs(diag_e) + delta), 1.0))
    r = -grad * free
    r0, r12 = r[:k0], r[k0:]
    schur = ee - cc.T @ (cc / dd[:, None])
    rhs = r12 - cc.T @ (r0 / dd)
    factor = cho_factor(schur, lower=True)
    s12 = cho_solve(factor, rhs)
    s0 = (r0 - cc @ s12) / dd
    step = jnp.concatenate([s0, s12]) * free
    ok = jnp.all(jnp.isfinite(step))
    return jnp.where(ok, step, 0.0), ok


def minimize_cells(
    cell_objective: Callable[[jax.Array, Any], jax.Array],
    x0: jax.Array,
    cell_data: Any,
    cell_params: jax.Array,
    k0: int,
    lower: jax.Array,
    upper: jax.Array,
    max_iterations: jax.Array | int,
    rtol: jax.Array | float,
) -> FitResult:
    """Minimise ``sum_c cell_objective(x[cell_params[c]], cell_data[c])`` inside the box.

    ``cell_params[c]`` holds the cell's (beta_d, T_d, beta_s) indices into ``x``, with
    every beta_d index below ``k0`` and every other index at or above it.
    """
    n = x0.shape[0]

    def total(x):
        return jnp.sum(jax.vmap(cell_objective)(x[cell_params], cell_data))

    cell_grad = jax.vmap(jax.grad(cell_objective))
    cell_hess = jax.vmap(jax.hessian(cell_objective))

    def derivatives(x):
        p = x[cell_params]
        g = jnp.zeros(n, x.dtype).at[cell_params.ravel()].add(cell_grad(p, cell_data).ravel())
        return g, _assemble(cell_hess(p, cell_data), cell_params, k0, n)

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
        step, ok = _damped_step(c.blocks, c.g, free, c.lam, k0)
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
        g_new, blocks_new = jax.lax.cond(
            accept, lambda: derivatives(x_new), lambda: (c.g, c.blocks)
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
        jnp.asarray(LAMBDA_START, x0.dtype),
        jnp.asarray(0),
        jnp.asarray(jnp.inf, x0.dtype),
        jnp.asarray(False),
        jnp.asarray(False),
    )
    out = jax.lax.while_loop(cond, body, init)
    span = upper - lower
    at_bound = (out.x <= lower + 1e-9 * span) | (out.x >= upper - 1e-9 * span)
    return FitResult(out.x, out.f, out.it, out.done, at_bound, out.dec)
