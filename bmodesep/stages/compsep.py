"""Clustered parametric component separation, kabalan2025 (``workflow/rules/compsep.smk``).


    bmodesep compsep kmeans_patches --config C --simulation S --zone Z... --masks M
                                    --outputs F...
    bmodesep compsep grid_chunk     --config C --simulation S --zone Z... --chunk I --masks M
                                    --signal F --patches F... [--sky SKY] [--noise N]
                                    --output F...
    bmodesep compsep grid_select    --config C --simulation S --zone Z... --chunks F...
                                    --output F...
    bmodesep compsep compsep_fit    --config C --simulation S --zone Z... --method M
                                    --masks M --signal F [--patches F... --selection F...]
                                    [--noise N] --output F...

A job covers one zone or several (``--zone`` and ``--output`` in the same order): the
workflow gives each job every zone of its simulation, so the start-up of a JAX job
(imports, tracing, compilation: most of a small fit's cost) is paid once per simulation
rather than once per zone (issue 28 item 4).  Per-zone input files (patches, chunks,
screens, selections) are matched to their zone by the zone their product records.

Noise realisation i is regenerated from (simulation seed, i) exactly as the simulation
stage draws it; a maps sky whose noise comes from files reads it from the noise product
(``--noise``).  A chunk writes one checkpoint per configuration next to its output, so a
killed job resumes where it stopped; the chunk file is written (atomically) at the end.
Patch files are given as paths (the workflow names them); each carries its patch count.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial
from typing import Any

import numpy as np

from bmodesep.config import multires_table, simulation_config, simulation_lmax
from bmodesep.core.compsep import clustering, fitting, gridsearch, screening, selection
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.core.rlike.residuals import analyse_residuals, theory_spectra
from bmodesep.core.simulate import common_resolution
from bmodesep.core.simulate.instrument import (
    simulate_noise,
    white_noise_sigma_per_pixel,
)
from bmodesep.errors import ConfigError, DataError
from bmodesep.log import Progress
from bmodesep.products import checkpoint, io, sims
from bmodesep.products import compsep as products
from bmodesep.settings import bb_estimator, kmeans_counts, r_grid, resolve_instrument
from bmodesep.steps import File, Name, step

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


def load_problem(
    config, name: str, zone_name: str, masks_path, signal_path, sky_path=None, noise_path=None
):
    """Inputs of a zone's fits; with ``sky_path``, also what residual spectra need; the
    noise of :func:`zone_noise` (``noise_path``: the noise product of a maps sky whose
    noise comes from files)."""
    stage = _compsep_config(config, name)
    sim = stage["simulations"][name]
    nside, lmax = sim["nside"], simulation_lmax(sim)
    inst = resolve_instrument(stage, sim["instrument"])
    _, zones = sims.read_masks(masks_path, nside)
    zone = _zone(zones, zone_name, masks_path)
    observation = contains_noise(stage, name)
    signal = sims.read_signal(signal_path, inst, nside, foreground=not observation)
    pix = np.flatnonzero(zone)
    cs = stage["compsep"]
    n_real = noise_realisations(stage, name)
    if n_real < 2:
        raise ConfigError(
            f"simulation {name}: the grid search needs at least 2 noise "
            "realisations (set compsep.noise_realisations)"
        )

    # an observation has no foreground truth: evaluate_observation replaces these zeros
    total = signal[sims.TOTAL_QU]
    foreground = np.zeros_like(total) if observation else signal[sims.FOREGROUND_QU]
    if common_resolution.needed(inst):
        # beams and splits: every band at the widest beam, splits averaged, the noise
        # variance that leaves (bmodesep.core.simulate.common_resolution)
        ratio = common_resolution.beam_ratio(inst, lmax)
        total = common_resolution.reconvolve(total, ratio, nside, lmax)
        if not observation:
            foreground = common_resolution.reconvolve(foreground, ratio, nside, lmax)
    noise, ninv = zone_noise(stage, name, pix, n_real, noise_path)

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
        signal=total[:, :, pix],
        foreground=foreground[:, :, pix],
        noise=noise,
        n_realisations=n_real,
        ninv=ninv,
        start=cs["start"],
        bounds=cs["bounds"],
        options=fitting.FitOptions(**cs["fit"]),
        cmb_true=None if product is None else true_cmb(stage, name, product)[:, pix],
        bb_spectrum=None if product is None else bb_spectrum,
    )
    return stage, zone, problem


def zone_noise(stage, name: str, pix: np.ndarray, n_real: int, noise_path=None):
    """``noise(i)``: noise realisation i ``[freq, QU, zone pixel]`` as the fits see it (at
    the common resolution of beams and splits where the instrument has them), kept once
    drawn; and the inverse noise variance per band the likelihood weights the bands by.
    Realisation i is regenerated from (seed, i), or, for a maps sky whose noise comes from
    files, read from the noise product ``noise_path``; the weights are then the
    realisations' mean inverse variance over the zone."""
    sim = stage["simulations"][name]
    nside, lmax = sim["nside"], simulation_lmax(sim)
    inst = resolve_instrument(stage, sim["instrument"])
    from_files = file_noise(stage, name)
    if from_files and noise_path is None:
        raise ConfigError(f"simulation {name}: its noise comes from files: give --noise")
    raw = (
        sims.noise_realisation_reader(noise_path, inst, nside, n_real)
        if from_files
        else lambda i: simulate_noise(inst, nside, lmax, sim["seed"], i).qu
    )
    if common_resolution.needed(inst):
        ratio = common_resolution.beam_ratio(inst, lmax)
        ninv = 1.0 / common_resolution.pixel_noise_variance(inst, nside, lmax)

        def noise(i: int) -> np.ndarray:
            qu = common_resolution.reconvolve(raw(i), ratio, nside, lmax)
            return common_resolution.coadd(qu)[:, :, pix]
    else:
        ninv = 1.0 / white_noise_sigma_per_pixel(inst, nside) ** 2

        def noise(i: int) -> np.ndarray:
            return raw(i)[0][:, :, pix]

    noise = gridsearch.memoised_noise(noise, n_real)
    if from_files:
        ninv = 1.0 / np.mean([np.mean(noise(i) ** 2, axis=(1, 2)) for i in range(n_real)], axis=0)
    return noise, ninv


