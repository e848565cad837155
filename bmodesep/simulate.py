"""Simulation stage: CAMB spectra, skies, masks, frequency maps and noise, as HDF5.

    python -m bmodesep.simulate spectra --config config/config.yaml --output results/spectra/camb.h5
    python -m bmodesep.simulate sky     --config ... --simulation NAME --spectra ... --output ...
    python -m bmodesep.simulate masks   --config ... --simulation NAME --sky ... --output ...
    python -m bmodesep.simulate signal  --config ... --simulation NAME --sky ... --output ...
    python -m bmodesep.simulate noise   --config ... --simulation NAME --output ...

Each subcommand computes with the pure modules (cmb, sky, instrument, masks) and
writes one product with :mod:`bmodesep.sim_io`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

import healpy as hp
import numpy as np

from bmodesep import cmb, harmonics, io, masks, sim_io
from bmodesep.cli import add_config_arguments, config_from_args, run_cli, timed
from bmodesep.config import (
    simulation_analysis_iterations,
    simulation_config,
    simulation_lmax,
)
from bmodesep.errors import ConfigError, DataError
from bmodesep.instrument import (
    noise_cl,
    observe_signal,
    resolve_instrument,
    signal_transfer,
    simulate_noise,
    white_noise_sigma_per_pixel,
)
from bmodesep.pysm_sky import pysm_frequency_maps, require_templates
from bmodesep.randomness import rng_for
from bmodesep.sky import (
    PATCH_PARAMETERS,
    ParametricSky,
    foreground_maps,
    simulate_parametric_sky,
    superpixel_patches,
)


def _simulation(config: Mapping[str, Any], name: str):
    stage_config = simulation_config(config, name)
    sim = stage_config["simulations"][name]
    sky_cfg = stage_config["skies"][sim["sky"]]
    return stage_config, sim, sky_cfg, sim["nside"], simulation_lmax(sim)


# ---------------------------------------------------------------- stage steps
def run_spectra(config: Mapping[str, Any], output) -> None:
    with timed("CAMB spectra"):
        spectra = cmb.compute_camb_spectra(config["cmb"]["cosmology"], config["cmb"]["lmax"])
    sim_io.write_spectra(output, spectra, config)


def patch_maps(sky_cfg: Mapping[str, Any], nside: int) -> dict[str, np.ndarray]:
    out = {}
    for name in PATCH_PARAMETERS:
        spec = sky_cfg["patches"][name]
        if "file" in spec:
            out[name] = sim_io.read_patch_map(spec["file"], spec["dataset"], nside)
        else:
            out[name] = superpixel_patches(nside, spec["superpixel_nside"])
    return out


def run_sky(config: Mapping[str, Any], name: str, spectra_path, output) -> None:
    stage_config, sim, sky_cfg, nside, lmax = _simulation(config, name)
    spectra = sim_io.read_spectra(spectra_path, lmax)
    attrs = {"sky_kind": sky_cfg["kind"], "nside": nside, "lmax": lmax}
    if sky_cfg["kind"] == "pysm":
        pysm_cfg = sky_cfg["pysm"]
        if not pysm_cfg["allow_download"]:
            require_templates(pysm_cfg["preset"], pysm_cfg["cmb_from_pysm"])
        alm = cmb.cmb_alm(
            spectra,
            config["cmb"]["r"],
            config["cmb"]["a_lens"],
            lmax,
            rng_for(sky_cfg["seed"], "cmb"),
            sky_cfg["b_modes_only"],
        )
        qu = harmonics.synthesis(alm, nside, lmax, spin=2)
        sim_io.write_sky(
            output,
            None,
            alm,
            qu,
            stage_config,
            sky_cfg["seed"],
            attrs | {"pysm_preset": pysm_cfg["preset"]},
        )
        return
    patches = patch_maps(sky_cfg, nside) if sky_cfg["kind"] == "true_patch" else None
    with timed(f"sky {sim['sky']} at nside {nside}"):
        sky = simulate_parametric_sky(sky_cfg, config["cmb"], spectra, nside, lmax, patches)
    sim_io.write_sky(
        output, sky, sky.cmb_alm, sky.cmb_qu, stage_config, sky_cfg["seed"], attrs, patches
    )


def foreground_at(
    sky_cfg: Mapping[str, Any], sky: ParametricSky | None, nside: int, freqs_ghz
) -> np.ndarray:
    """Foreground Q/U ``[freq, 2, npix]`` uK_CMB of a parametric or PySM sky."""
    if sky is not None:
        return foreground_maps(sky, freqs_ghz)
    p = sky_cfg["pysm"]
    return pysm_frequency_maps(
        p["preset"], nside, freqs_ghz, p["cmb_from_pysm"], p["allow_download"]
    )


def run_masks(config: Mapping[str, Any], name: str, sky_path, output) -> None:
    stage_config, _sim, sky_cfg, nside, _ = _simulation(config, name)
    mcfg = stage_config["masks"]
    if mcfg["source"] == "planck":
        path = mcfg["planck_file"]
        try:
            maps = {n: hp.read_map(path, field=mcfg["planck_fields"][n]) for n in masks.MASK_NAMES}
        except (OSError, IndexError, ValueError) as exc:
            raise DataError(f"cannot read Planck masks from {path}: {exc}") from exc
        gal = masks.masks_from_planck_maps(maps, nside, path)
        intensity = None
    else:
        _, sky = sim_io.read_sky(sky_path, nside)
        fg = foreground_at(sky_cfg, sky, nside, [mcfg["reference_frequency_ghz"]])[0]
        intensity = masks.smoothed_polarised_intensity(fg, nside, mcfg["smoothing_fwhm_deg"])
        gal = masks.threshold_masks(intensity, mcfg["sky_fractions"])
    zones = masks.galactic_zones(gal)
    for zone, pixels in zones.items():
        if not pixels.any():
            raise DataError(f"zone {zone} is empty at nside {nside}")
    sim_io.write_masks(output, gal, zones, intensity, stage_config, mcfg["source"])


def run_signal(config: Mapping[str, Any], name: str, sky_path, output, nthreads=1) -> None:
    stage_config, sim, sky_cfg, nside, lmax = _simulation(config, name)
    instrument = resolve_instrument(stage_config, sim["instrument"])
    product, sky = sim_io.read_sky(sky_path, nside)
    with timed(f"signal maps, {instrument.n_freq} bands"):
        fg = foreground_at(sky_cfg, sky, nside, instrument.frequencies_ghz)
        signal = observe_signal(
            instrument,
            product["cmb/alm_eb"],
            product["cmb/qu"],
            fg,
            nside,
            lmax,
            simulation_analysis_iterations(sim),
            nthreads,
        )
    if instrument.noise == "harmonic":
        noise_model = {
            "noise_cl": io.Dataset(
                noise_cl(instrument, lmax), "uK_CMB^2", "N_l of one split, [freq, l]"
            )
        }
    else:
        noise_model = {
            "sigma_pixel": io.Dataset(
                white_noise_sigma_per_pixel(instrument, nside),
                "uK_CMB",
                "per-pixel Q/U sigma of one split",
            )
        }
    sim_io.write_signal(
        output,
        instrument,
        signal.total_qu,
        signal.foreground_qu,
        signal.total_b,
        noise_model,
        signal_transfer(instrument, lmax),
        stage_config,
        sky_cfg["seed"],
        nside,
        lmax,
    )


def run_noise(config: Mapping[str, Any], name: str, output, nthreads=1) -> None:
    stage_config, sim, _, nside, lmax = _simulation(config, name)
    instrument = resolve_instrument(stage_config, sim["instrument"])
    n = sim["noise_realisations"]
    with timed(f"{n} noise realisations"):
        maps = [simulate_noise(instrument, nside, lmax, sim["seed"], i, nthreads) for i in range(n)]
    npx = harmonics.npix(nside)
    qu = (
        np.stack([m.qu for m in maps])
        if maps
        else np.zeros((0, instrument.splits, instrument.n_freq, 2, npx))
    )
    b = None
    if instrument.b_maps:
        b = (
            np.stack([m.b for m in maps])
            if maps
            else np.zeros((0, instrument.splits, instrument.n_freq, npx))
        )
    sim_io.write_noise(output, qu, b, stage_config, sim["seed"], instrument, nside)


# ---------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bmodesep.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="step", required=True)
    for step, needs in (
        ("spectra", ()),
        ("sky", ("simulation", "spectra")),
        ("masks", ("simulation", "sky")),
        ("signal", ("simulation", "sky")),
        ("noise", ("simulation",)),
    ):
        p = sub.add_parser(step)
        add_config_arguments(p)
        for arg in needs:
            p.add_argument(f"--{arg}", required=arg == "simulation" or step != "masks")
        p.add_argument("--output", required=True)
        p.add_argument("--threads", type=int, default=1)
    return parser


def _main(argv=None) -> None:
    args = _parser().parse_args(argv)
    config = config_from_args(args)
    if args.step != "spectra" and args.simulation not in config["simulations"]:
        raise ConfigError(
            f"unknown simulation '{args.simulation}' (defined: {', '.join(config['simulations'])})"
        )
    if args.step == "spectra":
        run_spectra(config, args.output)
    elif args.step == "sky":
        run_sky(config, args.simulation, args.spectra, args.output)
    elif args.step == "masks":
        run_masks(config, args.simulation, args.sky, args.output)
    elif args.step == "signal":
        run_signal(config, args.simulation, args.sky, args.output, args.threads)
    else:
        run_noise(config, args.simulation, args.output, args.threads)
    print(f"[bmodesep] wrote {args.output}", flush=True)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
