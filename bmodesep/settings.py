"""Typed settings built once from the resolved config, for the stages to hand to core.

The core takes arrays and small typed objects (``Cosmology``, ``SkyModel``, ``Instrument``,
``ilc.Compression``,
``ilc.Settings``, ``SimulationSet``, ``spectra.BBEstimator``, ``simulator.Setup``); this is
the one module that turns the config's dictionaries into them, so that no core function
reads a YAML key.  ``bmodesep.config`` loads and validates the config itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import yaml

from bmodesep.core.nilc.ilc import Compression, Fiducial
from bmodesep.core.nilc.ilc import Settings as ILCSettings
from bmodesep.core.npe.sets import SimulationSet
from bmodesep.core.seds import SPECTRAL_PARAMETERS
from bmodesep.core.simulate.cmb import Cosmology
from bmodesep.core.simulate.instrument import PRESETS, Instrument
from bmodesep.core.simulate.sky import (
    PARAMETRIC_KINDS,
    DustLayer,
    Foreground,
    IndexField,
    SkyModel,
)
from bmodesep.errors import ConfigError, DataError

PARAMETERS = SPECTRAL_PARAMETERS


# ---------------------------------------------------------------- CMB and skies
def cosmology(cmb: Mapping[str, Any]) -> Cosmology:
    """The CAMB parameters of the config's ``cmb`` section."""
    c = cmb["cosmology"]
    return Cosmology(
        h0=float(c["h0"]),
        ombh2=float(c["ombh2"]),
        omch2=float(c["omch2"]),
        mnu=float(c["mnu"]),
        tau=float(c["tau"]),
        a_s=float(c["as"]),
        ns=float(c["ns"]),
    )


def _index_field(spec: Mapping[str, Any]) -> IndexField:
    default = IndexField(0.0)
    return IndexField(
        mean=float(spec["mean"]),
        amplitude=float(spec.get("amplitude", default.amplitude)),
        gamma=float(spec.get("gamma", default.gamma)),
        ell_min=int(spec.get("ell_min", default.ell_min)),
    )


def _foreground(spec: Mapping[str, Any], with_temperature: bool) -> Foreground:
    return Foreground(
        amplitude_uk2=float(spec["amplitude_uk2"]),
        alpha=float(spec["alpha"]),
        ee_over_bb=float(spec["ee_over_bb"]),
        freq_ref_ghz=float(spec["freq_ref_ghz"]),
        beta=_index_field(spec["beta"]),
        temperature_k=_index_field(spec["temperature_k"]) if with_temperature else None,
    )


def sky_model(sky: Mapping[str, Any]) -> SkyModel:
    """A parametric entry of the config's ``skies`` (validated, defaults in): ``grf``,
    ``true_patch`` or a misspecified kind."""
    if sky["kind"] not in PARAMETRIC_KINDS:
        raise ConfigError(
            f"sky kind '{sky['kind']}' is not parametric ({', '.join(PARAMETRIC_KINDS)})"
        )
    envelope = sky["galactic_envelope"]
    lognormal, curvature = sky["lognormal"], sky["curvature"]
    tied = sky["amplitude_correlation"]
    return SkyModel(
        kind=sky["kind"],
        seed=int(sky["seed"]),
        dust=_foreground(sky["dust"], with_temperature=True),
        synchrotron=_foreground(sky["synchrotron"], with_temperature=False),
        rho_ds=float(sky["rho_ds"]),
        b_modes_only=bool(sky["b_modes_only"]),
        envelope_amplitude=float(envelope["amplitude"]),
        envelope_scale=float(envelope["scale"]),
        lognormal=IndexField(
            float(lognormal["sigma"]), 1.0, float(lognormal["gamma"]), int(lognormal["ell_min"])
        ),
        dust_layers=tuple(
            DustLayer(
                float(layer["weight"]),
                _index_field(layer["beta"]),
                _index_field(layer["temperature_k"]),
            )
            for layer in sky["dust_layers"]
        ),
        sync_curvature=float(curvature["value"]),
        sync_curvature_freq_ghz=float(curvature["freq_ghz"]),
        amplitude_correlation=(float(tied["beta_d"]), float(tied["beta_s"])),
    )


# ---------------------------------------------------------------- instruments
@cache
def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown instrument preset '{name}' (known: {', '.join(PRESETS)})")
    return yaml.safe_load(resources.files("bmodesep").joinpath(f"presets/{name}.yaml").read_text())


def resolve_instrument(config: Mapping[str, Any], name: str) -> Instrument:
    """The instrument ``name`` of ``config``: a preset name or an inline definition."""
    if name not in config["instruments"]:
        raise ConfigError(
            f"unknown instrument {name!r} (instruments: {', '.join(config['instruments'])})"
        )
    spec = config["instruments"][name]
    if isinstance(spec, str):
        spec = preset(spec)
    return instrument_from_spec(name, spec)


