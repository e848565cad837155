"""CMB spectra, skies, masks, frequency maps and noise (``workflow/rules/simulate.smk``).


    bmodesep simulate camb_spectra   --config C --output results/spectra/camb.h5
    bmodesep simulate sky            --config C --simulation NAME --spectra CAMB
                                     [--patches TRUE_PATCHES] --output SKY
    bmodesep simulate masks          --config C --simulation NAME [--sky SKY] --output MASKS
    bmodesep simulate true_patches   --config C --simulation NAME --masks MASKS --output F
    bmodesep simulate frequency_maps --config C --simulation NAME --sky SKY --output SIGNAL
    bmodesep simulate noise          --config C --simulation NAME --output NOISE

Each step computes with the core (``bmodesep.core.simulate``: cmb, sky, instrument, masks)
and writes one product through :mod:`bmodesep.products.sims`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import healpy as hp
import numpy as np

from bmodesep.config import (
    simulation_analysis_iterations,
    simulation_config,
    simulation_lmax,
)
from bmodesep.core import harmonics
from bmodesep.core import maps as user_maps
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate import cmb, foregrounds
from bmodesep.core.simulate import masks as galactic
from bmodesep.core.simulate.instrument import (
    NoiseMaps,
    SignalMaps,
    noise_cl,
    observe_signal,
    signal_transfer,
    simulate_noise,
    white_noise_sigma_per_pixel,
)
from bmodesep.core.simulate.pysm_sky import require_templates
from bmodesep.core.simulate.sky import (
    PATCH_PARAMETERS,
    ParametricSky,
    simulate_parametric_sky,
    superpixel_patches,
)
from bmodesep.errors import ConfigError, DataError
from bmodesep.log import timed
from bmodesep.products import fits, sims
from bmodesep.settings import cosmology, pysm_data_dir, resolve_instrument, sky_model
from bmodesep.steps import File, Name, step


def _simulation(config: Mapping[str, Any], name: str):
    """The simulation's stage config, its entries, sky, nside and lmax."""
    stage_config = simulation_config(config, name)
    sim = stage_config["simulations"][name]
    sky_cfg = stage_config["skies"][sim["sky"]]
    return stage_config, sim, sky_cfg, sim["nside"], simulation_lmax(sim)


# ---------------------------------------------------------------- stage steps
@step
def camb_spectra(config, output: File) -> None:
    """Rule camb_spectra: lensed-scalar and r = 1 tensor spectra from CAMB."""
    with timed("CAMB spectra"):
        spectra = cmb.compute_camb_spectra(cosmology(config["cmb"]), config["cmb"]["lmax"])
    sims.write_spectra(output, spectra, config)


def patch_maps(sky_cfg: Mapping[str, Any], nside: int, true_patches=None) -> dict[str, np.ndarray]:
    """The patch maps of a true-patch sky: superpixels, a user's file, or the K-means
    patches of rule true_patches (the file ``true_patches``)."""
    out = {}
    for name in PATCH_PARAMETERS:
        spec = sky_cfg["patches"][name]
        if "file" in spec:
            out[name] = sims.read_patch_map(spec["file"], spec["dataset"], nside)
        elif "kmeans" in spec:
            if true_patches is None:
                raise ConfigError(
                    f"patches.{name}.kmeans: the sky needs --patches (rule true_patches)"
                )
            out[name] = sims.read_patch_map(true_patches, name, nside)
        else:
            out[name] = superpixel_patches(nside, spec["superpixel_nside"])
    return out


@step
def true_patches(config, simulation: Name, masks: File, output: File) -> None:
    """Rule true_patches: K-means patch maps of a true-patch sky.

    Drawn in the zones of masks that do not depend on the sky (kabalan2025 sec. 5.1)."""
    from bmodesep.core.compsep.clustering import zone_kmeans_patches

    stage_config, _sim, sky_cfg, nside, _ = _simulation(config, simulation)
    _, zones = sims.read_masks(masks, nside)
    maps, counts = {}, {}
    for name in PATCH_PARAMETERS:
        spec = sky_cfg["patches"].get(name, {})
        if "kmeans" not in spec:
            continue
        with timed(f"K-means true patches of {name}: {spec['kmeans']} per zone"):
            maps[name] = zone_kmeans_patches(zones, spec["kmeans"], spec["kmeans_seed"])
        counts[f"kmeans_{name}"] = int(spec["kmeans"])
    if not maps:
        raise ConfigError(f"simulation {simulation}: its sky has no K-means patches")
    sims.write_true_patches(
        output, maps, stage_config, sky_cfg["seed"], {"zones": list(zones), **counts}
    )


