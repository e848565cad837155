"""HDF5 layer of the simulation stage: one writer and one checked reader per product."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.simulate.cmb import SPECTRA_ORDER, CMBSpectra
from bmodesep.core.simulate.instrument import Instrument
from bmodesep.core.simulate.masks import MASK_NAMES, ZONE_NAMES
from bmodesep.core.simulate.sky import PATCH_PARAMETERS, ParametricSky
from bmodesep.errors import DataError
from bmodesep.products import io

D = io.Dataset

# dataset names the stages read
CMB_ALM = "cmb/alm_eb"  # sky: [E B, nalm] uK_CMB
CMB_QU = "cmb/qu"  # sky: [QU, pix] uK_CMB
TOTAL_QU = "total_qu"  # signal: [freq, QU, pix] uK_CMB
FOREGROUND_QU = "foreground_qu"  # signal: [freq, QU, pix] uK_CMB
TOTAL_B = "total_b"  # signal (optional): [freq, pix] uK_CMB
NOISE_QU = "qu"  # noise: [realisation, split, freq, QU, pix] uK_CMB
NOISE_B = "b"  # noise (optional): [realisation, split, freq, pix] uK_CMB
OBSERVATION_QU = "observation_qu"  # signal (maps that contain their noise): [split, freq, QU, pix]
OBSERVED = "observed"  # signal (optional, maps skies): [pix] 1 = observed in every band


# ---------------------------------------------------------------- CMB spectra
def write_spectra(path, spectra: CMBSpectra, config: Mapping[str, Any]) -> Path:
    return io.write_product(
        path,
        "cmb_spectra",
        {
            "lensed_scalar": D(spectra.lensed_scalar, "uK_CMB^2", "lensed-scalar C_l, r = 0"),
            "tensor_r1": D(spectra.tensor_r1, "uK_CMB^2", "tensor C_l, r = 1, n_t = 0"),
        },
        io.provenance({"cmb": config["cmb"]}, None, "cmb_spectra"),
        {"spectra_order": ",".join(SPECTRA_ORDER), "lmax": spectra.lmax},
    )


def read_spectra(path, lmax_needed: int = 0) -> CMBSpectra:
    p = io.read_product(
        path,
        "cmb_spectra",
        {"lensed_scalar": ((4, None), "uK_CMB^2"), "tensor_r1": ((4, None), "uK_CMB^2")},
    )
    spectra = CMBSpectra(p["lensed_scalar"], p["tensor_r1"])
    if spectra.lmax < lmax_needed:
        raise DataError(
            f"{path}: spectra reach lmax {spectra.lmax}, {lmax_needed} needed "
            "(raise cmb.lmax and rebuild them)"
        )
    return spectra


# ---------------------------------------------------------------- sky
def write_sky(
    path,
    sky: ParametricSky | None,
    cmb_alm: np.ndarray,
    cmb_qu: np.ndarray,
    config: Mapping[str, Any],
    seed: int,
    attrs: Mapping[str, Any],
    patches: Mapping[str, np.ndarray] | None = None,
) -> Path:
    data = {
        "cmb/alm_eb": D(cmb_alm, "uK_CMB", "CMB (E, B) alm, healpy layout"),
        "cmb/qu": D(cmb_qu, "uK_CMB"),
    }
    if sky is not None:
        data |= {
            "dust/qu": D(sky.dust_qu, "uK_CMB", "dust Q/U at dust_freq_ref_ghz"),
            "dust/beta": D(sky.beta_d, "1"),
            "dust/temperature": D(sky.temp_d_k, "K"),
            "synchrotron/qu": D(sky.sync_qu, "uK_CMB", "synchrotron Q/U at sync_freq_ref_ghz"),
            "synchrotron/beta": D(sky.beta_s, "1"),
        }
        for i, (qu, beta, temp) in enumerate(sky.dust_layers):
            data |= {
                f"dust_layers/{i}/qu": D(qu, "uK_CMB", "layer Q/U at dust_freq_ref_ghz"),
                f"dust_layers/{i}/beta": D(beta, "1"),
                f"dust_layers/{i}/temperature": D(temp, "K"),
            }
        attrs = dict(attrs) | {
            "dust_freq_ref_ghz": sky.dust_freq_ref_ghz,
            "sync_freq_ref_ghz": sky.sync_freq_ref_ghz,
            "dust_layers": len(sky.dust_layers),
            "sync_curvature": sky.sync_curvature,
            "sync_curvature_freq_ghz": sky.sync_curvature_freq_ghz,
        }
    for name, labels in (patches or {}).items():
        data[f"patches/{name}"] = D(np.asarray(labels, dtype=np.int64), "1", "patch labels")
    return io.write_product(path, "sky", data, io.provenance(config, seed, "sky"), attrs)


def read_sky(path, nside: int) -> tuple[io.Product, ParametricSky | None]:
    npx = harmonics.npix(nside)
    with_fg = _has(path, "dust/qu")
    expect = {CMB_ALM: ((2, None), "uK_CMB"), CMB_QU: ((2, npx), "uK_CMB")}
    if with_fg:
        expect |= {
            "dust/qu": ((2, npx), "uK_CMB"),
            "dust/beta": ((npx,), "1"),
            "dust/temperature": ((npx,), "K"),
            "synchrotron/qu": ((2, npx), "uK_CMB"),
            "synchrotron/beta": ((npx,), "1"),
        }
    expect |= {f"patches/{n}": ((npx,), "1") for n in PATCH_PARAMETERS}
    optional = [f"patches/{n}" for n in PATCH_PARAMETERS]
    n_layers = _layer_count(path) if with_fg else 0
    for i in range(n_layers):
        expect |= {
            f"dust_layers/{i}/qu": ((2, npx), "uK_CMB"),
            f"dust_layers/{i}/beta": ((npx,), "1"),
            f"dust_layers/{i}/temperature": ((npx,), "K"),
        }
    p = io.read_product(path, "sky", expect, optional=optional)
    if not with_fg:
        return p, None
    layers = tuple(
        (
            p[f"dust_layers/{i}/qu"],
            p[f"dust_layers/{i}/beta"],
            p[f"dust_layers/{i}/temperature"],
        )
        for i in range(n_layers)
    )
    sky = ParametricSky(
        cmb_alm=p[CMB_ALM],
        cmb_qu=p[CMB_QU],
        dust_qu=p["dust/qu"],
        sync_qu=p["synchrotron/qu"],
        beta_d=p["dust/beta"],
        temp_d_k=p["dust/temperature"],
        beta_s=p["synchrotron/beta"],
        dust_freq_ref_ghz=float(p.attrs["dust_freq_ref_ghz"]),
        sync_freq_ref_ghz=float(p.attrs["sync_freq_ref_ghz"]),
        dust_layers=layers,
        sync_curvature=float(p.attrs.get("sync_curvature", 0.0)),
        sync_curvature_freq_ghz=float(p.attrs.get("sync_curvature_freq_ghz", 23.0)),
    )
    return p, sky


def _layer_count(path) -> int:
    """The number of extra dust layers a sky file declares (0 for files without any)."""
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs.get("dust_layers", 0))
    except OSError:
        return 0  # read_product reports the unreadable file


def _has(path, name: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return name in f
    except OSError:
        return False  # read_product reports the problem with the file


def read_hits_map(path, field: int = 0) -> np.ndarray:
    """A hits map ``[npix]`` (HEALPix FITS, RING ordering, any nside)."""
    import healpy as hp

    path = Path(path)
    if not path.exists():
        raise DataError(f"missing hits map {path}")
    try:
        return np.asarray(hp.read_map(path, field=field), float)
    except (OSError, IndexError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read the hits map {path} (field {field}): {exc}") from exc


def read_patch_map(path, dataset: str, nside: int) -> np.ndarray:
    """An integer patch map ``[npix]`` from an HDF5 file (labels >= 0)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"missing patch file {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with f:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise DataError(f"{path}: no dataset '{dataset}'")
        labels = io.read_dataset(f[dataset], dataset, path)
    if labels.shape != (harmonics.npix(nside),):
        raise DataError(
            f"{path}: patch map '{dataset}' has shape {labels.shape}, expected "
            f"({harmonics.npix(nside)},) for nside {nside}"
        )
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(f"{path}: patch map '{dataset}' holds non-integer labels or NaN")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise DataError(f"{path}: patch map '{dataset}' has negative labels")
    return labels


