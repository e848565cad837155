"""Bounded L-BFGS (optax, zoom line search) in one compiled loop, for the spectral likelihood.

* exact gradients by autodiff; the line search's value and gradient are reused
  (``optax.value_and_grad_from_state``);
* diagonal preconditioning: the optimiser works in ``y = (x - x0) sqrt(h)`` with ``h`` the
  exact Hessian diagonal at the start (floored), so every parameter has unit curvature;
* box bounds: the objective is evaluated at ``clip(x)`` plus a quadratic penalty on the
  excess, so the geometry inside the box is untouched; results are clipped and the
  parameters that end on a bound are flagged;
* convergence on relative criteria: the relative decrease of the objective over the last
  step and the relative Newton decrement ``0.5 |g_y|^2 / |f|`` both below ``rtol``;
* the best point seen so far is kept and returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

jax.config.update("jax_enable_x64", True)

BOUND_PENALTY = 1e3


FIT_METHODS = ("lbfgs", "newton")


class FitOptions(NamedTuple):
    max_iterations: int = 1000
    rtol: float = 1e-10
    memory_size: int = 20
    max_linesearch_steps: int = 20
    batched: bool = False  # vmap over realisations (slower on CPU; for GPUs)
    method: str = "newton"  # structured Newton (bmodesep.core.compsep.newton), or "lbfgs"
    warm_start: bool = True  # realisations start from the noiseless (foreground-only) fit


class FitResult(NamedTuple):
    params: jax.Array  # [n] best parameters (clipped to the bounds)
    nll: jax.Array  # -ln L at params
    iterations: jax.Array
    converged: jax.Array  # bool
    at_bound: jax.Array  # [n] bool
    decrement: jax.Array  # 0.5 |g_y|^2 at the end, the expected remaining decrease


def minimize(
    objective: Callable[[jax.Array, Any], jax.Array],
    x0: jax.Array,
    data: Any,
    lower: jax.Array,
    upper: jax.Array,
    curvature: jax.Array,
    options: FitOptions | None = None,
) -> FitResult:
    """Minimise ``objective(x, data)`` from ``x0`` inside ``[lower, upper]``; jit-compatible.

    ``curvature`` is the Hessian diagonal at ``x0``; the optimiser works in variables of
    unit curvature (entries floored at 1e-12 of the largest, so parameters that touch no
    data stay harmless).  Measured on the multi-resolution benchmark: preconditioning
    with the full Hessian instead made L-BFGS 5-10x slower.
    """
    options = FitOptions() if options is None else options
    scale = 1.0 / jnp.sqrt(
        jnp.maximum(jnp.abs(curvature), 1e-12 * jnp.max(jnp.abs(curvature)) + 1e-300)
    )

    def to_x(y):
        return x0 + y * scale

    def f(y):
        x = to_x(y)
        xc = jnp.clip(x, lower, upper)
        excess = (x - xc) / scale
        return objective(xc, data) + BOUND_PENALTY * jnp.sum(excess**2)

    opt = optax.lbfgs(
        memory_size=options.memory_size,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=options.max_linesearch_steps
        ),
    )
    value_and_grad = optax.value_and_grad_from_state(f)
    y0 = jnp.zeros_like(x0)
    f0 = f(y0)

    class Carry(NamedTuple):
        y: jax.Array
        state: Any
        it: jax.Array
        f_prev: jax.Array
        f_now: jax.Array
        dec: jax.Array
        best_y: jax.Array
        best_f: jax.Array
        done: jax.Array

    def cond(c):
        return (c.it < options.max_iterations) & ~c.done

    def body(c):
        value, grad = value_and_grad(c.y, state=c.state)
        updates, state = opt.update(grad, c.state, c.y, value=value, grad=grad, value_fn=f)
        y = optax.apply_updates(c.y, updates)
        f_new = optax.tree_utils.tree_get(state, "value")
        dec = 0.5 * jnp.sum(grad**2)
        better = f_new < c.best_f
        best_y = jnp.where(better, y, c.best_y)
        best_f = jnp.where(better, f_new, c.best_f)
        denom = jnp.maximum(jnp.abs(f_new), 1.0)
        small_step = jnp.abs(value - f_new) <= options.rtol * denom
        small_dec = dec <= options.rtol * denom
        return Carry(y, state, c.it + 1, value, f_new, dec, best_y, best_f, small_step & small_dec)

    init = Carry(
        y0, opt.init(y0), jnp.asarray(0), f0, f0, jnp.asarray(jnp.inf), y0, f0, jnp.asarray(False)
    )
    out = jax.lax.while_loop(cond, body, init)
    x = jnp.clip(to_x(out.best_y), lower, upper)
    span = upper - lower
    at_bound = (x <= lower + 1e-9 * span) | (x >= upper - 1e-9 * span)
    return FitResult(x, objective(x, data), out.it, out.done, at_bound, out.dec)
