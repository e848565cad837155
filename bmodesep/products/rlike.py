"""The r-likelihood product (``rlike/{sim}/{method}.h5``): writer and checked reader.

Written by :func:`bmodesep.stages.rlike.r_likelihood`: residual BB spectra of one method over its
zones, the likelihood of r on a grid for the union of zones and per zone, and the
attributes ``r_hat``, ``r_low``, ``r_high`` (the 68% interval), ``r_simulated``.
Spectra are per-multipole C_l (``spectrum: fsky``) or MASTER band powers of D_l
(``spectrum: master``), in the units that say which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

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
D = io.Dataset


class ZoneResults(NamedTuple):
    """Per-zone rows of an r-likelihood product (spectra in the product's units)."""

    fsky: np.ndarray  # [zone]
    configuration: np.ndarray  # [zone, 3]
    r_hat: np.ndarray  # [zone]
    total_residual: np.ndarray  # [zone, n]
    systematic_residual: np.ndarray | None  # [zone, n]; None: unknown (an observation)
    likelihood: np.ndarray  # [zone, grid] L(r)/L_max
    total_bb_power: np.ndarray  # [zone, realisation]


class Spectra(NamedTuple):
    """The spectra of the union of zones (``units`` names C_l or D_l band powers)."""

    ell: np.ndarray
    total_residual: np.ndarray
    systematic_residual: np.ndarray | None
    statistical_residual: np.ndarray
    tensor_r1: np.ndarray
    lensing: np.ndarray
    observed: np.ndarray
    units: str


def write_r_likelihood(
    path,
    spectra: Spectra,
    zones: ZoneResults,
    r_grid: np.ndarray,
    likelihood: np.ndarray,
    zones_mean_likelihood: np.ndarray,
    r_hat_per_realisation: np.ndarray,
    provenance,
    attrs: Mapping[str, Any],
) -> None:
    """One method's residual spectra and likelihood of r (``attrs`` as :data:`ATTRS`)."""
    u = spectra.units
    if attrs.get("spectrum") not in SPECTRUM_UNITS or SPECTRUM_UNITS[attrs["spectrum"]] != u:
        raise ValueError(f"spectra in '{u}' do not match spectrum {attrs.get('spectrum')!r}")
    missing = [a for a in ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"r-likelihood attributes missing: {missing}")
    data = {
        ELL: D(spectra.ell, "1", "multipoles, or band centres of master band powers"),
        ZONE_FSKY: D(zones.fsky, "1"),
        ZONE_CONFIGURATION: D(zones.configuration, "1", "patches of beta_d, T_d, beta_s"),
        ZONE_R_HAT: D(zones.r_hat, "1"),
        ZONE_TOTAL_RESIDUAL: D(zones.total_residual, u, "one row per zone"),
        ZONE_LIKELIHOOD: D(zones.likelihood, "1", "L(r)/L_max per zone"),
        ZONE_TOTAL_BB_POWER: D(
            zones.total_bb_power, u, "sum over the spectrum of each reconstructed CMB"
        ),
        CL_TOTAL_RESIDUAL: D(spectra.total_residual, u),
        CL_STATISTICAL_RESIDUAL: D(spectra.statistical_residual, u),
        CL_TENSOR_R1: D(spectra.tensor_r1, u),
        CL_LENSING: D(spectra.lensing, u),
        CL_OBSERVED: D(spectra.observed, u),
        R_GRID: D(r_grid, "1"),
        LIKELIHOOD: D(likelihood, "1", "L(r)/L_max for the union of zones; 0 where C_model <= 0"),
        ZONES_MEAN_LIKELIHOOD: D(
            zones_mean_likelihood, "1", "mean of the zones' normalised likelihoods"
        ),
        R_HAT_PER_REALISATION: D(r_hat_per_realisation, "1"),
    }
    # maps that contain their noise have no foreground truth: no systematic residual
    if (spectra.systematic_residual is None) != (zones.systematic_residual is None):
        raise ValueError("give the systematic residual of the union and of the zones, or neither")
    if spectra.systematic_residual is not None:
        data[CL_SYSTEMATIC_RESIDUAL] = D(spectra.systematic_residual, u)
        data[ZONE_SYSTEMATIC_RESIDUAL] = D(zones.systematic_residual, u)
    io.write_product(path, R_LIKELIHOOD, data, provenance, attrs)


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
    optional = [CL_SYSTEMATIC_RESIDUAL, ZONE_SYSTEMATIC_RESIDUAL]
    p = io.read_product(path, R_LIKELIHOOD, expect, optional=optional)
    if (CL_SYSTEMATIC_RESIDUAL in p.data) != (ZONE_SYSTEMATIC_RESIDUAL in p.data):
        raise DataError(f"{p.path}: one of {optional} without the other")
    missing = [a for a in ATTRS if a not in p.attrs]
    if missing:
        raise DataError(f"{p.path}: attribute(s) {', '.join(missing)} missing")
    n, grid, zones = p[ELL].size, p[R_GRID].size, len(p.attrs["zones"])
    lengths = {name: n for name in SPECTRA if name in p.data}
    lengths |= {LIKELIHOOD: grid, ZONES_MEAN_LIKELIHOOD: grid}
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
