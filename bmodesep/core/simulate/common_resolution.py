"""An instrument's bands at one resolution and one split, for the parametric likelihood.

kabalan2025's spectral likelihood treats every band as the same sky scaled by its SED,
with white, uncorrelated noise.  An instrument with beams that differ per band (and a
high-pass filter) and several noise splits (SO-SAT-like) is brought to that form:

* every band's Q/U maps are reconvolved in harmonic space to the widest beam,
  ``a_lm b_c / b_nu`` with ``b_c`` the band whose beam is smallest at the band limit (so
  every ratio is <= 1 and no noise is amplified); the filter, common to all bands, stays;
* the splits are averaged (their signal is the same, their noise independent);
* the likelihood's noise is the per-pixel variance of the result, from the noise model:
  ``var = sum_l (2l + 1) / (4 pi) N_l (b_c / b_nu)^2 / n_splits`` per Q or U pixel, for
  the noise spectrum N_l of one split (isotropic noise: the same in every pixel).

Approximation: the likelihood treats that noise as uncorrelated between pixels, while
reconvolution (and 1/f noise) correlate it over the common beam.  The noise covariance is
then right on the diagonal and wrong off it: the fits stay unbiased, their reported
uncertainties are not exact, and the grid search's statistical residual (measured from
noise realisations that go through the same steps) carries the real noise.

An instrument without beams, filter or splits (LiteBIRD-like, kabalan2025's) is left
untouched: today's results bit for bit.
"""

from __future__ import annotations

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.simulate.instrument import (
    ARCMIN_PER_RAD,
    Instrument,
    noise_cl,
    pixel_side_arcmin,
    signal_transfer,
    white_noise_sigma_per_pixel,
)


def needed(instrument: Instrument) -> bool:
    """Whether the instrument's data need these steps: beams, a filter or splits."""
    return instrument.harmonic_signal or instrument.splits > 1


def beam_ratio(instrument: Instrument, lmax: int) -> np.ndarray:
    """``b_c / b_nu`` per band ``[freq, lmax+1]`` (ones without beams)."""
    if instrument.fwhm_arcmin is None:
        return np.ones((instrument.n_freq, lmax + 1))
    beams = np.stack([harmonics.gaussian_beam(f, lmax) for f in instrument.fwhm_arcmin])
    common = beams[np.argmin(beams[:, -1])]
    return common[None] / beams


def common_transfer(instrument: Instrument, lmax: int) -> np.ndarray:
    """The transfer every band has after reconvolution: the widest beam x the filter."""
    return (signal_transfer(instrument, lmax) * beam_ratio(instrument, lmax))[0]


def reconvolve(qu: np.ndarray, ratio: np.ndarray, nside: int, lmax: int, n_iter: int = 3):
    """Q/U maps ``[..., freq, 2, npix]`` at the common resolution (E and B alike).

    Computed as ``m + Y[(ratio - 1) A m]``: the band of the common beam is returned as it
    is, and the analysis' error (large near l = 3 nside - 1, where HEALPix spin-2 analysis
    converges slowly; small below 2 nside) enters only through the beam change.
    """
    out = qu.astype(float, copy=True)
    flat, flat_out = qu.reshape(-1, *qu.shape[-3:]), out.reshape(-1, *qu.shape[-3:])
    for maps, result in zip(flat, flat_out, strict=True):
        for f, m in enumerate(maps):
            change = ratio[f] - 1.0
            if not np.any(change):
                continue
            alm = harmonics.almxfl(harmonics.analysis(m, nside, lmax, 2, n_iter), change)
            result[f] += harmonics.synthesis(alm, nside, lmax, 2)
    return out


def pixel_noise_variance(instrument: Instrument, nside: int, lmax: int) -> np.ndarray:
    """Per-pixel Q (and U) noise variance ``[freq]`` of the reconvolved split average.

    Harmonic noise (band-limited, spectrum N_l per split): ``sum_l (2l+1)/(4 pi) N_l r_l^2``.
    White pixel noise (sigma per split, N_l = sigma^2 Omega_pix): the reconvolution changes
    only its band-limited part, ``sigma^2 - sum_l (2l+1)/(4 pi) N_l (1 - r_l^2)``.  Both
    divided by the number of splits averaged.
    """
    ell = np.arange(lmax + 1)
    weight = (2 * ell + 1) / (4 * np.pi)
    weight[:2] = 0.0  # spin 2: no l < 2 modes
    r2 = beam_ratio(instrument, lmax) ** 2
    if instrument.noise == "harmonic":
        var = np.sum(weight * noise_cl(instrument, lmax) * r2, axis=1)
    else:
        sigma2 = white_noise_sigma_per_pixel(instrument, nside) ** 2
        omega = (pixel_side_arcmin(nside) / ARCMIN_PER_RAD) ** 2
        var = sigma2 - np.sum(weight * (1.0 - r2), axis=1) * sigma2 * omega
    return var / instrument.splits


def coadd(split_maps: np.ndarray) -> np.ndarray:
    """The average ``[..., freq, 2, npix]`` of maps ``[split, ..., freq, 2, npix]``."""
    return np.mean(split_maps, axis=0)


def map_transfer(instrument: Instrument, lmax: int) -> np.ndarray | None:
    """Beam x filter the separated maps carry (None: nothing, white-noise instruments)."""
    return common_transfer(instrument, lmax) if needed(instrument) else None


def cmb_as_seen(cmb_alm, cmb_qu, instrument: Instrument, nside: int, lmax: int) -> np.ndarray:
    """The sky's CMB Q/U ``[2, npix]`` as the separated maps carry it: ``cmb_qu`` itself,
    or the alm at the common transfer for an instrument with beams, filter or splits."""
    if not needed(instrument):
        return cmb_qu
    alm = harmonics.almxfl(cmb_alm, common_transfer(instrument, lmax))
    return harmonics.synthesis(alm, nside, lmax, 2)