def file_noise(stage, name: str) -> bool:
    """Whether a simulation's noise comes from files (a maps sky's variance maps or noise
    simulations) rather than from its instrument."""
    sky = stage["skies"][stage["simulations"][name]["sky"]]
    return sky["kind"] == "maps" and sky["maps"]["noise"] != "instrument"


def contains_noise(stage, name: str) -> bool:
    """Whether a simulation's maps are an observation that contains its noise."""
    sky = stage["skies"][stage["simulations"][name]["sky"]]
    return sky["kind"] == "maps" and sky["maps"]["contains_noise"]


def noise_realisations(stage, name: str) -> int:
    """The noise realisations each configuration is fitted on (compsep's, or the
    simulation's)."""
    return (
        stage["compsep"]["noise_realisations"] or stage["simulations"][name]["noise_realisations"]
    )


def true_cmb(stage, name: str, sky: io.Product) -> np.ndarray:
    """The simulation's CMB Q/U as its separated maps carry it."""
    sim = stage["simulations"][name]
    inst = resolve_instrument(stage, sim["instrument"])
    lmax = simulation_lmax(sim)
    return common_resolution.cmb_as_seen(
        sky[sims.CMB_ALM], sky[sims.CMB_QU], inst, sim["nside"], lmax
    )


def map_transfer(stage, name: str) -> np.ndarray | None:
    sim = stage["simulations"][name]
    inst = resolve_instrument(stage, sim["instrument"])
    return common_resolution.map_transfer(inst, simulation_lmax(sim))


def read_patch_files(paths, zone: np.ndarray) -> dict[int, np.ndarray]:
    """K-means patch maps by patch count, from the files the workflow names."""
    out = {}
    for path in paths:
        k, labels = products.read_patch_map(path, zone.size)
        out[k] = clustering.validate_patch_map(labels, zone, str(path))
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


# ---------------------------------------------------------------- one job, many zones
def job_zones(zone, outputs, what: str = "output files") -> list[tuple[str, Any]]:
    """(zone, its output) for each zone of a job: ``zone`` one name or a list of them,
    ``outputs`` one path or one per zone, in the same order."""
    zones = [zone] if isinstance(zone, str) else list(zone)
    outs = [outputs] if isinstance(outputs, str | os.PathLike) else list(outputs)
    if not zones or len(outs) != len(zones):
        raise ConfigError(f"{len(outs)} {what} for {len(zones)} zone(s) {zones}")
    if len(set(zones)) != len(zones):
        raise ConfigError(f"zones given twice: {zones}")
    return list(zip(zones, outs, strict=True))


