"""Component-separation products: a writer and a checked reader of each.

``patch_map`` (written by :func:`bmodesep.stages.compsep.kmeans_patches`): the K-means
labels of one zone for one patch count, -1 outside the zone.

``grid_point`` (a checkpoint piece of a grid chunk) and ``grid_chunk`` (written by
:func:`bmodesep.stages.compsep.grid_chunk`): the summary of each grid configuration of one
slice of the grid, one row per configuration.

``grid_selection`` (written by :func:`bmodesep.stages.compsep.grid_select`): one row per
grid configuration, sorted by configuration index, with the selected row in the
attribute ``best_index``.

``screen_point``, ``grid_screen_chunk`` and ``grid_screen`` (written by
:func:`bmodesep.stages.compsep.grid_screen_chunk` and ``grid_screen``): pass 1 of the
screened grid search, every configuration's noiseless fit and predicted realisations,
and the candidates pass 2 measures.

``compsep_fit`` (written by :func:`bmodesep.stages.compsep.compsep_fit`): the
per-realisation fits of one method in one zone, the reconstructed CMB on the zone's
pixels and the full-sky patch maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.seds import SPECTRAL_PARAMETERS as PARAMETERS

if TYPE_CHECKING:  # the fit's types; importing them would import JAX for every reader
    from bmodesep.core.compsep.gridsearch import ConfigResult, Observation
    from bmodesep.core.compsep.likelihood import CellLayout
from bmodesep.errors import DataError
from bmodesep.products import io

PATCH_MAP = "patch_map"
GRID_POINT = "grid_point"
GRID_CHUNK = "grid_chunk"
GRID_SELECTION = "grid_selection"
COMPSEP_FIT = "compsep_fit"

POWER = "uK_CMB^2"
D = io.Dataset


# ---------------------------------------------------------------- patch_map
LABELS = "labels"  # [npix] patch label per pixel, -1 outside the zone


def write_patch_map(
    path, labels: np.ndarray, zone: str, n_patches: int, provenance, requested: int | None = None
) -> None:
    """The K-means patches of ``zone`` for ``n_patches``; ``requested``: the grid's K where
    it exceeds the zone's pixels (then ``n_patches`` is the pixel count: one per pixel)."""
    io.write_product(
        path,
        PATCH_MAP,
        {LABELS: D(labels, "1", "patch label per pixel, -1 outside the zone")},
        provenance,
        {
            "zone": zone,
            "n_patches": n_patches,
            "requested_patches": n_patches if requested is None else requested,
            "method": "kmeans",
        },
    )


def read_patch_map(path, npix: int) -> tuple[int, np.ndarray]:
    """(the grid's patch count K, labels) of a patch file whose map has ``npix`` pixels
    (K above the zone's pixels: a map of one patch per pixel)."""
    p = io.read_product(path, PATCH_MAP, {LABELS: ((npix,), "1")})
    _require_attrs(p, ("zone", "n_patches"))
    return int(p.attrs.get("requested_patches", p.attrs["n_patches"])), p[LABELS]


# ---------------------------------------------------------------- grid_point, grid_chunk
INDEX = "index"  # [config] configuration index in the grid

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
SPECTRUM_FIELDS = (TOTAL_RESIDUAL_CL, SYSTEMATIC_CL)
PER_REALISATION = ("spatial_variance", "nll")  # [config, realisation] in a grid chunk
CHUNK_ATTRS = ("zone", "chunk", "chunks", "fsky")


def _units(field: str) -> str:
    power = ("variance", "systematic", "residual_cl", "statistical_cl")
    return POWER if any(word in field for word in power) else "1"


