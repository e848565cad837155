"""Component-separation stage: patches, grid-search chunks, selection, per-method fits.

    python -m bmodesep.separate patches --config C --simulation S --zone Z --masks M --output-dir D
    python -m bmodesep.separate chunk   --config C --simulation S --zone Z --chunk I --masks M
                                        --signal F --patches-dir D --output F
    python -m bmodesep.separate select  --config C --simulation S --zone Z --chunks F... --output F
    python -m bmodesep.separate fit     --config C --simulation S --zone Z --method M --masks M
                                        --signal F [--patches-dir D --selection F] --output F

Noise realisation i is regenerated from (simulation seed, i) exactly as the simulation
stage draws it.  A chunk writes one checkpoint per configuration next to its output, so a
killed job resumes where it stopped; the chunk file is written (atomically) at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bmodesep import checkpoint, clustering, compsep, fitting, gridsearch, io, sim_io
from bmodesep.cli import add_config_arguments, config_from_args, run_cli
from bmodesep.config import multires_table, simulation_config, simulation_lmax
from bmodesep.errors import ConfigError, DataError
from bmodesep.estimate_r import analyse_residuals, bb_estimator, theory_spectra
from bmodesep.instrument import resolve_instrument, simulate_noise, white_noise_sigma_per_pixel

D = io.Dataset


def patch_path(directory, k: int, seed: int) -> Path:
    return Path(directory) / f"kmeans_K{k}_seed{seed}.h5"


def kmeans_counts(cs: Mapping[str, Any]) -> list[int]:
    return sorted(set().union(*(cs["grid"][p] for p in compsep.PARAMETERS)))


# ---------------------------------------------------------------- inputs
def load_problem(config, name: str, zone_name: str, masks_path, signal_path, sky_path=None):
    """Inputs of a zone's fits; with ``sky_path``, also what residual spectra need."""
    stage = simulation_config(config, name, with_compsep=True)
    sim = stage["simulations"][name]
    nside, lmax = sim["nside"], simulation_lmax(sim)
    inst = resolve_instrument(stage, sim["instrument"])
    _, zones = sim_io.read_masks(masks_path, nside)
    zone = zones[zone_name]
    signal = sim_io.read_signal(signal_path, inst, nside)
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

    product, _ = sim_io.read_sky(sky_path, nside) if sky_path else (None, None)
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


def read_patch_map(path, zone: np.ndarray) -> np.ndarray:
    p = io.read_product(path, "patch_map", {"labels": ((zone.size,), "1")})
    return clustering.validate_patch_map(p["labels"], zone, str(path))


def configuration_patches(point: gridsearch.GridPoint, patches_dir, seed, zone):
    return {
        param: read_patch_map(patch_path(patches_dir, k, seed), zone)
        for param, k in zip(compsep.PARAMETERS, point, strict=True)
    }


def multires_patches(stage, method: str, zone_name: str, zone: np.ndarray, nside: int):
    spec = multires_table(stage, method)[zone_name.split("_")[0]]
    return {p: clustering.multires_patches(zone, min(spec[p], nside)) for p in compsep.PARAMETERS}


# ---------------------------------------------------------------- steps
def run_patches(config, name: str, zone_name: str, masks_path, output_dir) -> None:
    stage = simulation_config(config, name, with_compsep=True)
    nside = stage["simulations"][name]["nside"]
    _, zones = sim_io.read_masks(masks_path, nside)
    zone = zones[zone_name]
    cs = stage["compsep"]
    for k in kmeans_counts(cs):
        t0 = time.perf_counter()
        labels = clustering.kmeans_patches(zone, k, cs["kmeans_seed"])
        io.write_product(
            patch_path(output_dir, k, cs["kmeans_seed"]),
            "patch_map",
            {"labels": D(labels, "1", "patch label per pixel, -1 outside the zone")},
            io.provenance(stage, cs["kmeans_seed"], "patches"),
            {"zone": zone_name, "n_patches": k, "method": "kmeans"},
        )
        print(
            f"[bmodesep] K-means K={k} in {zone_name}: {time.perf_counter() - t0:.2f} s", flush=True
        )


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