def zone_files(paths, kind: str, what: str):
    """``pick(zone)``: those of ``paths`` (``kind`` products of any zones, their attributes
    read once) that belong to ``zone``; DataError if none does.  No paths: none needed."""
    paths = [] if paths is None else paths
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    groups = products.by_zone(paths, kind) if paths else {}

    def pick(zone_name: str) -> list:
        if not paths:
            return []
        if zone_name not in groups:
            raise DataError(f"no {what} of zone {zone_name} among the {len(paths)} given")
        return groups[zone_name]

    return pick


def _one(files: list, zone_name: str):
    if len(files) != 1:
        raise DataError(f"{len(files)} files given for zone {zone_name}, expected one: {files}")
    return files[0]


def _screens(screens):
    """``pick(zone)``: the zone's screen among ``screens`` (None: an exhaustive search)."""
    pick = zone_files(screens, products.GRID_SCREEN, "screen")
    return lambda zone_name: None if screens is None else _one(pick(zone_name), zone_name)


# ---------------------------------------------------------------- steps
@step
def kmeans_patches(
    config, simulation: Name, zone: list[Name], masks: File, outputs: list[File]
) -> None:
    """Rule kmeans_patches: spherical K-means patches of one zone or several.

    One patch file per K of the grid and zone, ``outputs`` zone
    by zone in increasing K."""
    zones = [zone] if isinstance(zone, str) else list(zone)
    if len(set(zones)) != len(zones):
        raise ConfigError(f"zones given twice: {zones}")
    counts = kmeans_counts(_compsep_config(config, simulation)["compsep"])
    if len(outputs) != len(zones) * len(counts):
        raise ConfigError(
            f"{len(outputs)} output files for {len(zones)} zone(s) x {len(counts)} K-means "
            f"counts {counts}"
        )
    n = len(counts)
    for i, zone_name in enumerate(zones):
        _kmeans_patches_zone(config, simulation, zone_name, masks, outputs[i * n : (i + 1) * n])


def _kmeans_patches_zone(config, simulation: str, zone: str, masks, outputs) -> None:
    name, zone_name = simulation, zone
    stage = _compsep_config(config, name)
    nside = stage["simulations"][name]["nside"]
    _, zones = sims.read_masks(masks, nside)
    zone = _zone(zones, zone_name, masks)
    cs = stage["compsep"]
    counts = kmeans_counts(cs)
    if len(outputs) != len(counts):
        raise ConfigError(f"{len(outputs)} output files for {len(counts)} K-means counts {counts}")
    n_pixels = int(zone.sum())
    for k, path in zip(counts, outputs, strict=True):
        t0 = time.perf_counter()
        used = min(k, n_pixels)
        if used < k:
            log.warning(
                "K = %d exceeds the %d pixels of %s: one patch per pixel", k, n_pixels, zone_name
            )
        labels = clustering.kmeans_patches(zone, used, cs["kmeans_seed"])
        products.write_patch_map(
            path, labels, zone_name, used, io.provenance(stage, cs["kmeans_seed"], "patches"), k
        )
        log.info("K-means K=%d in %s: %.2f s", k, zone_name, time.perf_counter() - t0)


@step
def grid_chunk(
    config,
    simulation: Name,
    zone: list[Name],
    chunk: int,
    masks: File,
    signal: File,
    patches: list[File],
    output: list[File],
    sky: File | None = None,
    devices: int = 1,
    screen: list[File] | None = None,
    noise: File | None = None,
) -> None:
    """Rule grid_chunk: one chunk of the patch-count grid search (screened: of its candidates).

    Every configuration of one slice of each zone's grid (``screen``:
    of the screened search's candidates, one screen per zone), fitted over the noise
    realisations, with checkpoints."""
    mine, screen_of = zone_files(patches, products.PATCH_MAP, "patch files"), _screens(screen)
    jobs = [  # every zone's files found before any is computed
        (z, out, mine(z), screen_of(z)) for z, out in job_zones(zone, output)
    ]
    for zone_name, out, mine, zone_screen in jobs:
        _grid_chunk_zone(
            config,
            simulation,
            zone_name,
            chunk,
            masks,
            signal,
            mine,
            out,
            sky,
            devices,
            zone_screen,
            noise,
        )


def _grid_chunk_zone(
    config, simulation, zone, chunk, masks, signal, patches, output, sky, devices, screen, noise
) -> None:
    stage, zone_mask, problem = load_problem(config, simulation, zone, masks, signal, sky, noise)
    problem = problem._replace(devices=devices)
    indices = chunk_indices(stage, chunk, screen)
    inputs = [masks, signal, *patches, sky, screen, noise]  # a checkpoint holds to their content
    rows, parts = _checkpointed_configurations(
        stage,
        problem,
        zone_mask,
        zone,
        chunk,
        indices,
        patches,
        output,
        inputs,
        products.GRID_POINT,
        gridsearch.evaluate_configuration,
        products.grid_point_datasets,
        lambda r: f"sigma2_cmb {r.cmb_variance:.4e} uK^2, converged {r.converged.mean():.0%}",
    )
    products.write_grid_chunk(output, *rows, **_chunk_meta(stage, zone, chunk, zone_mask))
    parts.remove()