def grid_point_datasets(result: ConfigResult) -> dict[str, io.Dataset]:
    """The checkpoint piece of one configuration: its table row and per-realisation arrays."""
    row = {
        CMB_VARIANCE: result.cmb_variance,
        SYSTEMATIC_RESIDUAL: result.systematic_residual,
        NLL_MEAN: float(result.nll.mean()),
        "nll_std": float(result.nll.std(ddof=1)),
        "iterations_median": float(np.median(result.iterations)),
        "iterations_max": int(result.iterations.max()),
        "converged_fraction": float(result.converged.mean()),
        "at_bound_count": int(result.at_bound.any(axis=0).sum()),
        "spatial_variance": result.spatial_variance,
        "nll": result.nll,
    }
    if result.total_residual_cl is not None:
        row |= {TOTAL_RESIDUAL_CL: result.total_residual_cl, SYSTEMATIC_CL: result.systematic_cl}
    return {k: D(np.asarray(v), _units(k)) for k, v in row.items()}


def write_grid_chunk(
    path,
    index: np.ndarray,
    configurations: np.ndarray,
    points: Sequence[io.Product],
    provenance,
    attrs: Mapping[str, Any],
) -> None:
    """A chunk of the grid from its configurations' checkpoint pieces (``grid_point``)."""
    extra = SPECTRUM_FIELDS if points and TOTAL_RESIDUAL_CL in points[0].data else ()
    fields = (*SELECTION_TABLE, *PER_REALISATION, *extra)
    _write_rows(path, GRID_CHUNK, index, configurations, points, fields, provenance, attrs)


def _write_rows(
    path, kind, index, configurations, points, fields, provenance, attrs, extra=None
) -> None:
    """One row per configuration from checkpoint pieces (a chunk of either pass), and
    ``extra`` datasets."""
    data = dict(extra or {}) | {
        INDEX: D(index, "1"),
        CONFIGURATION: D(configurations.reshape(-1, 3), "1", "K_beta_d, K_T_d, K_beta_s"),
    }
    for field in fields:
        data[field] = D(
            np.stack([r[field] for r in points]) if points else np.zeros(0),
            points[0].units[field] if points else "1",
        )
    missing = [a for a in CHUNK_ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"{kind} attributes missing: {missing}")
    io.write_product(path, kind, data, provenance, attrs)


def read_grid_chunk(path) -> io.Product:
    """A grid chunk: index, configuration and the table fields, one row per configuration."""
    p = io.read_product(path, GRID_CHUNK)
    _require_attrs(p, CHUNK_ATTRS)
    for name in (INDEX, CONFIGURATION, *SELECTION_TABLE):
        if name not in p.data:
            raise DataError(f"{p.path}: dataset '{name}' is missing")
    _same_rows(p, p[INDEX].shape[0], (CONFIGURATION, *SELECTION_TABLE), "configurations")
    return p


# ---------------------------------------------------------------- the screened search
# pass 1 (``screen_point`` pieces, ``grid_screen_chunk``): each configuration's noiseless
# fit and its predicted realisations (bmodesep.core.compsep.screening); ``grid_screen``:
# the whole table of a zone and the candidates pass 2 measures
SCREEN_POINT = "screen_point"
GRID_SCREEN_CHUNK = "grid_screen_chunk"
GRID_SCREEN = "grid_screen"
PREDICTED_CMB_VARIANCE = "predicted_cmb_variance"  # [config] eq. 9 predicted, uK_CMB^2
PREDICTED_NLL_MEAN = "predicted_nll_mean"  # [config]
FREE_PARAMETERS = "free_parameters"  # [config] indices neither on a bound nor without data
CANDIDATE = "candidate"  # [config] bool: measured by pass 2
# [config, n] (with sky spectra, where the rule needs it: screening.needs_statistical)
PREDICTED_STATISTICAL_CL = "predicted_statistical_cl"
SCREEN_SPECTRA = (SYSTEMATIC_CL, PREDICTED_STATISTICAL_CL)
PREDICTION_TABLE = {
    SYSTEMATIC_RESIDUAL: POWER,
    "noise_variance": POWER,
    "index_variance": POWER,
    PREDICTED_CMB_VARIANCE: POWER,
    PREDICTED_NLL_MEAN: "1",
    FREE_PARAMETERS: "1",
    "noiseless_converged": "1",
    "at_bound_count": "1",
}
SCREEN_ATTRS = ("zone", "rule", "margin", "best_predicted_index", "fsky")


