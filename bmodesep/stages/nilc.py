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

import numpy as np

from bmodesep.config import simulation_config
from bmodesep.core.nilc import ilc
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import io, sims
from bmodesep.products.nilc import write_nilc
from bmodesep.settings import nilc_run
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
    if simulation not in config["nilc"]["simulations"]:
        raise ConfigError(f"simulation '{simulation}' is not in nilc.simulations")
    stage = simulation_config(config, simulation, with_nilc=True)
    run = nilc_run(stage, simulation, compression)
    inst, nside = run.instrument, run.nside
    beams = ilc.channel_beams(inst, run.lmax)
    signal_maps = sims.read_signal(signal, inst, nside)
    noise_maps = sims.read_noise(noise, inst, nside)
    if run.b_input and (
        sims.TOTAL_B not in signal_maps.data or sims.NOISE_B not in noise_maps.data
    ):
        raise DataError(
            f"nilc.input 'b' needs B-mode maps in {signal} and {noise}; "
            "set nilc.input: qu or use an instrument with b_maps"
        )
    n_real, n_split, observed_maps = sims.observed_maps(signal_maps, noise_maps, run.b_input)
    mask = None
    if run.mask is not None:
        if masks is None:
            raise ConfigError(f"nilc.mask {run.mask} needs --masks")
        mask = sims.read_masks(masks, nside)[0][run.mask].astype(float)
    _check_coverage(signal_maps, mask, signal)
    done = ilc.compress_all(
        observed_maps,
        n_real,
        n_split,
        beams,
        inst.frequencies_ghz,
        run.compression,
        nside,
        run.lmax,
        run.lmax_out,
        run.settings,
        run.bin_width,
        run.n_iter,
        mask,
        f"{simulation} {compression}",
    )
    needlets = None
    if done.plan is not None:
        plan = done.plan
        needlets = (plan.windows, plan.used, np.degrees(ilc.fwhm_from_sigma(plan.sigma_rad)))
    sim = stage["simulations"][simulation]
    write_nilc(
        output,
        done.maps,
        done.alm,
        ilc.component_seds(
            inst.frequencies_ghz, run.compression.components, run.compression.fiducial
        ),
        beams,
        io.provenance(stage, sim["seed"], "nilc"),
        _attributes(run, stage, sim, sims.OBSERVATION_QU in signal_maps.data),
        needlets,
    )


def _attributes(run, stage, sim, contains_noise: bool) -> dict:
    c = run.compression
    return {
        "compression": run.name,
        "basis": c.basis,
        "components": list(c.outputs),
        "mixing_components": list(c.components),
        **{f"fiducial_{k}": v for k, v in c.fiducial._asdict().items()},
        "nside": run.nside,
        "lmax": run.lmax,
        "lmax_out": run.lmax_out,
        "exact": run.settings.exact,
        "input": "b" if run.b_input else "qu",
        "mask": run.mask or "none",
        "target_beam_fwhm_arcmin": (
            float(min(run.instrument.fwhm_arcmin)) if run.instrument.fwhm_arcmin else 0.0
        ),
        "contains_noise": contains_noise,
        **_cmb_truth(stage, sim),
    }