@step
def grid_screen_chunk(
    config,
    simulation: Name,
    zone: list[Name],
    chunk: int,
    masks: File,
    signal: File,
    patches: list[File],
    output: list[File],
    sky: File | None = None,
    devices: int = 1,
    noise: File | None = None,
) -> None:
    """Rule grid_screen_chunk: pass 1 of the screened grid search: noiseless fits and predictions.

    Pass 1 of the screened search for one slice of each zone's
    grid, each configuration's noiseless fit and predicted realisations
    (core.compsep.screening)."""
    mine = zone_files(patches, products.PATCH_MAP, "patch files")
    jobs = [(z, out, mine(z)) for z, out in job_zones(zone, output)]
    for zone_name, out, mine in jobs:
        _grid_screen_chunk_zone(
            config, simulation, zone_name, chunk, masks, signal, mine, out, sky, devices, noise
        )


def _grid_screen_chunk_zone(
    config, simulation, zone, chunk, masks, signal, patches, output, sky, devices, noise
) -> None:
    stage, zone_mask, problem = load_problem(config, simulation, zone, masks, signal, sky, noise)
    problem = problem._replace(devices=devices)
    indices = chunk_indices(stage, chunk)
    inputs = [masks, signal, *patches, sky, noise]
    statistical = screening.needs_statistical(selection_rule(stage))
    rows, parts = _checkpointed_configurations(
        stage,
        problem,
        zone_mask,
        zone,
        chunk,
        indices,
        patches,
        output,
        inputs,
        products.SCREEN_POINT,
        partial(screening.predict_configuration, statistical=statistical),
        products.screen_point_datasets,
        lambda p: f"predicted sigma2_cmb {p.cmb_variance:.4e} uK^2",
    )
    products.write_grid_screen_chunk(
        output, *rows, **_chunk_meta(stage, zone, chunk, zone_mask, "grid_screen_chunk")
    )
    parts.remove()


def chunk_indices(stage, chunk: int, screen=None) -> np.ndarray:
    """The configurations of grid job ``chunk``: its slice of the grid, or with a screen
    (the screened search's pass 2) its slice of the screen's candidates."""
    cs = stage["compsep"]
    n_points = len(gridsearch.grid_points(cs["grid"]))
    if screen is None:
        return np.arange(*gridsearch.chunk_bounds(n_points, cs["chunks"], chunk))
    keep = products.read_grid_screen(screen)[products.CANDIDATE]
    if keep.size != n_points:
        raise DataError(
            f"{screen}: the screen covers {keep.size} configurations, the grid has "
            f"{n_points}: re-run the screen after changing compsep.grid"
        )
    candidates = np.flatnonzero(keep)
    return candidates[slice(*gridsearch.chunk_bounds(candidates.size, cs["chunks"], chunk))]


def _chunk_meta(stage, zone_name, chunk, zone_mask, rule="grid_chunk") -> dict:
    cs = stage["compsep"]
    return {
        "provenance": io.provenance(stage, cs["kmeans_seed"], rule),
        "attrs": {
            "zone": zone_name,
            "chunk": chunk,
            "chunks": cs["chunks"],
            "fsky": float(zone_mask.mean()),
        },
    }