def screen_point_datasets(prediction) -> dict[str, io.Dataset]:
    """The checkpoint piece of one configuration of pass 1 (a ``screening.Prediction``)."""
    row = {
        SYSTEMATIC_RESIDUAL: prediction.systematic_residual,
        "noise_variance": prediction.noise_variance,
        "index_variance": prediction.index_variance,
        PREDICTED_CMB_VARIANCE: prediction.cmb_variance,
        PREDICTED_NLL_MEAN: prediction.nll_mean,
        FREE_PARAMETERS: prediction.free_parameters,
        "noiseless_converged": int(prediction.converged),
        "at_bound_count": int(np.sum(prediction.at_bound)),
    }
    if prediction.systematic_cl is not None:
        row[SYSTEMATIC_CL] = prediction.systematic_cl
    if prediction.statistical_cl is not None:
        row[PREDICTED_STATISTICAL_CL] = prediction.statistical_cl
    return {k: D(np.asarray(v), _units(k)) for k, v in row.items()}


def write_grid_screen_chunk(path, index, configurations, points, provenance, attrs) -> None:
    """Pass 1 of one slice of the grid (with sky spectra: those of :data:`SCREEN_SPECTRA`
    its pieces have too)."""
    spectra = [f for f in SCREEN_SPECTRA if points and f in points[0].data]
    fields = (*PREDICTION_TABLE, *spectra)
    _write_rows(path, GRID_SCREEN_CHUNK, index, configurations, points, fields, provenance, attrs)


def read_grid_screen_chunk(path) -> io.Product:
    p = io.read_product(path, GRID_SCREEN_CHUNK)
    _require_attrs(p, CHUNK_ATTRS)
    for name in (INDEX, CONFIGURATION, *PREDICTION_TABLE):
        if name not in p.data:
            raise DataError(f"{p.path}: dataset '{name}' is missing")
    _same_rows(p, p[INDEX].shape[0], (CONFIGURATION, *PREDICTION_TABLE), "configurations")
    return p


def write_grid_screen(path, table: Mapping[str, np.ndarray], provenance, attrs) -> None:
    """A zone's pass-1 table (every configuration, by index) and its pass-2 candidates."""
    _write_zone_table(path, GRID_SCREEN, SCREEN_ATTRS, table, provenance, attrs)


def _write_zone_table(path, kind, required, table, provenance, attrs) -> None:
    """A zone's table, one row per configuration, with its ``required`` attributes."""
    missing = [a for a in required if a not in attrs]
    if missing:
        raise ValueError(f"{kind} attributes missing: {missing}")
    io.write_product(path, kind, {f: D(v, _units(f)) for f, v in table.items()}, provenance, attrs)


def read_grid_screen(path) -> io.Product:
    """A zone's screen: the configurations pass 2 measures are ``p[CANDIDATE]``."""
    expect = {CONFIGURATION: ((None, 3), "1"), CANDIDATE: ((None,), "1")}
    expect |= {name: ((None,), units) for name, units in PREDICTION_TABLE.items()}
    expect |= {name: ((None, None), POWER) for name in SCREEN_SPECTRA}
    p = io.read_product(path, GRID_SCREEN, expect, optional=SCREEN_SPECTRA)
    _require_attrs(p, SCREEN_ATTRS)
    n = p[CONFIGURATION].shape[0]
    _same_rows(p, n, [name for name in expect if name in p.data], "configurations")
    if not p[CANDIDATE].any():
        raise DataError(f"{p.path}: the screen keeps no configuration")
    return p


def write_grid_selection(path, table: Mapping[str, np.ndarray], provenance, attrs) -> None:
    """The whole grid table of a zone (``configuration`` + fields) and its selection."""
    _write_zone_table(path, GRID_SELECTION, SELECTION_ATTRS, table, provenance, attrs)


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


# ---------------------------------------------------------------- recovery (sec. 5.1)
# which configuration each selection rule picks on a sky of known patch counts
RECOVERY_COLUMNS = (
    "zone",
    "rule",
    *(f"true_k_{p}" for p in PARAMETERS),
    *(f"selected_k_{p}" for p in PARAMETERS),
    "simulation",
    "condition_met",
)


