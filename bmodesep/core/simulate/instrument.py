"""Instruments: presets, noise models, beams, the high-pass filter, and observation.

Noise, white per pixel: ``sigma_pix = depth [uK arcmin] / pixel side [arcmin]``.
Noise, harmonic (duivenvoorden2025 eq. A1), for E and B alike:
``N_l = (pi/10800)^2 sigma^2 [1 + (l / l_knee)^alpha]`` (white where l_knee is null),
times the number of splits for each split's map.
High-pass (eq. A2): ``f_l = 0`` below ``l_min - delta``, ``1`` from ``l_min``, a raised
cosine in between.  The paper prints the cosine as ``cos(pi l / delta)``, which for
its l_min = 30, delta = 5 would fall from 1 to 0 across the band instead of rising;
we use the transition its text describes, ``(1 - cos(pi (l - l_min + delta)/delta))/2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.randomness import rng_for
from bmodesep.errors import ConfigError

ARCMIN_PER_RAD = 60.0 * 180.0 / np.pi
PRESETS = ("litebird", "sosat")


@dataclass(frozen=True)
class Instrument:
    name: str
    frequencies_ghz: tuple[float, ...]
    depth_uk_arcmin: tuple[float, ...]
    fwhm_arcmin: tuple[float, ...] | None
    ell_knee: tuple[float | None, ...] | None
    alpha_knee: tuple[float | None, ...] | None
    noise: str  # "white_pixel" | "harmonic"
    splits: int
    highpass: tuple[int, int] | None  # (ell_min, delta_ell)
    b_maps: bool

    @property
    def n_freq(self) -> int:
        return len(self.frequencies_ghz)

    @property
    def harmonic_signal(self) -> bool:
        """Whether the signal must pass through harmonic space (beams, filter, B maps)."""
        return self.fwhm_arcmin is not None or self.highpass is not None or self.b_maps


def pixel_side_arcmin(nside: int) -> float:
    return np.sqrt(4 * np.pi / harmonics.npix(nside)) * ARCMIN_PER_RAD


def white_noise_sigma_per_pixel(instrument: Instrument, nside: int) -> np.ndarray:
    """Per-pixel Q/U noise sigma of one split, uK_CMB, ``[freq]``."""
    depth = np.asarray(instrument.depth_uk_arcmin) * np.sqrt(instrument.splits)
    return depth / pixel_side_arcmin(nside)


def noise_cl(instrument: Instrument, lmax: int) -> np.ndarray:
    """N_l of one split (eq. A1 times the split count), uK_CMB^2, ``[freq, lmax+1]``; 0 at l<2."""
    ell = np.arange(lmax + 1, dtype=float)
    out = np.zeros((instrument.n_freq, lmax + 1))
    for i, sigma in enumerate(instrument.depth_uk_arcmin):
        white = (sigma / ARCMIN_PER_RAD) ** 2 * instrument.splits
        shape = np.ones(lmax + 1)
        if instrument.ell_knee is not None and instrument.ell_knee[i] is not None:
            with np.errstate(divide="ignore"):
                shape[2:] = 1.0 + (ell[2:] / instrument.ell_knee[i]) ** instrument.alpha_knee[i]
        out[i, 2:] = white * shape[2:]
    return out


def highpass_window(ell_min: int, delta_ell: int, lmax: int) -> np.ndarray:
    """Eq. A2 (see module docstring): 0 below ell_min - delta, 1 from ell_min."""
    ell = np.arange(lmax + 1, dtype=float)
    f = (ell >= ell_min).astype(float)
    band = (ell > ell_min - delta_ell) & (ell < ell_min)
    f[band] = 0.5 * (1.0 - np.cos(np.pi * (ell[band] - ell_min + delta_ell) / delta_ell))
    return f


def signal_transfer(instrument: Instrument, lmax: int) -> np.ndarray:
    """Beam times high-pass filter per band (spin 2), ``[freq, lmax+1]``."""
    t = np.ones((instrument.n_freq, lmax + 1))
    if instrument.fwhm_arcmin is not None:
        t *= np.stack([harmonics.gaussian_beam(f, lmax) for f in instrument.fwhm_arcmin])
    if instrument.highpass is not None:
        t *= highpass_window(*instrument.highpass, lmax)[None]
    return t


class NoiseMaps(NamedTuple):
    qu: np.ndarray  # [split, freq, 2, npix] uK_CMB
    b: np.ndarray | None  # [split, freq, npix] uK_CMB, B-mode scalar maps


def simulate_noise(
    instrument: Instrument,
    nside: int,
    lmax: int,
    seed: int,
    realisation: int,
    nthreads: int = 1,
) -> NoiseMaps:
    """Noise of every split and band for one realisation; a pure function of its arguments.

    Each (realisation, split, band) map comes from its own random stream, so any one of
    them can be regenerated alone from (seed, realisation).
    """
    npx = harmonics.npix(nside)
    qu = np.empty((instrument.splits, instrument.n_freq, 2, npx))
    b = np.empty((instrument.splits, instrument.n_freq, npx)) if instrument.b_maps else None
    if instrument.noise == "white_pixel":
        sigma = white_noise_sigma_per_pixel(instrument, nside)
        for s in range(instrument.splits):
            for i in range(instrument.n_freq):
                rng = rng_for(seed, "noise", realisation, s, i)
                qu[s, i] = sigma[i] * rng.standard_normal((2, npx))
                if b is not None:
                    alm = harmonics.analysis(
                        qu[s, i], nside, lmax, spin=2, n_iter=3, nthreads=nthreads
                    )
                    b[s, i] = harmonics.synthesis(alm[1], nside, lmax, 0, nthreads)[0]
        return NoiseMaps(qu, b)
    sqrt_nl = np.sqrt(noise_cl(instrument, lmax))
    for s in range(instrument.splits):
        for i in range(instrument.n_freq):
            rng = rng_for(seed, "noise", realisation, s, i)
            alm = harmonics.almxfl(harmonics.unit_gaussian_alm(lmax, rng, 2), sqrt_nl[i])
            qu[s, i] = harmonics.synthesis(alm, nside, lmax, 2, nthreads)
            if b is not None:
                b[s, i] = harmonics.synthesis(alm[1], nside, lmax, 0, nthreads)[0]
    return NoiseMaps(qu, b)


class SignalMaps(NamedTuple):
    total_qu: np.ndarray  # [freq, 2, npix] uK_CMB, CMB + foregrounds, beams and filter applied
    foreground_qu: np.ndarray  # [freq, 2, npix] foregrounds alone, same processing
    total_b: np.ndarray | None  # [freq, npix] B-mode scalar map of total_qu


def observe_signal(
    instrument: Instrument,
    cmb_alm: np.ndarray,
    cmb_qu: np.ndarray,
    foreground_qu: np.ndarray,
    nside: int,
    lmax: int,
    n_iter: int = 3,
    nthreads: int = 1,
) -> SignalMaps:
    """Frequency maps of the sky: CMB (known alm) + foregrounds (pixel maps) per band.

    Without beams, filter and B maps, maps are summed in pixel space.  Otherwise each
    band's foreground map is analysed (``n_iter`` Jacobi iterations), the CMB alm added,
    the beam and filter applied, and the maps synthesised again.
    """
    if foreground_qu.shape[0] != instrument.n_freq:
        raise ConfigError(
            f"instrument {instrument.name} has {instrument.n_freq} bands, "
            f"the foreground maps {foreground_qu.shape[0]}"
        )
    if not instrument.harmonic_signal:
        return SignalMaps(foreground_qu + cmb_qu[None], foreground_qu.copy(), None)
    transfer = signal_transfer(instrument, lmax)
    total = np.empty_like(foreground_qu)
    fg_out = np.empty_like(foreground_qu)
    b = np.empty((instrument.n_freq, foreground_qu.shape[-1])) if instrument.b_maps else None
    for i in range(instrument.n_freq):
        fg_alm = harmonics.almxfl(
            harmonics.analysis(foreground_qu[i], nside, lmax, 2, n_iter, nthreads), transfer[i]
        )
        cmb_conv = harmonics.almxfl(cmb_alm, transfer[i])
        fg_out[i] = harmonics.synthesis(fg_alm, nside, lmax, 2, nthreads)
        total[i] = fg_out[i] + harmonics.synthesis(cmb_conv, nside, lmax, 2, nthreads)
        if b is not None:
            b[i] = harmonics.synthesis(fg_alm[1] + cmb_conv[1], nside, lmax, 0, nthreads)[0]
    return SignalMaps(total, fg_out, b)
