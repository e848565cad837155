"""Component-separation stage (``workflow/rules/compsep.smk``): one function per rule.

    bmodesep compsep kmeans_patches --config C --simulation S --zone Z --masks M --outputs F...
    bmodesep compsep grid_chunk     --config C --simulation S --zone Z --chunk I --masks M
                                    --signal F --patches F... [--sky SKY] --output F
    bmodesep compsep grid_select    --config C --simulation S --zone Z --chunks F... --output F
    bmodesep compsep compsep_fit    --config C --simulation S --zone Z --method M --masks M
                                    --signal F [--patches F... --selection F] --output F

Noise realisation i is regenerated from (simulation seed, i) exactly as the simulation
stage draws it.  A chunk writes one checkpoint per configuration next to its output, so a
killed job resumes where it stopped; the chunk file is written (atomically) at the end.
Patch files are given as paths (the workflow names them); each carries its patch count.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from bmodesep.config import multires_table, simulation_config, simulation_lmax
from bmodesep.core.compsep import clustering, fitting, gridsearch
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.rlike.residuals import analyse_residuals, theory_spectra
from bmodesep.core.simulate.instrument import (
    simulate_noise,
    white_noise_sigma_per_pixel,
)
from bmodesep.errors import ConfigError, DataError
from bmodesep.log import Progress
from bmodesep.products import checkpoint, io, sims
from bmodesep.settings import bb_estimator, kmeans_counts, r_grid, resolve_instrument

D = io.Dataset
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- inputs
def _compsep_config(config, name: str) -> dict:
    """The stage config of simulation ``name``, which must be one compsep runs on."""
    if name not in config["compsep"]["simulations"]:
        raise ConfigError(f"simulation '{name}' is not in compsep.simulations")
    return simulation_config(config, name, with_compsep=True)


def _zone(zones: dict[str, np.ndarray], name: str, path) -> np.ndarray:
    if name not in zones:
        raise ConfigError(f"unknown zone '{name}' (zones of {path}: {', '.join(zones)})")
    return zones[name]


def load_problem(config, name: str, zone_name: str, masks_path, signal_path, sky_path=None):
    """Inputs of a zone's fits; with ``sky_path``, also what residual spectra need."""
    stage = _compsep_config(config, name)
    sim = stage["simulations"][name]
    nside, lmax = sim["nside"], simulation_lmax(sim)
    inst = resolve_instrument(stage, sim["instrument"])
    _, zones = sims.read_masks(masks_path, nside)
    zone = _zone(zones, zone_name, masks_path)
    signal = sims.read_signal(signal_path, inst, nside)
    pix = np.flatnonzero(zone)
    cs = stage["compsep"]
    n_real = cs["noise_realisations"] or sim["noise_realisations"]
    if n_real < 2:
        raise ConfigError(
            f"simulation {name}: the grid search needs at least 2 noise "
            "realisations (set compsep.noise_realisations)"
        )

    def noise(i: int) -> np.ndarray:
        return simulate_noise(inst, nside, lmax, sim["seed"], i).qu[0][:, :, pix]

    product, _ = sims.read_sky(sky_path, nside) if sky_path else (None, None)
    estimator = bb_estimator(stage, nside) if sky_path else None
    mask = zone.astype(float)

    def bb_spectrum(zone_map: np.ndarray) -> np.ndarray:
        full = np.zeros((*zone_map.shape[:-1], zone.size))
        full[..., pix] = zone_map
        return estimator.measure(full, mask)

    problem = gridsearch.Problem(
        model=compsep.SpectralModel(
            inst.frequencies_ghz, cs["dust_freq_ref_ghz"], cs["sync_freq_ref_ghz"]
        ),
        signal=signal["total_qu"][:, :, pix],
        foreground=signal["foreground_qu"][:, :, pix],
        noise=noise,
        n_realisations=n_real,
        ninv=1.0 / white_noise_sigma_per_pixel(inst, nside) ** 2,
        start=cs["start"],
        bounds=cs["bounds"],
        options=fitting.FitOptions(**cs["fit"]),
        cmb_true=None if product is None else product["cmb/qu"][:, pix],
        bb_spectrum=None if product is None else bb_spectrum,
    )
    return stage, zone, problem