def write_recovery(path, rows: Sequence[Mapping[str, Any]]) -> None:
    """The recovery table (:data:`RECOVERY_COLUMNS`), one row per zone and rule."""
    _write_table(path, rows, RECOVERY_COLUMNS)


def _write_table(path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        raise ValueError(f"a table of {', '.join(columns[:2])}, ... needs rows")
    io.write_csv_atomic(path, rows, columns)


def read_recovery(path) -> list[dict[str, str]]:
    return io.read_csv(path, RECOVERY_COLUMNS)


# what every selection rule picks in each zone of any simulation
RULE_CHOICE_COLUMNS = (
    "zone",
    "rule",
    *(f"selected_k_{p}" for p in PARAMETERS),
    "r_hat",
    "cmb_variance",
    "systematic_residual",
    "condition_met",
)


def write_rule_choices(path, rows: Sequence[Mapping[str, Any]]) -> None:
    """What every rule picks per zone (:data:`RULE_CHOICE_COLUMNS`)."""
    _write_table(path, rows, RULE_CHOICE_COLUMNS)


# ---------------------------------------------------------------- compsep_fit
PIXELS = "pixels"  # [n_zone] HEALPix RING indices of the zone
CMB_QU = "cmb_qu"  # [realisation, QU, n_zone] uK_CMB
NLL = "nll"  # [realisation] -ln L
SPATIAL_VARIANCE = "spatial_variance"  # [realisation] uK_CMB^2
SYSTEMATIC_COMPONENTS = "systematic_components"  # [CMB dust sync, QU, n_zone] uK_CMB
COMPONENTS = "components"  # (optional) [CMB dust sync, QU, n_zone] uK_CMB, realisation 0
PARAMETER_MAPS = "parameter_maps"  # [realisation, beta_d T_d beta_s, n_zone]
# (maps that contain their noise) the observation's own fit; the realisations are then
# the parametric bootstrap around it and COMPONENTS its W d
OBSERVED_PARAMETER_MAPS = "observation/parameter_maps"  # [beta_d T_d beta_s, n_zone]
OBSERVED_NLL = "observation/nll"  # [] -ln L of the observation
FIT_ATTRS = ("zone", "method", "configuration")


def write_compsep_fit(
    path,
    layout: CellLayout,
    patches: Mapping[str, np.ndarray],
    result: ConfigResult,
    provenance,
    attrs: Mapping[str, Any],
    observation: Observation | None = None,
) -> None:
    """One method's fits in one zone (``result`` kept its CMB maps); of maps that contain
    their noise, ``observation`` is their own fit and ``result`` the bootstrap around it."""
    beta_maps = result.params[:, layout.pixel_params].transpose(0, 2, 1)  # [real, 3, n_zone]
    data = {
        PIXELS: D(layout.pixels, "1", "HEALPix RING indices of the zone"),
        **{
            patches_name(p): D(patches[p], "1", "patch labels, -1 outside the zone")
            for p in PARAMETERS
        },
        "params": D(result.params, "1", "best-fit parameters [realisation, parameter]"),
        PARAMETER_MAPS: D(beta_maps, "1", "beta_d, T_d [K], beta_s per zone pixel"),
        "at_bound": D(result.at_bound.astype(np.uint8), "1"),
        NLL: D(result.nll, "1", "-ln L"),
        "iterations": D(result.iterations, "1"),
        "converged": D(result.converged.astype(np.uint8), "1"),
        CMB_QU: D(result.cmb, "uK_CMB", "reconstructed CMB [realisation, QU, zone pixel]"),
        SPATIAL_VARIANCE: D(result.spatial_variance, POWER),
        "foreground_params": D(result.foreground_params, "1"),
        SYSTEMATIC_COMPONENTS: D(
            result.systematic_components,
            "uK_CMB",
            "W(d_fg): CMB, dust, synchrotron [comp, QU, zone pixel]",
        ),
    }
    if result.components is not None:
        data[COMPONENTS] = D(
            result.components,
            "uK_CMB",
            ("W d of the observation" if observation else "W d of realisation 0")
            + ": CMB, dust and synchrotron at their reference frequencies "
            "[comp, QU, zone pixel]",
        )
    if observation is not None:
        params = np.asarray(observation.fit.params)
        data[OBSERVED_PARAMETER_MAPS] = D(
            params[layout.pixel_params].T, "1", "the observation's beta_d, T_d [K], beta_s"
        )
        data[OBSERVED_NLL] = D(np.asarray(float(observation.fit.nll)), "1", "-ln L")
    attrs = dict(attrs)
    attrs |= {
        "cmb_variance": result.cmb_variance,
        "systematic_residual": result.systematic_residual,
        "n_at_bound": int(result.at_bound.any(axis=0).sum()),
        "contains_noise": observation is not None,
    }
    missing = [a for a in FIT_ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"compsep_fit attributes missing: {missing}")
    io.write_product(path, COMPSEP_FIT, data, provenance, attrs)


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
        COMPONENTS: ((3, 2, None), "uK_CMB"),
        PARAMETER_MAPS: ((None, 3, None), "1"),
        OBSERVED_PARAMETER_MAPS: ((3, None), "1"),
        OBSERVED_NLL: ((), "1"),
    }
    expect |= {patches_name(name): ((npix,), "1") for name in PARAMETERS}
    optional = [COMPONENTS, OBSERVED_PARAMETER_MAPS, OBSERVED_NLL]
    p = io.read_product(path, COMPSEP_FIT, expect, optional=optional)
    if observed(p) and not all(n in p.data for n in optional):
        raise DataError(f"{p.path}: the fit of an observation lacks {optional}")
    _require_attrs(p, FIT_ATTRS)
    n_zone = p[PIXELS].size
    for name in (
        CMB_QU,
        SYSTEMATIC_COMPONENTS,
        PARAMETER_MAPS,
        COMPONENTS,
        OBSERVED_PARAMETER_MAPS,
    ):
        if name in p.data and p[name].shape[-1] != n_zone:
            raise DataError(
                f"{p.path}: dataset '{name}' covers {p[name].shape[-1]} pixels, "
                f"the zone has {n_zone}"
            )
    _same_rows(
        p, p[CMB_QU].shape[0], (CMB_QU, NLL, SPATIAL_VARIANCE, PARAMETER_MAPS), "realisations"
    )
    size = p[patches_name(PARAMETERS[0])].size
    if not _is_healpix(size):
        raise DataError(f"{p.path}: patch maps have {size} pixels, not a HEALPix map")
    for name in PARAMETERS[1:]:
        if p[patches_name(name)].size != size:
            raise DataError(f"{p.path}: patch maps of different sizes")
    if n_zone and (p[PIXELS].min() < 0 or p[PIXELS].max() >= size):
        raise DataError(f"{p.path}: zone pixel indices outside a map of {size} pixels")
    return p


def observed(fit: io.Product) -> bool:
    """Whether a fit is of maps that contain their noise (an observation)."""
    return bool(fit.attrs.get("contains_noise", False))


def fit_nside(fit: io.Product) -> int:
    """HEALPix nside of a fit's patch maps."""
    return round(float(np.sqrt(fit[patches_name(PARAMETERS[0])].size / 12)))


# ---------------------------------------------------------------- helpers
def _is_healpix(npix: int) -> bool:
    nside = np.sqrt(npix / 12)
    return npix > 0 and nside == int(nside) and (int(nside) & (int(nside) - 1)) == 0


def by_zone(paths, kind: str) -> dict[str, list]:
    """``kind`` products grouped by the zone they record (their attributes alone are read),
    in the order given: a job covering several zones is given all their files at once."""
    out: dict[str, list] = {}
    for path in paths:
        p = io.read_product(path, kind, {})
        _require_attrs(p, ("zone",))
        out.setdefault(str(p.attrs["zone"]), []).append(path)
    return out


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
