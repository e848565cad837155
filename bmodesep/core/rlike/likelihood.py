"""The r likelihood of kabalan2025 eq. 15 on a grid of r, and its summaries.

    -2 ln L(r) = f_sky sum_l (2l + 1) [ C_obs / C_model(r) + ln C_model(r) ],
    C_model(r) = r C_tensor + C_lens + C_stat.

Spectra may be per multipole or band powers; ``modes`` is the number of modes of each
element, f_sky (2l + 1) or its sum over a bin (``mode_counts``).

The grid may include negative r (where C_model stays positive).  Reported: r-hat (the
grid maximum refined by a parabola through its neighbours), a 68% interval from the
cumulative likelihood on each side of the peak (68% of the mass below r-hat lies in
[r_lo, r-hat], likewise above), and sigma(r) from the curvature at r-hat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from bmodesep.errors import DataError


class RResult(NamedTuple):
    r_grid: np.ndarray
    neg2lnl: np.ndarray  # -2 ln L on the grid (minimum subtracted)
    r_hat: float
    r_low: float
    r_high: float
    sigma_curvature: float


def mode_counts(ell, fsky: float) -> np.ndarray:
    """f_sky (2l + 1): the modes of each multipole."""
    return fsky * (2 * np.asarray(ell, float) + 1)


def neg2_log_likelihood(r_grid, c_obs, c_tensor, c_lens, c_stat, modes):
    """-2 ln L(r) ``[n_r]`` for spectra over the multipoles ``ell`` used.

    Where a (negative) r makes C_model(r) non-positive at some l, the likelihood is zero
    (+inf here); a grid with no valid r is an error.
    """
    model = np.asarray(r_grid)[:, None] * c_tensor[None] + c_lens[None] + c_stat[None]
    valid = np.all(model > 0, axis=1)
    if not valid.any():
        raise DataError(
            "C_model(r) = r C_tensor + C_lens + C_stat is not positive for any r of the grid"
        )
    w = np.asarray(modes, float)
    safe = np.where(valid[:, None], model, 1.0)
    n2l = np.sum(w[None] * (c_obs[None] / safe + np.log(safe)), axis=1)
    return np.where(valid, n2l, np.inf)


def curvature_sigma(r_hat, c_obs, c_tensor, c_lens, c_stat, modes) -> float:
    """1/sqrt of d^2(-ln L)/dr^2 at r-hat (analytic)."""
    model = r_hat * c_tensor + c_lens + c_stat
    w = np.asarray(modes, float)
    second = 0.5 * np.sum(w * c_tensor**2 * (2 * c_obs / model**3 - 1 / model**2))
    return float(1 / np.sqrt(second)) if second > 0 else float("inf")


def analyse(r_grid, c_obs, c_tensor, c_lens, c_stat, modes) -> RResult:
    """Eq. 15 on ``r_grid``: -2 ln L of ``c_obs`` against ``r c_tensor + c_lens + c_stat``
    with ``modes`` per element; r-hat (a parabola through the minimum), the 68% interval
    around it and sigma(r) from the curvature."""
    r = np.asarray(r_grid, float)
    if np.any(np.diff(r) <= 0):
        raise ValueError("the r grid must increase")
    n2l = neg2_log_likelihood(r, c_obs, c_tensor, c_lens, c_stat, modes)
    i = int(np.argmin(n2l))
    r_hat = r[i]
    if 0 < i < r.size - 1:  # parabola through the three grid points around the minimum
        y0, y1, y2 = n2l[i - 1 : i + 2]
        denom = y0 - 2 * y1 + y2
        if denom > 0 and np.isfinite(denom):
            r_hat = r[i] + 0.5 * (y0 - y2) / denom * (r[i + 1] - r[i])
    like = np.exp(-0.5 * (n2l - n2l.min()))  # zero where C_model is not positive
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (like[1:] + like[:-1]) * np.diff(r))])
    at_peak = np.interp(r_hat, r, cdf)
    below, above = at_peak, cdf[-1] - at_peak
    r_low = float(np.interp(at_peak - 0.68 * below, cdf, r))
    r_high = float(np.interp(at_peak + 0.68 * above, cdf, r))
    sigma = curvature_sigma(r_hat, c_obs, c_tensor, c_lens, c_stat, modes)
    return RResult(r, n2l - n2l.min(), float(r_hat), r_low, r_high, sigma)  # inf: invalid r


def upper_limit(r_grid, likelihood, level: float = 0.68) -> float:
    """The one-sided upper limit: the r below which ``level`` of the likelihood's mass on
    r >= 0 lies (flat prior on r >= 0, trapezoid rule on the grid)."""
    r = np.asarray(r_grid, float)
    like = np.asarray(likelihood, float)
    keep = r >= 0
    r, like = r[keep], like[keep]
    if r.size < 2 or not np.any(like > 0):
        return float("nan")
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (like[1:] + like[:-1]) * np.diff(r))])
    return float(np.interp(level * cdf[-1], cdf, r))


def combine_zones(spectra: Sequence[np.ndarray], fskies: Sequence[float]):
    """Spectra of several zones as one region: f_sky-weighted mean and the union's f_sky."""
    f = np.asarray(fskies, float)
    return np.tensordot(f / f.sum(), np.asarray(spectra), axes=1), float(f.sum())


def average_likelihood(neg2lnl_curves: np.ndarray) -> np.ndarray:
    """Mean of normalised likelihood curves (over realisations and zones), as -2 ln L."""
    curves = np.asarray(neg2lnl_curves)
    like = np.exp(-0.5 * (curves - curves.min(axis=-1, keepdims=True))).mean(axis=0)
    with np.errstate(divide="ignore"):  # zero likelihood -> +inf
        return -2 * np.log(like / like.max())