def _checkpointed_configurations(
    stage,
    problem,
    zone_mask,
    zone_name,
    chunk,
    indices,
    patches,
    output,
    inputs,
    kind,
    evaluate,
    datasets,
    describe,
):
    """``evaluate(layout, problem)`` for each configuration of ``indices``, one checkpoint
    piece (``datasets`` of the result) each: a killed job resumes where it stopped.
    Returns the rows a chunk product takes, (index, configurations, pieces), and the
    checkpoint folder (removed once the chunk is written)."""
    cs = stage["compsep"]
    points = gridsearch.grid_points(cs["grid"])
    job = checkpoint.fingerprint(stage, inputs, zone=zone_name, chunk=chunk, kind=kind)
    parts = checkpoint.Parts(output, kind, job)
    done = set(parts.done(indices))
    devices = f"{max(problem.devices, 1)} JAX device(s) ({jax_platform()})"
    log.info("chunk %d/%d of %s: %d configurations (%s) on %s", chunk, cs["chunks"], zone_name,
             len(indices), kind, devices)  # fmt: skip
    patch_maps = read_patch_files(patches, zone_mask)
    layouts = gridsearch.pad_layouts(
        [compsep.cell_layout(configuration_patches(points[j], patch_maps), zone_mask)
         for j in indices]
    )  # fmt: skip
    progress = Progress(
        f"grid chunk {chunk} of {zone_name}", len(indices), "configurations", already=len(done)
    )
    for layout, j in zip(layouts, indices, strict=True):
        if j in done:
            continue
        result = evaluate(layout, problem)
        provenance = io.provenance(stage, cs["kmeans_seed"], kind)
        parts.write(j, datasets(result), provenance, {"configuration": list(points[j])})
        progress.step(f"configuration {j} {tuple(points[j])}: {describe(result)}")
    configurations = np.array([points[j] for j in indices], dtype=np.int64).reshape(-1, 3)
    rows = np.asarray(indices, dtype=np.int64), configurations, [parts.read(j) for j in indices]
    return rows, parts


def jax_platform() -> str:
    import jax

    return ", ".join(sorted({d.platform for d in jax.devices()}))


def _residual_theory(stage, name, spectra_path, n_elements: int):
    """The r stage's estimator, theory spectra and r grid for a simulation's residuals."""
    est = bb_estimator(stage, stage["simulations"][name]["nside"])
    if n_elements != est.ell.size:
        raise DataError(
            f"grid residual spectra have {n_elements} elements, rlike expects "
            f"{est.ell.size}: re-run the grid chunks after changing rlike"
        )
    camb = sims.read_spectra(spectra_path, est.lmax)
    transfer = map_transfer(stage, name)
    return est, theory_spectra(camb, stage["cmb"]["r"], stage["cmb"]["a_lens"], est, transfer)


def r_hat_per_configuration(stage, name, spectra_path, total_cl, syst_cl, fsky) -> np.ndarray:
    """r-hat of eq. 15 for each configuration's residual spectra (one zone)."""
    est, theory = _residual_theory(stage, name, spectra_path, total_cl.shape[-1])
    grid = r_grid(stage)
    return np.array(
        [
            analyse_residuals(grid, theory, t, s, est.modes(fsky)).r_hat
            for t, s in zip(total_cl, syst_cl, strict=True)
        ]
    )


def selection_criteria(stage, name, table, spectra_path, fsky) -> selection.Criteria:
    """What the selection rules read from a zone's grid table (BB powers with spectra)."""
    criteria = selection.Criteria(
        table[products.CMB_VARIANCE],
        table[products.SYSTEMATIC_RESIDUAL],
        table[products.NLL_MEAN],
    )
    if spectra_path is None or products.TOTAL_RESIDUAL_CL not in table:
        return criteria
    total, syst = table[products.TOTAL_RESIDUAL_CL], table[products.SYSTEMATIC_CL]
    est, theory = _residual_theory(stage, name, spectra_path, total.shape[-1])
    modes = est.modes(fsky)
    return criteria._replace(
        systematic_bb=selection.bb_power(syst, modes),
        statistical_bb=selection.bb_power(np.clip(total - syst, 0.0, None), modes),
        tensor_bb=float(selection.bb_power(theory.tensor, modes)),
    )


def selection_rule(stage) -> selection.Rule:
    """The configured rule (``compsep.selection``)."""
    sel = stage["compsep"]["selection"]
    return selection.Rule(
        sel["rule"],
        sel["relative_threshold"],
        sel["fraction"],
        sel["reference"],
        sel["reference_r"],
    )


def grid_table(
    stage, zone_name: str, chunk_paths, expected=None, read=None, fields=None, optional=()
) -> tuple[dict[str, np.ndarray], float]:
    """A zone's table from its chunks, sorted by configuration index, and its f_sky.

    The chunks must cover ``expected`` (default: every configuration of the grid)
    exactly; ``read`` and ``fields`` default to the grid chunks of pass 2 and their
    selection table; ``optional`` fields are kept where every chunk has them."""
    read = products.read_grid_chunk if read is None else read
    fields = (products.CONFIGURATION, *products.SELECTION_TABLE) if fields is None else fields
    chunks = [read(p) for p in chunk_paths]
    index = np.concatenate([c[products.INDEX] for c in chunks]).astype(np.int64)
    if expected is None:
        expected = np.arange(len(gridsearch.grid_points(stage["compsep"]["grid"])))
    if sorted(index.tolist()) != sorted(np.asarray(expected).tolist()):
        raise DataError(
            f"grid chunks for {zone_name} cover configurations {sorted(index.tolist())[:5]}..., "
            f"expected {len(expected)} configurations ({np.asarray(expected)[:5].tolist()}...)"
        )
    order = np.argsort(index)
    # a screened search's pass 2 can leave a job without configurations: its chunk has no
    # rows, and no optional fields, which must not hide those of the others
    rows = [c for c in chunks if c[products.INDEX].size] or chunks[:1]
    fields = (*fields, *(f for f in optional if all(f in c.data for c in rows)))
    table = {f: np.concatenate([c[f] for c in rows])[order] for f in fields}
    return table, float(chunks[0].attrs["fsky"])


