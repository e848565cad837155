"""Component-separation products: checked readers of the grid selection and the fits.

``grid_selection`` (``compsep/{sim}/grid/{zone}/selection.h5``, written by
:func:`bmodesep.stages.compsep.run_select`): one row per grid configuration, sorted by
configuration index, with the selected row in the attribute ``best_index``.

``compsep_fit`` (``compsep/{sim}/fits/{zone}/{method}.h5``, written by
:func:`bmodesep.stages.compsep.run_fit`): the per-realisation fits of one method in one
zone, the reconstructed CMB on the zone's pixels and the full-sky patch maps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.compsep.likelihood import PARAMETERS
from bmodesep.errors import DataError
from bmodesep.products import io

GRID_SELECTION = "grid_selection"
COMPSEP_FIT = "compsep_fit"

POWER = "uK_CMB^2"

# ---------------------------------------------------------------- grid_selection
CONFIGURATION = "configuration"  # [config, 3]: K of beta_d, T_d, beta_s
CMB_VARIANCE = "cmb_variance"  # [config] eq. 9, uK_CMB^2
SYSTEMATIC_RESIDUAL = "systematic_residual"  # [config] uK_CMB^2
NLL_MEAN = "nll_mean"  # [config] mean -ln L over realisations
R_HAT = "r_hat"  # [config] r-hat of eq. 15 (only when the selection had spectra)
TOTAL_RESIDUAL_CL = "total_residual_cl"  # [config, n] (with sky spectra)
SYSTEMATIC_CL = "systematic_cl"  # [config, n] (with sky spectra)

SELECTION_TABLE = {
    CMB_VARIANCE: POWER,
    SYSTEMATIC_RESIDUAL: POWER,
    NLL_MEAN: "1",
    "nll_std": "1",
    "iterations_median": "1",
    "iterations_max": "1",
    "converged_fraction": "1",
    "at_bound_count": "1",
}
SELECTION_OPTIONAL = (R_HAT, TOTAL_RESIDUAL_CL, SYSTEMATIC_CL)
SELECTION_ATTRS = ("zone", "best_index", "best_configuration")


def read_grid_selection(path) -> io.Product:
    """A grid selection: the table of every configuration and the selected one.

    ``configuration[best_index]`` is the selection; ``r_hat`` and the residual spectra
    exist only when the selection step was given the CMB spectra.
    """
    expect = {CONFIGURATION: ((None, len(PARAMETERS)), "1")}
    expect |= {name: ((None,), units) for name, units in SELECTION_TABLE.items()}
    expect |= {
        R_HAT: ((None,), "1"),
        TOTAL_RESIDUAL_CL: ((None, None), POWER),
        SYSTEMATIC_CL: ((None, None), POWER),
    }
    p = io.read_product(path, GRID_SELECTION, expect, optional=SELECTION_OPTIONAL)
    _require_attrs(p, SELECTION_ATTRS)
    n = p[CONFIGURATION].shape[0]
    if n == 0:
        raise DataError(f"{p.path}: the grid selection holds no configuration")
    _same_rows(p, n, [name for name in expect if name in p.data], "configurations")
    best = p.attrs["best_index"]
    if not 0 <= int(best) < n:
        raise DataError(f"{p.path}: best_index {best} is outside the {n} configurations")
    return p


# ---------------------------------------------------------------- compsep_fit
PIXELS = "pixels"  # [n_zone] HEALPix RING indices of the zone
CMB_QU = "cmb_qu"  # [realisation, QU, n_zone] uK_CMB
NLL = "nll"  # [realisation] -ln L
SPATIAL_VARIANCE = "spatial_variance"  # [realisation] uK_CMB^2
SYSTEMATIC_COMPONENTS = "systematic_components"  # [CMB dust sync, QU, n_zone] uK_CMB
FIT_ATTRS = ("zone", "method", "configuration")


def patches_name(parameter: str) -> str:
    """Dataset of the full-sky patch map (labels, -1 outside the zone) of a parameter."""
    return f"patches/{parameter}"


def read_compsep_fit(path, nside: int | None = None) -> io.Product:
    """One method's fit in one zone; with ``nside``, the patch maps must have its pixels."""
    npix = None if nside is None else harmonics.npix(int(nside))
    expect = {
        PIXELS: ((None,), "1"),
        CMB_QU: ((None, 2, None), "uK_CMB"),
        NLL: ((None,), "1"),
        SPATIAL_VARIANCE: ((None,), POWER),
        SYSTEMATIC_COMPONENTS: ((3, 2, None), "uK_CMB"),
    }
    expect |= {patches_name(name): ((npix,), "1") for name in PARAMETERS}
    p = io.read_product(path, COMPSEP_FIT, expect)
    _require_attrs(p, FIT_ATTRS)
    n_zone = p[PIXELS].size
    for name in (CMB_QU, SYSTEMATIC_COMPONENTS):
        if p[name].shape[-1] != n_zone:
            raise DataError(
                f"{p.path}: dataset '{name}' covers {p[name].shape[-1]} pixels, "
                f"the zone has {n_zone}"
            )
    _same_rows(p, p[CMB_QU].shape[0], (CMB_QU, NLL, SPATIAL_VARIANCE), "realisations")
    size = p[patches_name(PARAMETERS[0])].size
    if not _is_healpix(size):
        raise DataError(f"{p.path}: patch maps have {size} pixels, not a HEALPix map")
    for name in PARAMETERS[1:]:
        if p[patches_name(name)].size != size:
            raise DataError(f"{p.path}: patch maps of different sizes")
    if n_zone and (p[PIXELS].min() < 0 or p[PIXELS].max() >= size):
        raise DataError(f"{p.path}: zone pixel indices outside a map of {size} pixels")
    return p


def fit_nside(fit: io.Product) -> int:
    """HEALPix nside of a fit's patch maps."""
    return round(float(np.sqrt(fit[patches_name(PARAMETERS[0])].size / 12)))


# ---------------------------------------------------------------- helpers
def _is_healpix(npix: int) -> bool:
    nside = np.sqrt(npix / 12)
    return npix > 0 and nside == int(nside) and (int(nside) & (int(nside) - 1)) == 0


def _require_attrs(p: io.Product, names: Iterable[str]) -> None:
    missing = [a for a in names if a not in p.attrs]
    if missing:
        raise DataError(f"{p.path}: attribute(s) {', '.join(missing)} missing")


def _same_rows(p: io.Product, n: int, names: Iterable[str], what: str) -> None:
    for name in names:
        if p[name].shape[0] != n:
            raise DataError(
                f"{p.path}: dataset '{name}' has {p[name].shape[0]} rows, expected {n} {what}"
            )