@step
def sky(
    config,
    simulation: Name,
    spectra: File | None,
    output: File,
    patches: File | None = None,
    cmb: File | None = None,
) -> None:
    """Rule sky: the sky of a simulation: CMB, dust, synchrotron (kind maps: the CMB file).

    CMB, dust and synchrotron of one simulation (GRF, true-patch or PySM);
    of a sky of kind maps, its CMB (the file ``cmb``)."""
    stage_config, sim, sky_cfg, nside, lmax = _simulation(config, simulation)
    attrs = {"sky_kind": sky_cfg["kind"], "nside": nside, "lmax": lmax}
    if sky_cfg["kind"] == "maps":
        spec = sky_cfg["maps"]
        if cmb is None:
            raise ConfigError(f"simulation {simulation}: a maps sky's sky product needs --cmb")
        qu, _ = _band_maps([cmb], spec, [None], nside, lmax)
        alm = harmonics.analysis(qu[0], nside, lmax, 2, simulation_analysis_iterations(sim))
        sims.write_sky(output, None, alm, qu[0], stage_config, sky_cfg["seed"], attrs)
        return
    if spectra is None:
        raise ConfigError(f"simulation {simulation}: a simulated sky needs --spectra")
    camb = sims.read_spectra(spectra, lmax)
    if sky_cfg["kind"] == "pysm":
        pysm_cfg = sky_cfg["pysm"]
        if not pysm_cfg["allow_download"]:
            require_templates(pysm_cfg["preset"], pysm_data_dir(), pysm_cfg["cmb_from_pysm"])
        alm = cmb.cmb_alm(
            camb,
            config["cmb"]["r"],
            config["cmb"]["a_lens"],
            lmax,
            rng_for(sky_cfg["seed"], "cmb"),
            sky_cfg["b_modes_only"],
        )
        qu = harmonics.synthesis(alm, nside, lmax, spin=2)
        sims.write_sky(
            output,
            None,
            alm,
            qu,
            stage_config,
            sky_cfg["seed"],
            attrs | {"pysm_preset": pysm_cfg["preset"]},
        )
        return
    patches = patch_maps(sky_cfg, nside, patches) if sky_cfg["kind"] == "true_patch" else None
    with timed(f"sky {sim['sky']} at nside {nside}"):
        drawn = simulate_parametric_sky(
            sky_model(sky_cfg),
            config["cmb"]["r"],
            config["cmb"]["a_lens"],
            camb,
            nside,
            lmax,
            patches,
        )
    sims.write_sky(
        output, drawn, drawn.cmb_alm, drawn.cmb_qu, stage_config, sky_cfg["seed"], attrs, patches
    )


def foreground_at(
    sky_cfg: Mapping[str, Any], sky: ParametricSky | None, nside: int, freqs_ghz
) -> np.ndarray:
    """Foreground Q/U ``[freq, 2, npix]`` uK_CMB of a parametric or PySM sky."""
    return foregrounds.foreground_at(sky_cfg.get("pysm"), sky, nside, freqs_ghz, pysm_data_dir())


@step
def masks(
    config,
    simulation: Name,
    output: File,
    sky: File | None = None,
    planck: File | None = None,
    signal: File | None = None,
) -> None:
    """Rule masks: Galactic masks and zones.

    GAL020/040/060 masks (synthetic from the sky, by latitude, or Planck's)
    and the zones; with ``signal`` (a sky of kind maps), only where its maps are observed."""
    stage_config, _sim, sky_cfg, nside, _ = _simulation(config, simulation)
    mcfg = stage_config["masks"]
    if mcfg["source"] == "planck":
        path = planck or mcfg["planck_file"]
        try:
            maps = {
                n: hp.read_map(path, field=mcfg["planck_fields"][n]) for n in galactic.MASK_NAMES
            }
        except (OSError, IndexError, ValueError) as exc:
            raise DataError(f"cannot read Planck masks from {path}: {exc}") from exc
        gal = galactic.masks_from_planck_maps(maps, nside, path)
        intensity = None
    elif mcfg["source"] == "latitude":
        gal = galactic.latitude_masks(nside, mcfg["sky_fractions"])
        intensity = None
    else:
        if sky is None:
            raise ConfigError("masks from the sky's foregrounds need --sky")
        _, drawn = sims.read_sky(sky, nside)
        fg = foreground_at(sky_cfg, drawn, nside, [mcfg["reference_frequency_ghz"]])[0]
        intensity = galactic.smoothed_polarised_intensity(fg, nside, mcfg["smoothing_fwhm_deg"])
        gal = galactic.threshold_masks(intensity, mcfg["sky_fractions"])
    if signal is not None:
        observed = sims.read_coverage(signal, nside)
        gal = {n: m & observed for n, m in gal.items()}
    zones = galactic.galactic_zones(gal)
    for zone, pixels in zones.items():
        if not pixels.any():
            raise DataError(f"zone {zone} is empty at nside {nside}")
    sims.write_masks(output, gal, zones, intensity, stage_config, mcfg["source"])