def instrument_from_spec(name: str, spec: Mapping[str, Any]) -> Instrument:
    freqs = tuple(float(f) for f in spec["frequencies_ghz"])
    n = len(freqs)
    where = f"instruments.{name}"

    def per_band(key: str) -> tuple | None:
        values = spec.get(key)
        if values is None:
            return None
        if len(values) != n:
            raise ConfigError(f"{where}.{key}: {len(values)} entries for {n} frequencies")
        return tuple(values)

    depth = per_band("depth_uk_arcmin")
    fwhm = per_band("fwhm_arcmin")
    knee, alpha = per_band("ell_knee"), per_band("alpha_knee")
    noise = spec.get("noise", "white_pixel")
    if (knee is None) != (alpha is None):
        raise ConfigError(f"{where}: give both ell_knee and alpha_knee, or neither")
    if knee is not None:
        for i, (k, a) in enumerate(zip(knee, alpha, strict=False)):
            if (k is None) != (a is None):
                raise ConfigError(
                    f"{where}: band {freqs[i]} GHz has only one of ell_knee, alpha_knee"
                )
        if noise != "harmonic" and any(k is not None for k in knee):
            raise ConfigError(f"{where}: 1/f noise (ell_knee) needs noise: harmonic")
    if len(set(freqs)) != n:
        raise ConfigError(f"{where}.frequencies_ghz: repeated frequencies")
    hp_cfg = spec.get("highpass")
    return Instrument(
        name=name,
        frequencies_ghz=freqs,
        depth_uk_arcmin=tuple(map(float, depth)),
        fwhm_arcmin=None if fwhm is None else tuple(map(float, fwhm)),
        ell_knee=knee,
        alpha_knee=alpha,
        noise=noise,
        splits=int(spec.get("splits", 1)),
        highpass=None if hp_cfg is None else (int(hp_cfg["ell_min"]), int(hp_cfg["delta_ell"])),
        b_maps=bool(spec.get("b_maps", False)),
    )


# ---------------------------------------------------------------- component separation
def kmeans_counts(compsep: Mapping[str, Any]) -> list[int]:
    """Every K-means patch count of the grid, sorted (one patch file each)."""
    return sorted(set().union(*(compsep["grid"][p] for p in PARAMETERS)))


# ---------------------------------------------------------------- residual spectra and r
def bb_estimator(stage, nside: int):
    """The BB spectrum estimator configured by ``rlike`` for maps at ``nside``."""
    from bmodesep.core.rlike import spectra

    rl = stage["rlike"]
    lmax = rl["lmax"] or 2 * nside
    if lmax > 3 * nside - 1:
        raise DataError(f"rlike.lmax {lmax} exceeds 3 nside - 1 = {3 * nside - 1}")
    if rl["lmin"] > lmax:
        raise DataError(f"rlike.lmin {rl['lmin']} exceeds lmax {lmax}")
    width = rl["bin_width"] if rl["spectrum"] == "master" else None
    return spectra.BBEstimator(rl["lmin"], lmax, width)


def r_grid(stage: Mapping[str, Any]):
    """The r values at which eq. 15 is evaluated."""
    import numpy as np

    rl = stage["rlike"]
    return np.linspace(rl["r_min"], rl["r_max"], rl["r_points"])


# ---------------------------------------------------------------- needlet ILC
def ilc_compression(spec: Mapping, dust_ref_ghz=353.0, sync_ref_ghz=23.0) -> Compression:
    """A config entry of ``nilc.compressions``; beta_s defaults to -5 with the dust moment
    in A and to -3 without (duivenvoorden2025 sec. II.3)."""
    comps = tuple(spec["components"])
    fid = dict(spec.get("fiducial", {}))
    fid.setdefault("beta_s", -5.0 if "dbeta_dust" in comps else -3.0)
    fiducial = Fiducial(
        beta_d=float(fid.get("beta_d", 1.5)),
        temperature_d=float(fid.get("temperature_d", 19.6)),
        beta_s=float(fid["beta_s"]),
        dust_freq_ref_ghz=float(dust_ref_ghz),
        sync_freq_ref_ghz=float(sync_ref_ghz),
    )
    if spec["basis"] not in ("needlet", "harmonic"):
        raise ConfigError(f"unknown ILC basis '{spec['basis']}' (needlet or harmonic)")
    out = Compression(spec["basis"], comps, spec["keep"], fiducial)
    out.keep_indices  # noqa: B018 - validates keep
    return out