def write_true_patches(path, maps: Mapping[str, np.ndarray], config, seed, attrs) -> Path:
    """The patch maps of a true-patch sky, one integer dataset per spectral parameter
    (read back with :func:`read_patch_map`, the dataset named by the parameter)."""
    data = {name: D(np.asarray(m, dtype=np.int64), "1", "patch label") for name, m in maps.items()}
    return io.write_product(
        path, "true_patches", data, io.provenance(config, seed, "true_patches"), attrs
    )


# ---------------------------------------------------------------- masks
def write_masks(
    path,
    masks: Mapping[str, np.ndarray],
    zones: Mapping[str, np.ndarray],
    intensity: np.ndarray | None,
    config: Mapping[str, Any],
    source: str,
) -> Path:
    data = {f"masks/{n}": D(masks[n].astype(np.uint8), "1", "1 = kept") for n in MASK_NAMES}
    data |= {f"zones/{n}": D(zones[n].astype(np.uint8), "1", "1 = in zone") for n in ZONE_NAMES}
    if intensity is not None:
        data["intensity"] = D(intensity, "uK_CMB", "smoothed dust polarised intensity")
    fsky = {f"fsky_{n}": float(np.mean(masks[n])) for n in MASK_NAMES}
    return io.write_product(
        path, "masks", data, io.provenance(config, None, "masks"), {"source": source, **fsky}
    )