def read_patch_files(paths, zone: np.ndarray) -> dict[int, np.ndarray]:
    """K-means patch maps by patch count, from the files the workflow names."""
    out = {}
    for path in paths:
        p = io.read_product(path, "patch_map", {"labels": ((zone.size,), "1")})
        out[int(p.attrs["n_patches"])] = clustering.validate_patch_map(p["labels"], zone, str(path))
    return out


def configuration_patches(point: gridsearch.GridPoint, patch_maps: dict[int, np.ndarray]):
    """The patch map of each spectral parameter for one grid configuration."""
    missing = sorted(set(point) - set(patch_maps))
    if missing:
        raise DataError(f"no K-means patch file given for K = {missing}")
    return {param: patch_maps[k] for param, k in zip(compsep.PARAMETERS, point, strict=True)}


def multires_patches(stage, method: str, zone_name: str, zone: np.ndarray, nside: int):
    spec = multires_table(stage, method)[zone_name.split("_")[0]]
    return {p: clustering.multires_patches(zone, min(spec[p], nside)) for p in compsep.PARAMETERS}


# ---------------------------------------------------------------- steps
def kmeans_patches(config, simulation: str, zone: str, masks, outputs) -> None:
    """Rule kmeans_patches: one patch file per K of the grid, ``outputs`` in increasing K."""
    name, zone_name = simulation, zone
    stage = _compsep_config(config, name)
    nside = stage["simulations"][name]["nside"]
    _, zones = sims.read_masks(masks, nside)
    zone = _zone(zones, zone_name, masks)
    cs = stage["compsep"]
    counts = kmeans_counts(cs)
    if len(outputs) != len(counts):
        raise ConfigError(f"{len(outputs)} output files for {len(counts)} K-means counts {counts}")
    for k, path in zip(counts, outputs, strict=True):
        t0 = time.perf_counter()
        labels = clustering.kmeans_patches(zone, k, cs["kmeans_seed"])
        io.write_product(
            path,
            "patch_map",
            {"labels": D(labels, "1", "patch label per pixel, -1 outside the zone")},
            io.provenance(stage, cs["kmeans_seed"], "patches"),
            {"zone": zone_name, "n_patches": k, "method": "kmeans"},
        )
        log.info("K-means K=%d in %s: %.2f s", k, zone_name, time.perf_counter() - t0)


TABLE_FIELDS = (
    "cmb_variance",
    "systematic_residual",
    "nll_mean",
    "nll_std",
    "iterations_median",
    "iterations_max",
    "converged_fraction",
    "at_bound_count",
)


def _row(result: gridsearch.ConfigResult) -> dict[str, Any]:
    return {
        "cmb_variance": result.cmb_variance,
        "systematic_residual": result.systematic_residual,
        "nll_mean": float(result.nll.mean()),
        "nll_std": float(result.nll.std(ddof=1)),
        "iterations_median": float(np.median(result.iterations)),
        "iterations_max": int(result.iterations.max()),
        "converged_fraction": float(result.converged.mean()),
        "at_bound_count": int(result.at_bound.any(axis=0).sum()),
        "spatial_variance": result.spatial_variance,
        "nll": result.nll,
    } | (
        {}
        if result.total_residual_cl is None
        else {"total_residual_cl": result.total_residual_cl, "systematic_cl": result.systematic_cl}
    )


SPECTRUM_FIELDS = ("total_residual_cl", "systematic_cl")


def _units(field: str) -> str:
    power = ("variance", "systematic", "residual_cl")
    return "uK_CMB^2" if any(word in field for word in power) else "1"