def run_chunk(
    config,
    name,
    zone_name,
    chunk,
    masks_path,
    signal_path,
    patches_dir,
    output,
    sky_path=None,
    devices: int = 1,
) -> None:
    stage, zone, problem = load_problem(config, name, zone_name, masks_path, signal_path, sky_path)
    problem = problem._replace(devices=devices)
    cs = stage["compsep"]
    points = gridsearch.grid_points(cs["grid"])
    lo, hi = gridsearch.chunk_bounds(len(points), cs["chunks"], chunk)
    job = checkpoint.fingerprint(stage, zone=zone_name, chunk=chunk, sky=sky_path is not None)
    parts = checkpoint.Parts(output, "grid_point", job)
    done = parts.done(range(lo, hi))
    todo = [j for j in range(lo, hi) if j not in done]
    print(
        f"[bmodesep] chunk {chunk}/{cs['chunks']}: configurations {lo}..{hi - 1} "
        f"on {max(devices, 1)} JAX device(s) ({jax_platform()})",
        flush=True,
    )
    layouts = gridsearch.pad_layouts(
        [
            compsep.cell_layout(
                configuration_patches(points[j], patches_dir, cs["kmeans_seed"], zone), zone
            )
            for j in range(lo, hi)
        ]
    )
    progress = checkpoint.Progress(
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
    rl = stage["rlike"]
    est = bb_estimator(stage, stage["simulations"][name]["nside"])
    if total_cl.shape[-1] != est.ell.size:
        raise DataError(
            f"grid residual spectra have {total_cl.shape[-1]} elements, rlike expects "
            f"{est.ell.size}: re-run the grid chunks after changing rlike"
        )
    theory = theory_spectra(stage, spectra_path, est)
    grid = np.linspace(rl["r_min"], rl["r_max"], rl["r_points"])
    return np.array(
        [
            analyse_residuals(grid, theory, t, s, est.modes(fsky)).r_hat
            for t, s in zip(total_cl, syst_cl, strict=True)
        ]
    )


def run_select(config, name, zone_name, chunk_paths, output, spectra_path=None) -> None:
    stage = simulation_config(config, name, with_compsep=True)
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
        print(
            "[bmodesep] warning: no configuration meets the systematic threshold; "
            "selected by the objective alone",
            flush=True,
        )
    chosen = tuple(int(k) for k in table["configuration"][best])
    print(f"[bmodesep] {zone_name}: selected {chosen}", flush=True)
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


def run_fit(
    config,
    name,
    zone_name,
    method,
    masks_path,
    signal_path,
    output,
    patches_dir=None,
    selection_path=None,
    devices: int = 1,
) -> None:
    stage, zone, problem = load_problem(config, name, zone_name, masks_path, signal_path)
    problem = problem._replace(devices=devices)
    cs = stage["compsep"]
    nside = stage["simulations"][name]["nside"]
    if method == "kmeans":
        if patches_dir is None or selection_path is None:
            raise ConfigError("the kmeans method needs --patches-dir and --selection")
        best = io.read_product(selection_path, "grid_selection").attrs["best_configuration"]
        patches = configuration_patches(
            gridsearch.GridPoint(*best), patches_dir, cs["kmeans_seed"], zone
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
    print(
        f"[bmodesep] {method} {tuple(configuration)} in {zone_name}: "
        f"{problem.n_realisations} fits in {time.perf_counter() - t0:.1f} s, "
        f"sigma2_cmb {result.cmb_variance:.4e} uK^2",
        flush=True,
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


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bmodesep.separate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="step", required=True)
    specs = {
        "patches": ["masks", "output_dir"],
        "chunk": ["chunk", "masks", "signal", "patches_dir", "output", "?sky"],
        "select": ["chunks", "output", "?spectra"],
        "fit": ["method", "masks", "signal", "output", "?patches_dir", "?selection"],
    }
    for step, args in specs.items():
        p = sub.add_parser(step)
        add_config_arguments(p)
        p.add_argument("--simulation", required=True)
        p.add_argument("--zone", required=True)
        for arg in args:
            optional = arg.startswith("?")
            arg = arg.lstrip("?")
            kwargs: dict[str, Any] = {"required": not optional}
            if arg == "chunk":
                kwargs["type"] = int
            if arg == "chunks":
                kwargs["nargs"] = "+"
            p.add_argument(f"--{arg.replace('_', '-')}", dest=arg, **kwargs)
        if step in ("chunk", "fit"):
            p.add_argument(
                "--devices",
                type=int,
                default=1,
                help="JAX devices (GPUs) to spread the noise realisations over; 0 or 1: one",
            )
    return parser


def _main(argv=None) -> None:
    args = _parser().parse_args(argv)
    config = config_from_args(args)
    if args.simulation not in config["compsep"]["simulations"]:
        raise ConfigError(f"simulation '{args.simulation}' is not in compsep.simulations")
    if args.step == "patches":
        run_patches(config, args.simulation, args.zone, args.masks, args.output_dir)
    elif args.step == "chunk":
        run_chunk(
            config,
            args.simulation,
            args.zone,
            args.chunk,
            args.masks,
            args.signal,
            args.patches_dir,
            args.output,
            args.sky,
            args.devices,
        )
    elif args.step == "select":
        run_select(config, args.simulation, args.zone, args.chunks, args.output, args.spectra)
    else:
        run_fit(
            config,
            args.simulation,
            args.zone,
            args.method,
            args.masks,
            args.signal,
            args.output,
            args.patches_dir,
            args.selection,
            args.devices,
        )


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
