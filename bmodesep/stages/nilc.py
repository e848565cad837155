"""Needlet / harmonic ILC compression, duivenvoorden2025 sec. II.3 (``workflow/rules/nilc.smk``).


    bmodesep nilc nilc_compress --config C --simulation S --compression NAME
        --signal SIGNAL.h5 --noise NOISE.h5 [--masks MASKS.h5] --output F.h5

Reads the simulation's frequency maps (signal + stored noise realisations, per split; or
the observed splits of maps that contain their noise, as one realisation),
takes their B modes (Q/U through a spin-2 analysis, or the stored B maps; optionally
weighted by a Galactic mask), and runs the compression ``nilc.compressions[NAME]``
(needlet or harmonic ILC; joint or constrained; see :mod:`bmodesep.core.nilc.ilc`).  Writes the
component maps and alm per realisation and split, with the needlet windows, the channels
used per scale and the covariance smoothing widths.  The per-split cost goes to the log.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from bmodesep.config import simulation_config, simulation_lmax
from bmodesep.core import harmonics
from bmodesep.core.nilc import ilc
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import io, sims
from bmodesep.products.nilc import write_nilc
from bmodesep.settings import ilc_compression, ilc_settings, resolve_instrument
from bmodesep.steps import File, Name, step

log = logging.getLogger(__name__)


def _cmb_truth(stage, sim) -> dict[str, float]:
    """The CMB's r and A_lens where the pipeline drew it (every sky but a user's maps, whose
    CMB is unknown): the truth an observed simulation's posterior is drawn against."""
    if stage["skies"][sim["sky"]]["kind"] == "maps":
        return {}
    return {"r_true": float(stage["cmb"]["r"]), "a_lens_true": float(stage["cmb"]["a_lens"])}


def _check_coverage(signal, mask, signal_path) -> None:
    """Maps a user brings may not cover the sky: NILC then needs a mask that cuts the
    unobserved pixels (its covariances would otherwise mix in their zeros)."""
    if sims.OBSERVED not in signal.data or signal[sims.OBSERVED].all():
        return
    unseen = ~signal[sims.OBSERVED].astype(bool)
    if mask is None or np.any(mask[unseen] > 0):
        raise DataError(
            f"{signal_path}: {int(unseen.sum())} of {unseen.size} pixels are not observed; "
            "NILC of a partial sky needs a nilc.mask that is zero there"
        )


@step
def nilc_compress(
    config,
    simulation: Name,
    compression: Name,
    signal: File,
    noise: File,
    output: File,
    masks: File | None = None,
) -> None:
    """Rule nilc_compress: compress every split of every noise realisation of a simulation."""
    name, compression_name, masks_path = simulation, compression, masks
    signal_path, noise_path = signal, noise
    if name not in config["nilc"]["simulations"]:
        raise ConfigError(f"simulation '{name}' is not in nilc.simulations")
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
    compression = ilc_compression(
        nl["compressions"][compression_name], nl["dust_freq_ref_ghz"], nl["sync_freq_ref_ghz"]
    )
    settings = ilc_settings(nl, n_iter)
    beams = ilc.channel_beams(inst, lmax)
    signal = sims.read_signal(signal_path, inst, nside)
    noise = sims.read_noise(noise_path, inst, nside)
    b_input = nl["input"] == "b"
    if b_input and (sims.TOTAL_B not in signal.data or sims.NOISE_B not in noise.data):
        raise DataError(
            f"nilc.input 'b' needs B-mode maps in {signal_path} and {noise_path}; "
            "set nilc.input: qu or use an instrument with b_maps"
        )
    n_real, n_split, observed_maps = sims.observed_maps(signal, noise, b_input)
    mask = None
    if nl["mask"] is not None:
        if masks_path is None:
            raise ConfigError(f"nilc.mask {nl['mask']} needs --masks")
        mask = sims.read_masks(masks_path, nside)[0][nl["mask"]].astype(float)
    _check_coverage(signal, mask, signal_path)
    n_out = len(compression.outputs)
    nalm = harmonics.alm_size(lmax_out)
    alm_out = np.empty((n_real, n_split, n_out, nalm), dtype=np.complex128)
    plan = None
    for i in range(n_real):
        for s in range(n_split):
            t0, c0 = time.perf_counter(), time.process_time()
            alm = ilc.b_mode_alm(observed_maps(i, s), nside, lmax, n_iter, mask)
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
            log.info(
                "%s %s realisation %d split %d: %.2f s wall, %.2f s CPU",
                name,
                compression_name,
                i,
                s,
                time.perf_counter() - t0,
                time.process_time() - c0,
            )
    maps = np.stack(
        [
            [harmonics.synthesis(a, nside, lmax_out, 0) for a in per_split]
            for per_split in alm_out.reshape(n_real * n_split, n_out, nalm)
        ]
    ).reshape(n_real, n_split, n_out, -1)
    needlets = None
    if plan is not None:
        needlets = (plan.windows, plan.used, np.degrees(ilc.fwhm_from_sigma(plan.sigma_rad)))
    write_nilc(
        output,
        maps,
        alm_out,
        ilc.component_seds(inst.frequencies_ghz, compression.components, compression.fiducial),
        beams,
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
            "contains_noise": sims.OBSERVATION_QU in signal.data,
            **_cmb_truth(stage, sim),
        },
        needlets,
    )