def grid_chunk(
    config, simulation, zone, chunk, masks, signal, patches, output, sky=None, devices: int = 1
) -> None:
    """Rule grid_chunk: every configuration of one slice of the grid, with checkpoints."""
    name, zone_name, sky_path = simulation, zone, sky
    masks_path, signal_path = masks, signal
    stage, zone, problem = load_problem(config, name, zone_name, masks_path, signal_path, sky_path)
    problem = problem._replace(devices=devices)
    cs = stage["compsep"]
    points = gridsearch.grid_points(cs["grid"])
    lo, hi = gridsearch.chunk_bounds(len(points), cs["chunks"], chunk)
    job = checkpoint.fingerprint(stage, zone=zone_name, chunk=chunk, sky=sky_path is not None)
    parts = checkpoint.Parts(output, "grid_point", job)
    done = parts.done(range(lo, hi))
    todo = [j for j in range(lo, hi) if j not in done]
    log.info(
        "chunk %d/%d: configurations %d..%d on %d JAX device(s) (%s)",
        chunk,
        cs["chunks"],
        lo,
        hi - 1,
        max(devices, 1),
        jax_platform(),
    )
    patch_maps = read_patch_files(patches, zone)
    layouts = gridsearch.pad_layouts(
        [
            compsep.cell_layout(configuration_patches(points[j], patch_maps), zone)
            for j in range(lo, hi)
        ]
    )
    progress = Progress(
        f"grid chunk {chunk} of {zone_name}", hi - lo, "configurations", already=len(done)
    )
    for j in todo:
        result = gridsearch.evaluate_configuration(layouts[j - lo], problem)
        row = _row(result)
        parts.write(
            j,
            {k: D(np.asarray(v), _units(k)) for k, v in row.items()},
            io.provenance(stage, cs["kmeans_seed"], "grid_point"),
            {"configuration": list(points[j])},
        )
        progress.step(
            f"configuration {j} {tuple(points[j])}: sigma2_cmb {row['cmb_variance']:.4e} uK^2, "
            f"converged {row['converged_fraction']:.0%}"
        )
    rows = [parts.read(j) for j in range(lo, hi)]
    data = {
        "index": D(np.arange(lo, hi), "1"),
        "configuration": D(
            np.array([points[j] for j in range(lo, hi)]).reshape(-1, 3),
            "1",
            "K_beta_d, K_T_d, K_beta_s",
        ),
    }
    extra = SPECTRUM_FIELDS if rows and "total_residual_cl" in rows[0].data else ()
    for field in (*TABLE_FIELDS, "spatial_variance", "nll", *extra):
        data[field] = D(
            np.stack([r[field] for r in rows]) if rows else np.zeros(0),
            rows[0].units[field] if rows else "1",
        )
    io.write_product(
        output,
        "grid_chunk",
        data,
        io.provenance(stage, cs["kmeans_seed"], "grid_chunk"),
        {"zone": zone_name, "chunk": chunk, "chunks": cs["chunks"], "fsky": float(zone.mean())},
    )
    parts.remove()


def jax_platform() -> str:
    import jax

    return ", ".join(sorted({d.platform for d in jax.devices()}))


def r_hat_per_configuration(stage, name, spectra_path, total_cl, syst_cl, fsky) -> np.ndarray:
    """r-hat of eq. 15 for each configuration's residual spectra (one zone)."""
    est = bb_estimator(stage, stage["simulations"][name]["nside"])
    if total_cl.shape[-1] != est.ell.size:
        raise DataError(
            f"grid residual spectra have {total_cl.shape[-1]} elements, rlike expects "
            f"{est.ell.size}: re-run the grid chunks after changing rlike"
        )
    camb = sims.read_spectra(spectra_path, est.lmax)
    theory = theory_spectra(camb, stage["cmb"]["r"], stage["cmb"]["a_lens"], est)
    grid = r_grid(stage)
    return np.array(
        [
            analyse_residuals(grid, theory, t, s, est.modes(fsky)).r_hat
            for t, s in zip(total_cl, syst_cl, strict=True)
        ]
    )


def grid_select(config, simulation, zone, chunks, output, spectra=None) -> None:
    """Rule grid_select: the whole grid table of a zone and its selected configuration."""
    name, zone_name, chunk_paths, spectra_path = simulation, zone, chunks, spectra
    stage = _compsep_config(config, name)
    cs = stage["compsep"]
    chunks = [io.read_product(p, "grid_chunk") for p in chunk_paths]
    index = np.concatenate([c["index"] for c in chunks])
    n_points = len(gridsearch.grid_points(cs["grid"]))
    if sorted(index.tolist()) != list(range(n_points)):
        raise DataError(
            f"grid chunks for {zone_name} cover configurations "
            f"{sorted(index.tolist())[:5]}..., expected all {n_points}"
        )
    order = np.argsort(index)
    fields = ("configuration", *TABLE_FIELDS)
    if all("total_residual_cl" in c.data for c in chunks):
        fields = (*fields, *SPECTRUM_FIELDS)
    table = {f: np.concatenate([c[f] for c in chunks])[order] for f in fields}
    if spectra_path is not None and "total_residual_cl" in table:
        table["r_hat"] = r_hat_per_configuration(
            stage,
            name,
            spectra_path,
            table["total_residual_cl"],
            table["systematic_cl"],
            chunks[0].attrs["fsky"],
        )
    sel = cs["selection"]
    best, honoured = gridsearch.select_best(
        table["cmb_variance"],
        table["systematic_residual"],
        sel["objective"],
        sel["relative_threshold"],
    )
    if not honoured:
        log.warning(
            "no configuration meets the systematic threshold; selected by the objective alone"
        )
    chosen = tuple(int(k) for k in table["configuration"][best])
    log.info("%s: selected %s", zone_name, chosen)
    io.write_product(
        output,
        "grid_selection",
        {f: D(v, _units(f)) for f, v in table.items()},
        io.provenance(stage, cs["kmeans_seed"], "grid_selection"),
        {
            "zone": zone_name,
            "best_index": best,
            "best_configuration": table["configuration"][best].tolist(),
            "objective": sel["objective"],
            "threshold_honoured": honoured,
        },
    )