def ilc_settings(nl: Mapping[str, Any], n_iter: int = 3) -> ILCSettings:
    return ILCSettings(
        needlet_fwhm_arcmin=tuple(nl["needlet_fwhm_arcmin"]),
        ilc_bias_tolerance=nl["ilc_bias_tolerance"],
        beam_threshold=nl["beam_threshold"],
        n_iter=n_iter,
        n_iter_out=n_iter,
        exact=nl["exact"],
    )


class NilcRun(NamedTuple):
    """One NILC compression of one simulation, resolved from its stage config."""

    name: str  # the compression's name in nilc.compressions
    compression: Compression
    settings: ILCSettings
    instrument: Instrument
    nside: int
    lmax: int  # of the analysis
    lmax_out: int  # of the component alm written
    n_iter: int  # healpy's map2alm iterations wherever maps enter harmonic space
    b_input: bool  # the stored B maps (nilc.input b), else Q/U
    mask: str | None  # the Galactic mask weighting the maps (nilc.mask)
    bin_width: int  # of a harmonic basis


def nilc_run(stage: Mapping[str, Any], simulation: str, compression: str) -> NilcRun:
    """The typed settings of ``bmodesep nilc nilc_compress`` for a simulation's stage config
    (:func:`bmodesep.config.simulation_config` with NILC); config errors name the key."""
    from bmodesep.config import simulation_lmax

    nl = stage["nilc"]
    if simulation not in nl["simulations"]:
        raise ConfigError(f"simulation '{simulation}' is not in nilc.simulations")
    if compression not in nl["compressions"]:
        raise ConfigError(
            f"unknown compression '{compression}' (defined: {', '.join(nl['compressions'])})"
        )
    sim = stage["simulations"][simulation]
    nside = sim["nside"]
    lmax = nl["lmax"] or simulation_lmax(sim)
    if lmax > 3 * nside - 1:
        raise ConfigError(f"nilc.lmax {lmax} exceeds 3 nside - 1 = {3 * nside - 1}")
    lmax_out = nl["lmax_out"] or lmax
    if lmax_out > lmax:
        raise ConfigError(f"nilc.lmax_out {lmax_out} exceeds nilc.lmax {lmax}")
    n_iter = 3
    return NilcRun(
        compression,
        ilc_compression(
            nl["compressions"][compression], nl["dust_freq_ref_ghz"], nl["sync_freq_ref_ghz"]
        ),
        ilc_settings(nl, n_iter),
        resolve_instrument(stage, sim["instrument"]),
        nside,
        lmax,
        lmax_out,
        n_iter,
        nl["input"] == "b",
        nl["mask"],
        nl["harmonic_bin_width"],
    )


def pysm_data_dir() -> str | None:
    """PySM's template folder, ``$PYSM_LOCAL_DATA`` (None when it is not set)."""
    return os.environ.get("PYSM_LOCAL_DATA")


# ---------------------------------------------------------------- SBI
def simulation_sets(config: Mapping[str, Any]) -> dict[str, SimulationSet]:
    """The training, coverage and test sets of the config (empty ones left out)."""
    npe = config["npe"]
    per = npe["simulations_per_chunk"]
    sets = {
        "train": SimulationSet("train", npe["prior"], {}, npe["chunks"] * per, per),
        "coverage": SimulationSet("coverage", npe["prior"], {}, npe["coverage_simulations"], per),
    }
    for name, spec in npe["test_sets"].items():
        sets[name] = SimulationSet(
            name, spec["prior"], dict(spec["fixed"]), spec["simulations"], per, spec["foreground"]
        )
    return {k: v for k, v in sets.items() if v.simulations > 0}


def npe_setup(config: Mapping[str, Any], spectra, compression: str, footprint=None):
    """The forward model of one compression (``simulator.Setup``) for the SBI stages;
    ``footprint``: the apodised mask of ``npe.footprint`` (None: full sky)."""
    from bmodesep.core.npe import simulator

    npe, nl = config["npe"], config["nilc"]
    if compression not in nl["compressions"]:
        raise ConfigError(f"unknown compression '{compression}' (nilc.compressions)")
    spec = ilc_compression(
        nl["compressions"][compression], nl["dust_freq_ref_ghz"], nl["sync_freq_ref_ghz"]
    )
    settings = ILCSettings(
        needlet_fwhm_arcmin=tuple(nl["needlet_fwhm_arcmin"]),
        ilc_bias_tolerance=nl["ilc_bias_tolerance"],
        beam_threshold=nl["beam_threshold"],
    )
    return simulator.make_setup(
        resolve_instrument(config, npe["instrument"]),
        spectra,
        npe["nside"],
        spec,
        settings,
        npe["lmax"],
        (npe["ell_min"], npe["ell_max"]),
        npe["bin_width"],
        npe["analysis_iterations"],
        footprint,
        npe["footprint"]["n_iter"],
    )
