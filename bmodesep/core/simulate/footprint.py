"""The survey footprint of duivenvoorden2025's masked analysis (Appendix A, sec. III.3).

The paper's mask is an enlarged SO-SAT survey region combined with Planck's 70 % Galactic
plane mask, apodised inwards by 10 degrees with a cosine profile, of effective sky fraction
``int m(n) dn / 4 pi ~ 0.21``.  Without the SO hits map (which cannot be downloaded here)
the synthetic footprint is a spherical cap in the southern Galactic hemisphere cut at
``|b| >= galactic_cut_deg`` (17.46 deg keeps 70 % of the sky, like the Planck mask), whose
radius is solved so that the apodised mask's mean is the requested sky fraction.  With a
hits map the support is where the hits reach ``threshold`` x their maximum.

The mask multiplies the Stokes Q/U maps of each band and split before the B-mode analysis
(the paper's M in eq. 1); the NILC covariances and the component spectra are those of the
masked maps, without mode-coupling correction.
"""

from __future__ import annotations

import math

import numpy as np

from bmodesep.core import harmonics
from bmodesep.errors import ConfigError, DataError

PLANCK_GAL70_CUT_DEG = math.degrees(math.asin(0.3))  # |b| above it: 70 % of the sky


def _vectors(nside: int) -> np.ndarray:
    import healpy as hp

    return np.stack(hp.pix2vec(nside, np.arange(harmonics.npix(nside))), axis=-1)


def apodise(support: np.ndarray, radius_deg: float) -> np.ndarray:
    """Cosine apodisation inwards: ``m = (1 - cos(pi d / R)) / 2`` for a pixel at angular
    distance ``d < R`` from the nearest pixel outside ``support``, 1 deeper in, 0 outside."""
    from scipy.spatial import cKDTree

    support = np.asarray(support, bool)
    nside = _nside(support.size)
    out = support.astype(float)
    if radius_deg <= 0 or support.all() or not support.any():
        return out
    import healpy as hp

    vec = _vectors(nside)
    neighbours = hp.get_all_neighbours(nside, np.flatnonzero(support))  # [8, n], -1: none
    edge = np.unique(neighbours[neighbours >= 0])
    edge = edge[~support[edge]]  # the outside pixels that touch the support
    chord, _ = cKDTree(vec[edge]).query(vec[support])
    d = 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
    r = math.radians(radius_deg)
    out[support] = np.where(d < r, 0.5 * (1.0 - np.cos(np.pi * d / r)), 1.0)
    return out


def _nside(npix: int) -> int:
    nside = round(math.sqrt(npix / 12))
    if 12 * nside * nside != npix:
        raise DataError(f"{npix} pixels are not a HEALPix map")
    return nside


def cap_support(nside: int, centre_deg, radius_deg: float, galactic_cut_deg: float) -> np.ndarray:
    """Pixels within ``radius_deg`` of ``centre_deg = (l, b)`` with ``|b| >= galactic_cut_deg``."""
    vec = _vectors(nside)
    lon, lat = np.radians(centre_deg[0]), np.radians(centre_deg[1])
    centre = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    inside = vec @ centre >= np.cos(np.radians(radius_deg))
    return inside & (np.abs(vec[:, 2]) >= np.sin(np.radians(galactic_cut_deg)))


def synthetic_footprint(
    nside: int,
    fsky: float,
    apodisation_deg: float = 10.0,
    centre_deg=(270.0, -60.0),
    galactic_cut_deg: float = PLANCK_GAL70_CUT_DEG,
) -> np.ndarray:
    """The apodised cap of effective sky fraction ``fsky`` (bisection on its radius)."""

    def mean(radius):
        return apodise(cap_support(nside, centre_deg, radius, galactic_cut_deg), apodisation_deg)

    largest = mean(180.0).mean()
    if not 0 < fsky <= largest + 1e-12:
        raise ConfigError(
            f"footprint fsky {fsky} is out of reach: the Galactic cut at {galactic_cut_deg} deg "
            f"with {apodisation_deg} deg apodisation leaves at most {largest:.3f}"
        )
    lo, hi = 0.0, 180.0
    for _ in range(30):  # to ~2e-7 deg; the mean moves in steps of one pixel
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean(mid).mean() < fsky else (lo, mid)
    return mean(hi)


def footprint_from_hits(
    hits: np.ndarray, nside: int, threshold: float, apodisation_deg: float, source: str
) -> np.ndarray:
    """Apodised mask from a hits map (any nside, RING): support where hits >= threshold x max."""
    import healpy as hp

    hits = np.asarray(hits, float)
    if not np.all(np.isfinite(hits)):
        raise DataError(f"{source}: the hits map contains NaN or inf")
    if np.any(hits < 0) or not np.any(hits > 0):
        raise DataError(f"{source}: hits must be >= 0 with at least one positive pixel")
    hits = hp.ud_grade(hits, nside) if hits.size != harmonics.npix(nside) else hits
    support = hits >= threshold * hits.max()
    return apodise(support, apodisation_deg)


def effective_fsky(mask: np.ndarray, power: int = 1) -> float:
    """``w_n = mean(m^n)``: w1 the paper's sky fraction, w2 the pseudo-spectrum scaling."""
    return float(np.mean(np.asarray(mask, float) ** power))


def mask_b_alm(b_alm: np.ndarray, mask: np.ndarray, nside: int, lmax: int, n_iter: int):
    """B-mode alm ``[..., nalm]`` of the masked Q/U maps of B-only skies (E = 0).

    ``B + A[(m - 1) Y B]`` with Y the spin-2 synthesis and A the (iterated) analysis: the
    same operator as ``A[m Y B]``, but the analysis approximates only the masked-out part,
    so a mask of ones returns the alm unchanged.
    """
    flat = b_alm.reshape(-1, b_alm.shape[-1])
    out = flat.copy()
    cut = np.asarray(mask, float) - 1.0
    for i, b in enumerate(flat):
        qu = harmonics.synthesis(np.stack([np.zeros_like(b), b]), nside, lmax, 2)
        out[i] += harmonics.analysis(qu * cut, nside, lmax, 2, n_iter)[1]
    return out.reshape(b_alm.shape)