@step
def grid_select(
    config,
    simulation: Name,
    zone: list[Name],
    chunks: list[File],
    output: list[File],
    spectra: File | None = None,
    screen: list[File] | None = None,
) -> None:
    """Rule grid_select: the selected configuration of each zone.

    The measured grid table of each zone and its selected
    configuration (screened search: the candidates' table, the selection from measured
    values only)."""
    mine, screen_of = zone_files(chunks, products.GRID_CHUNK, "grid chunks"), _screens(screen)
    jobs = [(z, out, mine(z), screen_of(z)) for z, out in job_zones(zone, output)]
    for zone_name, out, mine, zone_screen in jobs:
        _grid_select_zone(config, simulation, zone_name, mine, out, spectra, zone_screen)


def _grid_select_zone(config, simulation, zone, chunks, output, spectra, screen) -> None:
    name, zone_name, chunk_paths, spectra_path = simulation, zone, chunks, spectra
    stage = _compsep_config(config, name)
    cs = stage["compsep"]
    screened = cs["grid"]["search"] == "screened"
    if screened != (screen is not None):
        raise ConfigError(
            f"compsep.grid.search is {cs['grid']['search']}: grid_select "
            + ("needs the zone's screen (--screen)" if screened else "takes no --screen")
        )
    expected = (
        None
        if screen is None
        else np.flatnonzero(products.read_grid_screen(screen)[products.CANDIDATE])
    )
    table, fsky = grid_table(
        stage, zone_name, chunk_paths, expected, optional=products.SPECTRUM_FIELDS
    )
    if spectra_path is not None and products.TOTAL_RESIDUAL_CL in table:
        table[products.R_HAT] = r_hat_per_configuration(
            stage,
            name,
            spectra_path,
            table[products.TOTAL_RESIDUAL_CL],
            table[products.SYSTEMATIC_CL],
            fsky,
        )
    rule = selection_rule(stage)
    criteria = selection_criteria(stage, name, table, spectra_path, fsky)
    best, honoured = selection.select(criteria, rule)
    if not honoured:
        log.warning(
            "no configuration meets the condition of selection rule %s; selected the closest to it",
            rule.name,
        )
    chosen = tuple(int(k) for k in table[products.CONFIGURATION][best])
    log.info("%s: selected %s by rule %s", zone_name, chosen, rule.name)
    products.write_grid_selection(
        output,
        table,
        io.provenance(stage, cs["kmeans_seed"], "grid_selection"),
        {
            "zone": zone_name,
            "best_index": best,
            "best_configuration": table[products.CONFIGURATION][best].tolist(),
            "rule": rule.name,
            "threshold_honoured": honoured,
            "fsky": fsky,
            **search_summary(stage, name, screen, len(table[products.CONFIGURATION])),
        },
    )


def search_summary(stage, simulation: str, screen, measured: int) -> dict:
    """What a selection records of its search: the method, the grid's size, the
    configurations measured over noise realisations and the fraction of the exhaustive
    grid's fits it needed."""
    cs = stage["compsep"]
    n_points = len(gridsearch.grid_points(cs["grid"]))
    out = {"search": cs["grid"]["search"], "configurations": n_points, "measured": measured}
    if screen is None:
        return out | {"fits_fraction": 1.0}
    n_real = noise_realisations(stage, simulation)
    attrs = products.read_grid_screen(screen).attrs
    return out | {
        "fits_fraction": screening.fits_fraction(n_points, measured, n_real),
        "margin": attrs["margin"],
        "best_predicted_index": attrs["best_predicted_index"],
    }


@step
def grid_screen(
    config,
    simulation: Name,
    zone: list[Name],
    chunks: list[File],
    output: list[File],
    spectra: File | None = None,
) -> None:
    """Rule grid_screen: each zone's pass-1 table and the candidates pass 2 measures."""
    mine = zone_files(chunks, products.GRID_SCREEN_CHUNK, "pass-1 chunks")
    jobs = [(z, out, mine(z)) for z, out in job_zones(zone, output)]
    for zone_name, out, mine in jobs:
        _grid_screen_zone(config, simulation, zone_name, mine, out, spectra)