def _band_maps(paths, spec, frequencies, nside: int, lmax: int):
    """Q/U ``[band, 2, npix]`` uK_CMB at ``nside`` from one FITS file per band (a sky of
    kind maps, ``bmodesep.core.maps``) and the pixels every band observes."""
    if len(paths) != len(frequencies):
        raise ConfigError(f"{len(paths)} map files for {len(frequencies)} bands")
    qu, observed, first = [], np.ones(harmonics.npix(nside), bool), None
    for path, freq in zip(paths, frequencies, strict=True):
        m = fits.read_healpix_fits(path, spec["fields"])
        first = first or (path, m.nside)
        if m.nside != first[1]:
            raise DataError(
                f"{path}: nside {m.nside}, {first[0]} has nside {first[1]}: the bands of a "
                "sky must share one nside"
            )
        unit = user_maps.resolve_unit(m.unit, spec["units"], str(path))
        try:
            band, seen = user_maps.to_analysis(m.qu, unit, freq, nside, lmax, spec["pixel_window"])
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
        qu.append(band)
        observed &= seen
    return np.stack(qu), observed


def _user_signal(sim, sky_cfg, instrument, total, foregrounds):
    """The signal of a sky of kind maps: the user's maps in every band, their coverage; of
    maps that contain their noise, also every split's ``[split, band, 2, npix]``."""
    nside, lmax, n_iter = sim["nside"], simulation_lmax(sim), simulation_analysis_iterations(sim)
    spec, freqs = sky_cfg["maps"], instrument.frequencies_ghz
    if not total:
        raise ConfigError("a maps sky's frequency maps need --total (one file per band)")
    splits = instrument.splits if spec["contains_noise"] else 1
    if len(total) != splits * len(freqs):
        raise ConfigError(f"{len(total)} map files for {len(freqs)} bands and {splits} split(s)")
    n = len(freqs)
    with timed(f"{len(total)} frequency maps from FITS"):
        parts = [
            _band_maps(total[s * n : (s + 1) * n], spec, freqs, nside, lmax) for s in range(splits)
        ]
        observation = np.stack([qu for qu, _ in parts]) if spec["contains_noise"] else None
        qu = parts[0][0] if splits == 1 else observation.mean(axis=0)
        observed = np.logical_and.reduce([seen for _, seen in parts])
        fg = None
        if foregrounds:
            fg, fg_observed = _band_maps(foregrounds, spec, freqs, nside, lmax)
            observed &= fg_observed
        b = None
        if instrument.b_maps:
            b = np.stack([user_maps.b_map(m, nside, lmax, n_iter) for m in qu])
    if not observed.any():
        raise DataError("no pixel is observed in every band")
    if observation is not None:
        observation[..., ~observed] = 0.0  # a pixel one split misses is cut from all
    return SignalMaps(qu, fg, b), observed, observation


@step
def frequency_maps(
    config,
    simulation: Name,
    sky: File | None,
    output: File,
    threads: int = 1,
    total: list[File] | None = None,
    foregrounds: list[File] | None = None,
) -> None:
    """Rule frequency_maps: signal maps in every band (kind maps: read from the user's FITS files).

    The observed signal in every band (beams, filter), noise model;
    of a sky of kind maps, the user's maps (``total``, ``foregrounds``: one file per band)."""
    stage_config, sim, sky_cfg, nside, lmax = _simulation(config, simulation)
    instrument = resolve_instrument(stage_config, sim["instrument"])
    observed = observation = None
    if sky_cfg["kind"] == "maps":
        signal, observed, observation = _user_signal(sim, sky_cfg, instrument, total, foregrounds)
    else:
        if sky is None:
            raise ConfigError(f"simulation {simulation}: the signal of a simulated sky needs --sky")
        product, drawn = sims.read_sky(sky, nside)
        with timed(f"signal maps, {instrument.n_freq} bands"):
            fg = foreground_at(sky_cfg, drawn, nside, instrument.frequencies_ghz)
            signal = observe_signal(
                instrument,
                product[sims.CMB_ALM],
                product[sims.CMB_QU],
                fg,
                nside,
                lmax,
                simulation_analysis_iterations(sim),
                threads,
            )
    harmonic = instrument.noise == "harmonic"
    sims.write_signal(
        output,
        instrument,
        signal.total_qu,
        signal.foreground_qu,
        signal.total_b,
        signal_transfer(instrument, lmax),
        stage_config,
        sky_cfg["seed"],
        nside,
        lmax,
        noise_cl=noise_cl(instrument, lmax) if harmonic else None,
        sigma_pixel=None if harmonic else white_noise_sigma_per_pixel(instrument, nside),
        observed=observed,
        observation_qu=observation,
    )