def compsep_fit(
    config,
    simulation,
    zone,
    method,
    masks,
    signal,
    output,
    patches=None,
    selection=None,
    devices: int = 1,
) -> None:
    """Rule compsep_fit: the fits of one method (kmeans, single, multires...) in one zone."""
    name, zone_name, masks_path, signal_path = simulation, zone, masks, signal
    stage, zone, problem = load_problem(config, name, zone_name, masks_path, signal_path)
    problem = problem._replace(devices=devices)
    nside = stage["simulations"][name]["nside"]
    if method == "kmeans":
        if patches is None or selection is None:
            raise ConfigError("the kmeans method needs --patches and --selection")
        best = io.read_product(selection, "grid_selection").attrs["best_configuration"]
        patches = configuration_patches(
            gridsearch.GridPoint(*best), read_patch_files(patches, zone)
        )
        configuration = [int(k) for k in best]
    elif method == "single":
        patches = {p: clustering.single_patch(zone) for p in compsep.PARAMETERS}
        configuration = [1, 1, 1]
    else:  # multires or multires_NAME; unknown names raise ConfigError
        patches = multires_patches(stage, method, zone_name, zone, nside)
        configuration = [int(p.max()) + 1 for p in patches.values()]
    layout = compsep.cell_layout(patches, zone)
    t0 = time.perf_counter()
    result = gridsearch.evaluate_configuration(layout, problem, keep_maps=True)
    log.info(
        "%s %s in %s: %d fits in %.1f s, sigma2_cmb %.4e uK^2",
        method,
        tuple(configuration),
        zone_name,
        problem.n_realisations,
        time.perf_counter() - t0,
        result.cmb_variance,
    )
    pixel_params = layout.pixel_params
    beta_maps = result.params[:, pixel_params].transpose(0, 2, 1)  # [real, 3, n_zone]
    data = {
        "pixels": D(layout.pixels, "1", "HEALPix RING indices of the zone"),
        **{
            f"patches/{p}": D(patches[p], "1", "patch labels, -1 outside the zone")
            for p in compsep.PARAMETERS
        },
        "params": D(result.params, "1", "best-fit parameters [realisation, parameter]"),
        "parameter_maps": D(beta_maps, "1", "beta_d, T_d [K], beta_s per zone pixel"),
        "at_bound": D(result.at_bound.astype(np.uint8), "1"),
        "nll": D(result.nll, "1", "-ln L"),
        "iterations": D(result.iterations, "1"),
        "converged": D(result.converged.astype(np.uint8), "1"),
        "cmb_qu": D(result.cmb, "uK_CMB", "reconstructed CMB [realisation, QU, zone pixel]"),
        "spatial_variance": D(result.spatial_variance, "uK_CMB^2"),
        "foreground_params": D(result.foreground_params, "1"),
        "systematic_components": D(
            result.systematic_components,
            "uK_CMB",
            "W(d_fg): CMB, dust, synchrotron [comp, QU, zone pixel]",
        ),
    }
    io.write_product(
        output,
        "compsep_fit",
        data,
        io.provenance(stage, stage["simulations"][name]["seed"], "compsep_fit"),
        {
            "zone": zone_name,
            "method": method,
            "configuration": configuration,
            "cmb_variance": result.cmb_variance,
            "systematic_residual": result.systematic_residual,
            "n_at_bound": int(result.at_bound.any(axis=0).sum()),
        },
    )