def _grid_screen_zone(config, simulation, zone, chunks, output, spectra) -> None:
    stage = _compsep_config(config, simulation)
    cs = stage["compsep"]
    table, fsky = screen_table(stage, zone, chunks)
    rule = selection_rule(stage)
    criteria = predicted_criteria(stage, simulation, table, spectra, fsky)
    margin = cs["grid"]["margin"]
    screen = screening.candidates(criteria, table[products.FREE_PARAMETERS], rule, margin)
    table[products.CANDIDATE] = screen.candidates
    n_real = noise_realisations(stage, simulation)
    n, kept = screen.candidates.size, int(screen.candidates.sum())
    log.info(
        "%s: %d of %d configurations kept for their noise realisations (rule %s, margin %g): "
        "%.3f of the exhaustive grid's fits",
        zone,
        kept,
        n,
        rule.name,
        margin,
        screening.fits_fraction(n, kept, n_real),
    )
    products.write_grid_screen(
        output,
        table,
        io.provenance(stage, cs["kmeans_seed"], "grid_screen"),
        {
            "zone": zone,
            "rule": rule.name,
            "margin": margin,
            "best_predicted_index": screen.best_predicted,
            "fsky": fsky,
            "candidates": kept,
        },
    )


def screen_table(stage, zone_name: str, chunk_paths) -> tuple[dict[str, np.ndarray], float]:
    """A zone's pass-1 table from its screen chunks, and its f_sky."""
    return grid_table(
        stage,
        zone_name,
        chunk_paths,
        read=products.read_grid_screen_chunk,
        fields=(products.CONFIGURATION, *products.PREDICTION_TABLE),
        optional=products.SCREEN_SPECTRA,
    )


def predicted_criteria(stage, name, table, spectra_path, fsky) -> selection.Criteria:
    """The selection criteria of pass 1: predicted variance, -ln L and statistical BB
    (first-order residual maps, ``screening``), exact systematics."""
    variance = table[products.PREDICTED_CMB_VARIANCE]
    criteria = selection.Criteria(
        variance, table[products.SYSTEMATIC_RESIDUAL], table[products.PREDICTED_NLL_MEAN]
    )
    if spectra_path is None or products.SYSTEMATIC_CL not in table:
        return criteria
    syst = table[products.SYSTEMATIC_CL]
    est, theory = _residual_theory(stage, name, spectra_path, syst.shape[-1])
    modes = est.modes(fsky)
    stat = table.get(products.PREDICTED_STATISTICAL_CL)  # only where the rule needs it
    return criteria._replace(
        systematic_bb=selection.bb_power(syst, modes),
        statistical_bb=None if stat is None else selection.bb_power(stat, modes),
        tensor_bb=float(selection.bb_power(theory.tensor, modes)),
    )


def true_counts(stage, name: str) -> tuple[int, int, int]:
    """The K-means patch counts of a simulation's true-patch sky (sec. 5.1's truth)."""
    sky_cfg = stage["skies"][stage["simulations"][name]["sky"]]
    specs = sky_cfg.get("patches", {}) if sky_cfg["kind"] == "true_patch" else {}
    if any("kmeans" not in specs.get(p, {}) for p in compsep.PARAMETERS):
        raise ConfigError(
            f"simulation {name}: the recovery test needs a true_patch sky with K-means patches "
            "(patches.<parameter>.kmeans) for beta_d, temperature_d and beta_s"
        )
    return tuple(int(specs[p]["kmeans"]) for p in compsep.PARAMETERS)


def rule_choices(stage, simulation: str, selections, spectra=None) -> list[dict]:
    """The configuration every selection rule picks in each zone's grid table: rows of
    zone, rule, the table row picked and whether the rule's condition was met."""
    configured = selection_rule(stage)
    out = []
    for path in selections:
        sel = products.read_grid_selection(path)
        table = dict(sel.data)
        fsky = float(sel.attrs.get("fsky", 1.0))  # only scales the BB powers, never a ratio
        criteria = selection_criteria(stage, simulation, table, spectra, fsky)
        for name in selection.RULES:
            if name == "r_aware" and criteria.systematic_bb is None:
                continue  # no spectra: the rule cannot be evaluated
            best, met = selection.select(criteria, configured._replace(name=name))
            chosen = [int(k) for k in table[products.CONFIGURATION][best]]
            log.info(
                "%s %s: rule %s selects %s%s",
                simulation,
                sel.attrs["zone"],
                name,
                tuple(chosen),
                "" if met else ", its condition unmet",
            )
            out.append(
                {
                    "zone": sel.attrs["zone"],
                    "rule": name,
                    "counts": chosen,
                    "met": met,
                    "r_hat": float(table[products.R_HAT][best])
                    if products.R_HAT in table
                    else float("nan"),
                    "cmb_variance": float(table[products.CMB_VARIANCE][best]),
                    "systematic_residual": float(table[products.SYSTEMATIC_RESIDUAL][best]),
                }
            )
    return out


