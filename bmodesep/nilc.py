"""NILC stage: compress each split of each noise realisation into B-mode component maps.

    python -m bmodesep.nilc --config C --simulation S --compression NAME
        --signal SIGNAL.h5 --noise NOISE.h5 [--masks MASKS.h5] --output F.h5

Reads the simulation's frequency maps (signal + stored noise realisations, per split),
takes their B modes (Q/U through a spin-2 analysis, or the stored B maps; optionally
weighted by a Galactic mask), and runs the compression ``nilc.compressions[NAME]``
(needlet or harmonic ILC; joint or constrained; see :mod:`bmodesep.ilc`).  Writes the
component maps and alm per realisation and split, with the needlet windows, the channels
used per scale and the covariance smoothing widths.  The per-split cost goes to the log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from bmodesep import harmonics, ilc, io, sim_io
from bmodesep.cli import config_from_args, run_cli, stage_parser
from bmodesep.config import simulation_config, simulation_lmax
from bmodesep.errors import ConfigError, DataError
from bmodesep.instrument import Instrument, resolve_instrument

D = io.Dataset


def channel_beams(instrument: Instrument, lmax: int) -> np.ndarray:
    """B-mode (spin-2) Gaussian beams ``[f, lmax+1]``; ones for an instrument without beams."""
    if instrument.fwhm_arcmin is None:
        return np.ones((instrument.n_freq, lmax + 1))
    return np.stack([harmonics.gaussian_beam(w, lmax, spin=2) for w in instrument.fwhm_arcmin])


def settings_from(nl: Mapping[str, Any], n_iter: int) -> ilc.Settings:
    return ilc.Settings(
        needlet_fwhm_arcmin=tuple(nl["needlet_fwhm_arcmin"]),
        ilc_bias_tolerance=nl["ilc_bias_tolerance"],
        beam_threshold=nl["beam_threshold"],
        n_iter=n_iter,
        n_iter_out=n_iter,
        exact=nl["exact"],
    )


def run(config, name: str, compression_name: str, signal_path, noise_path, output, masks_path=None):
    stage = simulation_config(config, name, with_nilc=True)
    nl = stage["nilc"]
    if compression_name not in nl["compressions"]:
        raise ConfigError(
            f"unknown compression '{compression_name}' (defined: {', '.join(nl['compressions'])})"
        )
    sim = stage["simulations"][name]
    nside = sim["nside"]
    inst = resolve_instrument(stage, sim["instrument"])
    lmax = nl["lmax"] or simulation_lmax(sim)
    if lmax > 3 * nside - 1:
        raise ConfigError(f"nilc.lmax {lmax} exceeds 3 nside - 1 = {3 * nside - 1}")
    lmax_out = nl["lmax_out"] or lmax
    if lmax_out > lmax:
        raise ConfigError(f"nilc.lmax_out {lmax_out} exceeds nilc.lmax {lmax}")
    n_iter = 3  # healpy's map2alm(iter=3) wherever maps enter harmonic space
    compression = ilc.compression_from_spec(
        nl["compressions"][compression_name], nl["dust_freq_ref_ghz"], nl["sync_freq_ref_ghz"]
    )
    settings = settings_from(nl, n_iter)
    beams = channel_beams(inst, lmax)
    signal = sim_io.read_signal(signal_path, inst, nside)
    noise = sim_io.read_noise(noise_path, inst, nside)
    key = "b" if nl["input"] == "b" else "qu"
    if key == "b" and ("total_b" not in signal.data or "b" not in noise.data):
        raise DataError(
            f"nilc.input 'b' needs B-mode maps in {signal_path} and {noise_path}; "
            "set nilc.input: qu or use an instrument with b_maps"
        )
    total = signal["total_b"] if key == "b" else signal["total_qu"]
    noise_maps = noise[key]  # [real, split, freq, (QU,) pix]
    mask = None
    if nl["mask"] is not None:
        if masks_path is None:
            raise ConfigError(f"nilc.mask {nl['mask']} needs --masks")
        mask = sim_io.read_masks(masks_path, nside)[0][nl["mask"]].astype(float)
    n_real, n_split = noise_maps.shape[:2]
    n_out = len(compression.outputs)
    nalm = harmonics.alm_size(lmax_out)
    alm_out = np.empty((n_real, n_split, n_out, nalm), dtype=np.complex128)
    plan = None
    for i in range(n_real):
        for s in range(n_split):
            t0, c0 = time.perf_counter(), time.process_time()
            alm = ilc.b_mode_alm(total + noise_maps[i, s], nside, lmax, n_iter, mask)
            result = ilc.compress(
                alm,
                beams,
                inst.frequencies_ghz,
                compression,
                nside,
                lmax,
                lmax_out,
                settings,
                nl["harmonic_bin_width"],
            )
            alm_out[i, s] = result.alm
            plan = result.plan
            print(
                f"[bmodesep] {name} {compression_name} realisation {i} split {s}: "
                f"{time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU",
                flush=True,
            )
    maps = np.stack(
        [
            [harmonics.synthesis(a, nside, lmax_out, 0) for a in per_split]
            for per_split in alm_out.reshape(n_real * n_split, n_out, nalm)
        ]
    ).reshape(n_real, n_split, n_out, -1)
    data = {
        "maps": D(maps, "uK_CMB", "B-mode component maps [realisation, split, component, pix]"),
        "alm_real": D(alm_out.real, "uK_CMB", "component alm, healpy layout, real part"),
        "alm_imag": D(alm_out.imag, "uK_CMB", "imaginary part"),
        "mixing": D(
            ilc.component_seds(inst.frequencies_ghz, compression.components, compression.fiducial),
            "1",
            "SEDs A[freq, component] in K_CMB",
        ),
        "beams": D(beams, "1", "channel beams b_f(l) divided out (to the smallest beam)"),
    }
    if plan is not None:
        data |= {
            "needlet_windows": D(plan.windows, "1", "h_j(l)"),
            "channels_used": D(plan.used.astype(np.uint8), "1", "[scale, freq]"),
            "smoothing_fwhm_deg": D(
                np.degrees(ilc.fwhm_from_sigma(plan.sigma_rad)), "deg", "covariance smoothing"
            ),
        }
    io.write_product(
        output,
        "nilc",
        data,
        io.provenance(stage, sim["seed"], "nilc"),
        {
            "compression": compression_name,
            "basis": compression.basis,
            "components": list(compression.outputs),
            "mixing_components": list(compression.components),
            **{f"fiducial_{k}": v for k, v in compression.fiducial._asdict().items()},
            "nside": nside,
            "lmax": lmax,
            "lmax_out": lmax_out,
            "exact": nl["exact"],
            "input": nl["input"],
            "mask": nl["mask"] or "none",
            "target_beam_fwhm_arcmin": float(min(inst.fwhm_arcmin)) if inst.fwhm_arcmin else 0.0,
        },
    )


def read_nilc(path) -> io.Product:
    """A NILC product; its alm are ``alm_real + 1j alm_imag``."""
    any4 = (None, None, None, None)
    return io.read_product(
        path,
        "nilc",
        {
            "maps": (any4, "uK_CMB"),
            "alm_real": (any4, "uK_CMB"),
            "alm_imag": (any4, "uK_CMB"),
            "mixing": ((None, None), "1"),
            "beams": ((None, None), "1"),
            "needlet_windows": ((None, None), "1"),
            "channels_used": ((None, None), "1"),
            "smoothing_fwhm_deg": ((None,), "deg"),
        },
        optional=["needlet_windows", "channels_used", "smoothing_fwhm_deg"],
    )


def _main(argv=None) -> None:
    parser = stage_parser(
        "python -m bmodesep.nilc",
        __doc__,
        ("simulation", "compression", "signal", "noise", "output"),
    )
    parser.add_argument("--masks", help="masks product (needed when nilc.mask is set)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if args.simulation not in config["nilc"]["simulations"]:
        raise ConfigError(f"simulation '{args.simulation}' is not in nilc.simulations")
    run(
        config,
        args.simulation,
        args.compression,
        args.signal,
        args.noise,
        args.output,
        args.masks,
    )


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