def read_masks(path, nside: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    npx = harmonics.npix(nside)
    expect = {f"masks/{n}": ((npx,), "1") for n in MASK_NAMES}
    expect |= {f"zones/{n}": ((npx,), "1") for n in ZONE_NAMES}
    p = io.read_product(path, "masks", expect)
    return (
        {n: p[f"masks/{n}"].astype(bool) for n in MASK_NAMES},
        {n: p[f"zones/{n}"].astype(bool) for n in ZONE_NAMES},
    )


# ---------------------------------------------------------------- frequency maps
def write_signal(
    path,
    instrument: Instrument,
    total_qu,
    foreground_qu,
    total_b,
    transfer: np.ndarray,
    config: Mapping[str, Any],
    seed: int,
    nside: int,
    lmax: int,
    *,
    noise_cl: np.ndarray | None = None,
    sigma_pixel: np.ndarray | None = None,
    observed: np.ndarray | None = None,
    observation_qu: np.ndarray | None = None,
) -> Path:
    """The observed signal and the noise model: ``noise_cl`` (harmonic noise) or
    ``sigma_pixel`` (white noise per pixel), exactly one of them.  Maps a user brings may
    lack ``foreground_qu`` and have unobserved pixels (``observed``, 0 there); maps that
    contain their noise keep every split (``observation_qu``; ``total_qu`` is their mean)."""
    if (noise_cl is None) == (sigma_pixel is None):
        raise ValueError("give exactly one noise model: noise_cl or sigma_pixel")
    data = {
        "frequencies_ghz": D(np.asarray(instrument.frequencies_ghz), "GHz"),
        TOTAL_QU: D(total_qu, "uK_CMB", "CMB + foregrounds, [freq, QU, pix]"),
        "transfer": D(transfer, "1", "beam x high-pass applied to the signal, [freq, l]"),
    }
    if foreground_qu is not None:
        data[FOREGROUND_QU] = D(foreground_qu, "uK_CMB", "foregrounds alone, [freq, QU, pix]")
    if observation_qu is not None:
        data[OBSERVATION_QU] = D(
            observation_qu, "uK_CMB", "the observed maps, noise included, [split, freq, QU, pix]"
        )
    if observed is not None:
        data[OBSERVED] = D(np.asarray(observed, np.uint8), "1", "1 = observed in every band")
    if noise_cl is not None:
        data["noise_model/noise_cl"] = D(noise_cl, "uK_CMB^2", "N_l of one split, [freq, l]")
    else:
        data["noise_model/sigma_pixel"] = D(
            sigma_pixel, "uK_CMB", "per-pixel Q/U sigma of one split"
        )
    if total_b is not None:
        data[TOTAL_B] = D(total_b, "uK_CMB", "B-mode scalar map of total_qu, [freq, pix]")
    return io.write_product(
        path,
        "signal",
        data,
        io.provenance(config, seed, "signal"),
        {"instrument": instrument.name, "nside": nside, "lmax": lmax},
    )


def read_signal(path, instrument: Instrument, nside: int, foreground: bool = False) -> io.Product:
    """The signal product; ``foreground``: its foreground-only maps are required."""
    npx, nf = harmonics.npix(nside), instrument.n_freq
    p = io.read_product(
        path,
        "signal",
        {
            "frequencies_ghz": ((None,), "GHz"),
            TOTAL_QU: ((None, 2, npx), "uK_CMB"),
            FOREGROUND_QU: ((None, 2, npx), "uK_CMB"),
            TOTAL_B: ((None, npx), "uK_CMB"),
            OBSERVED: ((npx,), "1"),
            OBSERVATION_QU: ((None, nf, 2, npx), "uK_CMB"),
        },
        optional=[TOTAL_B, OBSERVED, OBSERVATION_QU] + ([] if foreground else [FOREGROUND_QU]),
    )
    if p["frequencies_ghz"].shape[0] != nf or p[TOTAL_QU].shape[0] != nf:
        raise DataError(
            f"{path}: {p[TOTAL_QU].shape[0]} frequency maps, instrument "
            f"{instrument.name} has {nf} bands"
        )
    if not np.allclose(p["frequencies_ghz"], instrument.frequencies_ghz):
        raise DataError(
            f"{path}: frequencies {p['frequencies_ghz'].tolist()} differ from "
            f"instrument {instrument.name}'s {list(instrument.frequencies_ghz)}"
        )
    return p


def read_coverage(path, nside: int) -> np.ndarray:
    """``[npix]`` bool: the pixels a signal product observes (all where it records none)."""
    p = io.read_product(
        path, "signal", {OBSERVED: ((harmonics.npix(nside),), "1")}, optional=[OBSERVED]
    )
    if OBSERVED not in p.data:
        return np.ones(harmonics.npix(nside), bool)
    return p[OBSERVED].astype(bool)


def write_noise(
    path,
    qu: np.ndarray,
    b: np.ndarray | None,
    config: Mapping[str, Any],
    seed: int,
    instrument: Instrument,
    nside: int,
) -> Path:
    data = {NOISE_QU: D(qu, "uK_CMB", "[realisation, split, freq, QU, pix]")}
    if b is not None:
        data[NOISE_B] = D(b, "uK_CMB", "B-mode scalar maps, [realisation, split, freq, pix]")
    return io.write_product(
        path,
        "noise",
        data,
        io.provenance(config, seed, "noise"),
        {
            "instrument": instrument.name,
            "nside": nside,
            "realisations": qu.shape[0],
            "splits": instrument.splits,
        },
    )


def read_noise(path, instrument: Instrument, nside: int) -> io.Product:
    npx = harmonics.npix(nside)
    s, nf = instrument.splits, instrument.n_freq
    return io.read_product(
        path,
        "noise",
        {NOISE_QU: ((None, s, nf, 2, npx), "uK_CMB"), NOISE_B: ((None, s, nf, npx), "uK_CMB")},
        optional=[NOISE_B],
    )


def noise_realisation_reader(path, instrument: Instrument, nside: int, needed: int):
    """``read(i)``: noise realisation i ``[split, freq, QU, pix]`` uK_CMB of a noise product,
    read alone (a realisation at a time: a product of 100 realisations at nside 64 holds
    1.2 GB).  The product's kind, shape and units are checked first, its checksums on
    every read."""
    path = Path(path)
    io.read_product(path, "noise", {})  # kind and format version
    npx, s, nf = harmonics.npix(nside), instrument.splits, instrument.n_freq
    with h5py.File(path, "r") as f:
        if NOISE_QU not in f:
            raise DataError(f"{path}: dataset '{NOISE_QU}' is missing")
        dset = f[NOISE_QU]
        if dset.shape[1:] != (s, nf, 2, npx) or dset.attrs.get("units") != "uK_CMB":
            raise DataError(
                f"{path}: '{NOISE_QU}' has shape {dset.shape} in {dset.attrs.get('units')}, "
                f"expected (n, {s}, {nf}, 2, {npx}) in uK_CMB"
            )
        if dset.shape[0] < needed:
            raise DataError(f"{path}: {dset.shape[0]} noise realisations, {needed} needed")

    def read(i: int) -> np.ndarray:
        with h5py.File(path, "r") as f:
            try:
                arr = f[NOISE_QU][i]
            except OSError as exc:
                raise DataError(f"{path}: cannot read noise realisation {i}: {exc}") from exc
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path}: noise realisation {i} contains NaN or inf")
        return arr

    return read


def observed_maps(signal: io.Product, noise: io.Product, b_modes: bool = False):
    """``(realisations, splits, maps)``: the maps an analysis of a simulation sees,
    ``maps(i, s)`` ``[freq, (QU,) pix]`` of noise realisation i and split s: the signal
    plus that noise, or, for maps that contain their noise, the observed split itself
    (one realisation; their noise product only describes the noise in them)."""
    if OBSERVATION_QU in signal.data:
        if b_modes:
            raise DataError(
                f"{signal.path}: maps that contain their noise are analysed from Q/U "
                "(set nilc.input: qu)"
            )
        observation = signal[OBSERVATION_QU]
        return 1, observation.shape[0], lambda i, s: observation[s]
    total = signal[TOTAL_B] if b_modes else signal[TOTAL_QU]
    noise_maps = noise[NOISE_B] if b_modes else noise[NOISE_QU]
    return noise_maps.shape[0], noise_maps.shape[1], lambda i, s: total + noise_maps[i, s]