def _counts(prefix: str, counts) -> dict:
    return {f"{prefix}_{p}": int(k) for p, k in zip(compsep.PARAMETERS, counts, strict=True)}


@step
def recovery(
    config, simulation: Name, selections: list[File], output: File, spectra: File | None = None
) -> None:
    """Rule recovery: the configuration each selection rule picks, against the true patches.

    The configuration every selection rule picks in each zone of a sky
    whose patch counts are known (kabalan2025 sec. 5.1), against the truth."""
    stage = _compsep_config(config, simulation)
    truth = true_counts(stage, simulation)
    rows = [
        {
            "zone": c["zone"],
            "rule": c["rule"],
            **_counts("true_k", truth),
            **_counts("selected_k", c["counts"]),
            "simulation": simulation,
            "condition_met": c["met"],
        }
        for c in rule_choices(stage, simulation, selections, spectra)
    ]
    products.write_recovery(output, rows)


@step
def selection_rules(
    config, simulation: Name, selections: list[File], output: File, spectra: File | None = None
) -> None:
    """Rule selection_rules: the configuration each selection rule picks, with its r-hat.

    What each selection rule would pick in each zone, with the
    r-hat (eq. 15), sigma^2_CMB and systematic residual of its pick."""
    stage = _compsep_config(config, simulation)
    rows = [
        {
            "zone": c["zone"],
            "rule": c["rule"],
            **_counts("selected_k", c["counts"]),
            "r_hat": f"{c['r_hat']:.4e}",
            "cmb_variance": f"{c['cmb_variance']:.5e}",
            "systematic_residual": f"{c['systematic_residual']:.4e}",
            "condition_met": c["met"],
        }
        for c in rule_choices(stage, simulation, selections, spectra)
    ]
    products.write_rule_choices(output, rows)


@step
def compsep_fit(
    config,
    simulation: Name,
    zone: list[Name],
    method: Name,
    masks: File,
    signal: File,
    output: list[File],
    patches: list[File] | None = None,
    selection: list[File] | None = None,
    devices: int = 1,
    noise: File | None = None,
) -> None:
    """Rule compsep_fit: the fits of one method in each zone.

    Methods: kmeans (with each zone's patch files and grid selection), single,
    multires..."""
    kmeans = method == "kmeans" and patches is not None and selection is not None
    jobs = [(z, out, None, None) for z, out in job_zones(zone, output)]
    if kmeans:  # every zone's files found before any is computed
        mine = zone_files(patches, products.PATCH_MAP, "patch files")
        chosen = zone_files(selection, products.GRID_SELECTION, "grid selection")
        jobs = [(z, out, mine(z), _one(chosen(z), z)) for z, out, _, _ in jobs]
    for zone_name, out, mine, zone_selection in jobs:
        _compsep_fit_zone(
            config,
            simulation,
            zone_name,
            method,
            masks,
            signal,
            out,
            mine,
            zone_selection,
            devices,
            noise,
        )


def _compsep_fit_zone(
    config, simulation, zone, method, masks, signal, output, patches, selection, devices, noise
) -> None:
    name, zone_name, masks_path, signal_path = simulation, zone, masks, signal
    stage, zone, problem = load_problem(
        config, name, zone_name, masks_path, signal_path, noise_path=noise
    )
    problem = problem._replace(devices=devices)
    nside = stage["simulations"][name]["nside"]
    if method == "kmeans":
        if patches is None or selection is None:
            raise ConfigError("the kmeans method needs --patches and --selection")
        best = products.read_grid_selection(selection).attrs["best_configuration"]
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
    observation = None
    if contains_noise(stage, name):  # fitted once, its statistical residual bootstrapped
        result, observation = gridsearch.evaluate_observation(layout, problem)
    else:
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
    products.write_compsep_fit(
        output,
        layout,
        patches,
        result,
        io.provenance(stage, stage["simulations"][name]["seed"], "compsep_fit"),
        {
            "zone": zone_name,
            "method": method,
            "configuration": configuration,
        },
        observation,
    )