def _variance_maps(paths, spec, frequencies, splits: int) -> list[np.ndarray]:
    """Per-pixel Q/U noise variance ``[2, npix_in]`` uK_CMB^2 of one split in each band
    (UNSEEN where the file has none)."""
    if not paths or len(paths) != len(frequencies):
        raise ConfigError(f"{len(paths or [])} variance files for {len(frequencies)} bands")
    out = []
    for path, freq in zip(paths, frequencies, strict=True):
        m = fits.read_healpix_fits(path, spec["variance_fields"], columns=("QQ", "UU"))
        header = None if m.unit is None else user_maps.variance_unit(m.unit)
        unit = user_maps.resolve_unit(header, spec["units"], str(path))
        scale = user_maps.to_uk_cmb(unit, freq) ** 2 * splits
        out.append(np.where(user_maps.observed_pixels(m.qu), m.qu * scale, user_maps.UNSEEN))
    return out


def _file_noise(sim, spec, instrument, variance, noise_files):
    """The noise realisations ``[split, band, 2, npix]`` of a maps sky whose noise comes
    from files: white noise of its variance maps, or its noise simulations
    (``noise_files`` realisation first, then split, then band); drawn or read at the
    files' nside, then converted and resampled like the maps.  And the pixels every file
    has a value for."""
    nside, lmax, seed = sim["nside"], simulation_lmax(sim), sim["seed"]
    n, splits, freqs = sim["noise_realisations"], instrument.splits, instrument.frequencies_ghz
    if spec["noise"] == "variance":
        var = _variance_maps(variance, spec, freqs, splits)
        covered = user_maps.coverage_at(
            np.logical_and.reduce([user_maps.observed_pixels(v) for v in var]), nside
        )

        def band(i, s, b):
            drawn = user_maps.noise_from_variance(var[b], rng_for(seed, "noise", i, s, b))
            return user_maps.resample_qu(drawn, nside, lmax, spec["pixel_window"])

        maps = [
            np.stack([np.stack([band(i, s, b) for b in range(len(freqs))]) for s in range(splits)])
            for i in range(n)
        ]
        return maps, covered
    expected, per = n * splits * len(freqs), len(freqs)
    if len(noise_files or []) != expected:
        raise ConfigError(
            f"{len(noise_files or [])} noise files given, {expected} needed "
            f"({n} realisations x {splits} splits x {per} bands)"
        )
    covered, maps = np.ones(harmonics.npix(nside), bool), []
    for i in range(n):
        split_maps = []
        for s in range(splits):
            start = (i * splits + s) * per
            qu, seen = _band_maps(noise_files[start : start + per], spec, freqs, nside, lmax)
            split_maps.append(qu)
            covered &= seen
        maps.append(np.stack(split_maps))
    return maps, covered


@step
def noise(
    config,
    simulation: Name,
    output: File,
    threads: int = 1,
    variance: list[File] | None = None,
    noise_files: list[File] | None = None,
    signal: File | None = None,
) -> None:
    """Rule noise: noise realisations of every split and band (kind maps: from its files).

    Every noise realisation of every split and band (of a maps sky whose
    noise comes from files: drawn from its variance maps or read from its simulations,
    which must cover every pixel its maps observe, ``signal``)."""
    stage_config, sim, sky_cfg, nside, lmax = _simulation(config, simulation)
    instrument = resolve_instrument(stage_config, sim["instrument"])
    n = sim["noise_realisations"]
    spec = sky_cfg["maps"] if sky_cfg["kind"] == "maps" else {"noise": "instrument"}
    if spec["noise"] != "instrument":
        if signal is None:
            raise ConfigError(f"simulation {simulation}: noise from files needs --signal")
        with timed(f"{n} noise realisations from {spec['noise']} files"):
            qu_list, covered = _file_noise(sim, spec, instrument, variance, noise_files)
        missing = sims.read_coverage(signal, nside) & ~covered
        if missing.any():
            raise DataError(
                f"the {spec['noise']} files leave {int(missing.sum())} pixels the maps observe "
                "without noise (UNSEEN or not finite there)"
            )
        maps = [
            NoiseMaps(q, _b_maps(q, nside, lmax) if instrument.b_maps else None) for q in qu_list
        ]
    else:
        with timed(f"{n} noise realisations"):
            maps = [
                simulate_noise(instrument, nside, lmax, sim["seed"], i, threads) for i in range(n)
            ]
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
    sims.write_noise(output, qu, b, stage_config, sim["seed"], instrument, nside)


def _b_maps(qu: np.ndarray, nside: int, lmax: int) -> np.ndarray:
    """B-mode maps ``[..., npix]`` of Q/U maps ``[..., 2, npix]``."""
    flat = qu.reshape(-1, 2, qu.shape[-1])
    return np.stack([user_maps.b_map(m, nside, lmax) for m in flat]).reshape(
        *qu.shape[:-2], qu.shape[-1]
    )
