"""The forward model of duivenvoorden2025: theta (Table 1) -> the 165-number data vector.

For one parameter vector and seed (secs. II.1, II.2, II.4 and Appendix A):

1. CMB B modes with ``C_l = r C_l^tensor(r=1) + A_lens C_l^lens`` (CAMB);
2. dust and synchrotron B-mode amplitudes at 353 and 23 GHz with
   ``D_l = A (l/80)^alpha`` and cross spectrum ``rho_ds sqrt(C^d C^s)`` (eqs. 8, 12, 13);
3. spectral-index fields ``beta_d = beta_d + GRF(B_d l^gamma_d)`` and the same for
   beta_s (eqs. 7, 11), T_d fixed; each band's foreground B map is the amplitude maps
   scaled pixel by pixel by the SEDs (the paper simulates B modes as scalar fields);
4. per band: beam and high-pass filter (eq. A2) on the sky, 1/f noise of eq. A1 per split
   (two splits, noise variance x2 each), all in harmonic space; with a footprint (the
   paper's mask M, :mod:`bmodesep.core.simulate.footprint`) each band's and split's Q/U
   maps are multiplied by it and analysed back to B modes;
5. the compression (default: joint NILC of CMB, dust, synchrotron, d/dbeta_d, d/dbeta_s),
   run on each split's alm;
6. cross-split auto and cross spectra of the components, binned 30 <= l <= 200 in
   bins of 15 (:mod:`bmodesep.datavector`).

Every random draw comes from ``rng_for(seed, stream, ...)``: a (theta, seed) pair always
gives the same data vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from bmodesep.core import harmonics, seds
from bmodesep.core.nilc import datavector, ilc
from bmodesep.core.npe.prior import PARAMETERS
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate.cmb import CMBSpectra
from bmodesep.core.simulate.footprint import mask_b_alm
from bmodesep.core.simulate.instrument import (
    Instrument,
    noise_cl,
    signal_transfer,
    white_noise_sigma_per_pixel,
)
from bmodesep.core.simulate.sky import index_field_cl, power_law_cl
from bmodesep.errors import ConfigError

DUST_TEMPERATURE_K = 19.6
FREQUENCY_SPECTRA = "frequency_spectra"  # the likelihood's data, stored like a compression


class Setup(NamedTuple):
    """Everything the simulator needs besides theta and the seed."""

    nside: int
    lmax: int
    instrument: Instrument
    tensor_cl: np.ndarray  # C_l^BB at r = 1, [lmax+1]
    lensing_cl: np.ndarray  # lensed-scalar C_l^BB, [lmax+1]
    transfer: np.ndarray  # beam x high-pass, [freq, lmax+1]
    noise_cl: np.ndarray  # per split, [freq, lmax+1]
    beams: np.ndarray  # the beams the ILC divides out, [freq, lmax+1]
    compression: ilc.Compression
    settings: ilc.Settings
    edges: np.ndarray  # data-vector bins
    analysis_iterations: int = 0
    dust_freq_ref_ghz: float = 353.0
    sync_freq_ref_ghz: float = 23.0
    mask: np.ndarray | None = None  # apodised footprint [npix]; None: full sky
    mask_iterations: int = 3  # of the spin-2 analyses of masked or pixel-noise Q/U maps

    @property
    def data_vector_length(self) -> int:
        n = len(self.compression.outputs)
        return n * (n + 1) // 2 * (self.edges.size - 1)


def make_setup(
    instrument: Instrument,
    spectra: CMBSpectra,
    nside: int,
    compression: ilc.Compression,
    settings: ilc.Settings = ilc.DEFAULT_SETTINGS,
    lmax: int | None = None,
    ell_range: tuple[int, int] = (30, 200),
    bin_width: int = 15,
    analysis_iterations: int = 0,
    mask: np.ndarray | None = None,
    mask_iterations: int = 3,
) -> Setup:
    """The simulator of one compression: an SO-SAT-like ``instrument`` with two splits at
    ``nside`` (analysis up to ``lmax``, default 3 nside - 1), the CMB ``spectra``, the ILC
    ``compression`` and its ``settings``, the data vector's bins of ``bin_width`` over
    ``ell_range``; ``mask`` (a footprint) weights the maps before the transforms."""
    lmax = 3 * nside - 1 if lmax is None else int(lmax)
    if instrument.splits < 2:
        raise ConfigError(f"instrument {instrument.name} has one split; the data vector needs two")
    if spectra.lmax < lmax:
        raise ConfigError(f"CMB spectra reach l = {spectra.lmax}, the simulator needs {lmax}")
    top = min(ell_range[1], lmax)
    if mask is not None:
        mask = np.asarray(mask, float)
        if mask.shape != (harmonics.npix(nside),) or not np.all((mask >= 0) & (mask <= 1)):
            raise ConfigError(f"the footprint must be [{harmonics.npix(nside)}] values in [0, 1]")
    return Setup(
        nside=nside,
        lmax=lmax,
        instrument=instrument,
        tensor_cl=spectra.tensor_r1[2, : lmax + 1],
        lensing_cl=spectra.lensed_scalar[2, : lmax + 1],
        transfer=signal_transfer(instrument, lmax),
        noise_cl=noise_cl(instrument, lmax),
        beams=ilc.channel_beams(instrument, lmax),
        compression=compression,
        settings=settings,
        edges=datavector.bin_edges(ell_range[0], top, bin_width),
        analysis_iterations=analysis_iterations,
        mask=mask,
        mask_iterations=mask_iterations,
    )


class Sky(NamedTuple):
    cmb_alm: np.ndarray  # [nalm] B modes
    foreground_alm: np.ndarray  # [freq, nalm] B modes of dust + synchrotron per band


def simulate_sky(theta, seed: int, setup: Setup, foreground_alm=None) -> Sky:
    """CMB and per-band foreground B-mode alm (no beam, no filter) for one theta.

    ``foreground_alm`` ``[freq, nalm]``: a fixed foreground (a test set's sky) used instead
    of the one theta describes; only r and A_lens of theta matter then.
    """
    p = dict(zip(PARAMETERS, np.asarray(theta, float), strict=True))
    lmax, nside = setup.lmax, setup.nside
    cmb_cl = p["r"] * setup.tensor_cl + p["A_lens"] * setup.lensing_cl
    cmb = harmonics.gaussian_alm(cmb_cl, lmax, rng_for(seed, "npe-cmb"))
    if foreground_alm is not None:
        expect = (setup.instrument.n_freq, harmonics.alm_size(lmax))
        if foreground_alm.shape != expect:
            raise ConfigError(
                f"fixed foreground alm of shape {foreground_alm.shape}, expected {expect}"
            )
        return Sky(cmb, foreground_alm)
    cd = power_law_cl(p["A_d"], p["alpha_d"], lmax)
    cs = power_law_cl(p["A_s"], p["alpha_s"], lmax)
    cross = p["rho_ds"] * np.sqrt(cd * cs)
    amp = harmonics.correlated_gaussian_alm(
        np.array([[cd, cross], [cross, cs]]), lmax, rng_for(seed, "npe-amplitudes")
    )
    amp_maps = np.concatenate([harmonics.synthesis(a, nside, lmax, 0) for a in amp])
    fields = []
    for name, stream in (("d", "npe-beta-d"), ("s", "npe-beta-s")):
        cl = index_field_cl(p[f"B_{name}"], p[f"gamma_{name}"], lmax)
        alm = harmonics.gaussian_alm(cl, lmax, rng_for(seed, stream))
        fields.append(p[f"beta_{name}"] + harmonics.synthesis(alm, nside, lmax, 0)[0])
    nu = np.asarray(setup.instrument.frequencies_ghz, float)[:, None]
    f_dust = seds.dust_sed(nu, fields[0][None], DUST_TEMPERATURE_K, setup.dust_freq_ref_ghz)
    f_sync = seds.synchrotron_sed(nu, fields[1][None], setup.sync_freq_ref_ghz)
    maps = f_dust * amp_maps[0][None] + f_sync * amp_maps[1][None]  # [freq, pix]
    fg = np.stack(
        [harmonics.analysis(m, nside, lmax, 0, setup.analysis_iterations)[0] for m in maps]
    )
    return Sky(cmb, fg)


def observe(sky: Sky, seed: int, setup: Setup) -> np.ndarray:
    """Data alm ``[split, freq, nalm]``: beams and filter on the sky, noise per split, then
    the footprint (if any) on each band's and split's Q/U maps.

    Harmonic-noise instruments (SO-SAT-like 1/f noise) get their noise in harmonic space;
    white-pixel-noise instruments (LiteBIRD-like, with two splits) as Q/U pixel noise,
    after which each map goes through the spin-2 B-mode analysis, as the NILC stage does.
    """
    lmax = setup.lmax
    signal = harmonics.almxfl(sky.foreground_alm + sky.cmb_alm[None], setup.transfer)
    out = np.empty((setup.instrument.splits, *signal.shape), dtype=np.complex128)
    if setup.instrument.noise != "harmonic":
        return _observe_pixel_noise(signal, seed, setup, out)
    sqrt_nl = np.sqrt(setup.noise_cl)
    for s in range(setup.instrument.splits):
        for f in range(signal.shape[0]):
            noise = harmonics.unit_gaussian_alm(lmax, rng_for(seed, "npe-noise", s, f))[0]
            out[s, f] = signal[f] + harmonics.almxfl(noise, sqrt_nl[f])
    if setup.mask is not None:
        out = mask_b_alm(out, setup.mask, setup.nside, lmax, setup.mask_iterations)
    return out


def _observe_pixel_noise(signal: np.ndarray, seed: int, setup: Setup, out: np.ndarray):
    """Q/U maps of the signal plus white pixel noise per split, masked, analysed to B."""
    nside, lmax = setup.nside, setup.lmax
    sigma = white_noise_sigma_per_pixel(setup.instrument, nside)
    weight = 1.0 if setup.mask is None else setup.mask
    for f, b in enumerate(signal):
        qu = harmonics.synthesis(np.stack([np.zeros_like(b), b]), nside, lmax, 2)
        for s in range(setup.instrument.splits):
            rng = rng_for(seed, "npe-noise", s, f)
            maps = (qu + sigma[f] * rng.standard_normal(qu.shape)) * weight
            out[s, f] = harmonics.analysis(maps, nside, lmax, 2, setup.mask_iterations)[1]
    return out


def compress(data_alm: np.ndarray, setup: Setup) -> np.ndarray:
    """Component alm of every split, then the binned cross-split data vector."""
    top = int(setup.edges[-1] - 1)
    comps = [
        ilc.compress(
            a,
            setup.beams,
            setup.instrument.frequencies_ghz,
            setup.compression,
            setup.nside,
            setup.lmax,
            lmax_out=top,
            settings=setup.settings,
        ).alm
        for a in data_alm[:2]
    ]
    return datavector.data_vector(comps[0], comps[1], top, setup.edges)


def check_theta(theta) -> np.ndarray:
    """theta as 13 finite numbers inside the model (amplitudes >= 0, |rho_ds| <= 1)."""
    theta = np.asarray(theta, float)
    if theta.shape != (len(PARAMETERS),) or not np.all(np.isfinite(theta)):
        raise ConfigError(f"theta must be {len(PARAMETERS)} finite numbers, got {theta}")
    p = dict(zip(PARAMETERS, theta, strict=True))
    amplitudes = ("r", "A_lens", "A_d", "A_s", "B_d", "B_s")
    wrong = [f"{k} = {p[k]:.3g} < 0" for k in amplitudes if p[k] < 0]
    if abs(p["rho_ds"]) > 1:
        wrong.append(f"|rho_ds| = {abs(p['rho_ds']):.3g} > 1")
    if wrong:
        raise ConfigError(f"theta outside the model: {', '.join(wrong)}")
    return theta


def simulate(theta, seed: int, setup: Setup, foreground_alm=None) -> np.ndarray:
    """theta ``[13]`` -> data vector (165 numbers for the default compression)."""
    theta = check_theta(theta)
    return compress(observe(simulate_sky(theta, seed, setup, foreground_alm), seed, setup), setup)


def frequency_spectra(data_alm: np.ndarray, setup: Setup) -> np.ndarray:
    """The power-spectrum likelihood's data (App. E): binned cross-split spectra of the
    frequency maps, symmetrised over the band order, pair-major (bands as components)."""
    return datavector.data_vector(data_alm[0], data_alm[1], setup.lmax, setup.edges)


def simulate_compressions(
    theta, seed: int, setups: Mapping[str, Setup], foreground_alm=None, with_spectra=False
) -> dict[str, np.ndarray]:
    """The data vectors of one sky and noise realisation under several compressions, and
    with ``with_spectra`` its frequency spectra (key ``FREQUENCY_SPECTRA``).

    The setups must differ in their compression only (same instrument, nside, lmax).
    """
    theta = check_theta(theta)
    first = next(iter(setups.values()))
    data = observe(simulate_sky(theta, seed, first, foreground_alm), seed, first)
    out = {name: compress(data, s) for name, s in setups.items()}
    if with_spectra:
        out[FREQUENCY_SPECTRA] = frequency_spectra(data, first)
    return out


def foreground_b_alm(foreground_qu: np.ndarray, setup: Setup) -> np.ndarray:
    """B-mode alm ``[freq, nalm]`` of a sky's foreground Q/U maps ``[freq, 2, npix]``."""
    expect = (setup.instrument.n_freq, 2, harmonics.npix(setup.nside))
    if foreground_qu.shape != expect:
        raise ConfigError(f"foreground maps of shape {foreground_qu.shape}, expected {expect}")
    return np.stack(
        [
            harmonics.analysis(m, setup.nside, setup.lmax, 2, setup.analysis_iterations)[1]
            for m in foreground_qu
        ]
    )
