"""The r-likelihood product (``rlike/{sim}/{method}.h5``): checked reader.

Written by :func:`bmodesep.stages.rlike.run`: residual BB spectra of one method over its
zones, the likelihood of r on a grid for the union of zones and per zone, and the
attributes ``r_hat``, ``r_low``, ``r_high`` (the 68% interval), ``r_simulated``.
Spectra are per-multipole C_l (``spectrum: fsky``) or MASTER band powers of D_l
(``spectrum: master``), in the units that say which.
"""

from __future__ import annotations

import numpy as np

from bmodesep.errors import DataError
from bmodesep.products import io

R_LIKELIHOOD = "r_likelihood"

# units of the spectra, by the ``spectrum`` attribute (as BBEstimator.units writes them)
SPECTRUM_UNITS = {"fsky": "uK_CMB^2", "master": "uK_CMB^2 (D_l band powers)"}

ELL = "ell"  # [n] multipoles, or band centres
R_GRID = "r_grid"  # [grid]
LIKELIHOOD = "likelihood"  # [grid] L(r)/L_max of the union of zones
ZONES_MEAN_LIKELIHOOD = "zones_mean_likelihood"  # [grid]
R_HAT_PER_REALISATION = "r_hat_per_realisation"  # [realisation]
CL_TOTAL_RESIDUAL = "cl_total_residual"
CL_SYSTEMATIC_RESIDUAL = "cl_systematic_residual"
CL_STATISTICAL_RESIDUAL = "cl_statistical_residual"
CL_TENSOR_R1 = "cl_tensor_r1"
CL_LENSING = "cl_lensing"
CL_OBSERVED = "cl_observed"
SPECTRA = (
    CL_TOTAL_RESIDUAL,
    CL_SYSTEMATIC_RESIDUAL,
    CL_STATISTICAL_RESIDUAL,
    CL_TENSOR_R1,
    CL_LENSING,
    CL_OBSERVED,
)
ZONE_FSKY = "zones/fsky"  # [zone]
ZONE_CONFIGURATION = "zones/configuration"  # [zone, 3]: K of beta_d, T_d, beta_s
ZONE_R_HAT = "zones/r_hat"  # [zone]
ZONE_TOTAL_RESIDUAL = "zones/total_residual"  # [zone, n]
ZONE_SYSTEMATIC_RESIDUAL = "zones/systematic_residual"  # [zone, n]
ZONE_LIKELIHOOD = "zones/likelihood"  # [zone, grid]
ZONE_TOTAL_BB_POWER = "zones/total_bb_power"  # [zone, realisation]

ATTRS = ("method", "spectrum", "zones", "r_hat", "r_low", "r_high", "r_simulated")


def read_r_likelihood(path) -> io.Product:
    """An r-likelihood product, its spectra checked against the ``spectrum`` it declares."""
    head = io.read_product(path, R_LIKELIHOOD, {})
    spectrum = head.attrs.get("spectrum")
    if spectrum not in SPECTRUM_UNITS:
        raise DataError(
            f"{head.path}: attribute 'spectrum' is {spectrum!r}, expected one of "
            f"{', '.join(SPECTRUM_UNITS)}"
        )
    u = SPECTRUM_UNITS[spectrum]
    expect = {
        ELL: ((None,), "1"),
        R_GRID: ((None,), "1"),
        LIKELIHOOD: ((None,), "1"),
        ZONES_MEAN_LIKELIHOOD: ((None,), "1"),
        R_HAT_PER_REALISATION: ((None,), "1"),
        **{name: ((None,), u) for name in SPECTRA},
        ZONE_FSKY: ((None,), "1"),
        ZONE_CONFIGURATION: ((None, 3), "1"),
        ZONE_R_HAT: ((None,), "1"),
        ZONE_TOTAL_RESIDUAL: ((None, None), u),
        ZONE_SYSTEMATIC_RESIDUAL: ((None, None), u),
        ZONE_LIKELIHOOD: ((None, None), "1"),
        ZONE_TOTAL_BB_POWER: ((None, None), u),
    }
    p = io.read_product(path, R_LIKELIHOOD, expect)
    missing = [a for a in ATTRS if a not in p.attrs]
    if missing:
        raise DataError(f"{p.path}: attribute(s) {', '.join(missing)} missing")
    n, grid, zones = p[ELL].size, p[R_GRID].size, len(p.attrs["zones"])
    lengths = {name: n for name in SPECTRA} | {LIKELIHOOD: grid, ZONES_MEAN_LIKELIHOOD: grid}
    for name, want in lengths.items():
        if p[name].size != want:
            raise DataError(f"{p.path}: dataset '{name}' has {p[name].size} elements, not {want}")
    for name in (ZONE_FSKY, ZONE_CONFIGURATION, ZONE_R_HAT, ZONE_TOTAL_RESIDUAL, ZONE_LIKELIHOOD):
        if p[name].shape[0] != zones:
            raise DataError(
                f"{p.path}: dataset '{name}' has {p[name].shape[0]} rows for {zones} zone(s)"
            )
    if grid < 2 or np.any(np.diff(p[R_GRID]) <= 0):
        raise DataError(f"{p.path}: the r grid is not increasing")
    return p


def as_dl(product: io.Product, name: str) -> np.ndarray:
    """A spectrum of an r-likelihood product as D_l (master band powers already are)."""
    if product.attrs["spectrum"] == "master":
        return product[name]
    ell = product[ELL]
    return ell * (ell + 1) / (2 * np.pi) * product[name]
