"""Galactic masks and zones.

Masks GAL020, GAL040, GAL060 keep the 20, 40, 60 % of the sky with the least
foreground emission.  Synthetic masks threshold the dust polarised intensity at a
reference frequency (353 GHz, as Planck's masks were built from 353 GHz intensity)
after Gaussian smoothing, so they are nested and their sky fractions are exact to a
pixel.  Latitude masks keep the highest Galactic latitudes (they do not depend on the
sky, so a sky may be built on their zones).  Planck's GAL masks are read from a
user-given file instead when configured.
Zones (kabalan2025 sec. 5.2): GAL020, GAL040 minus GAL020, GAL060 minus GAL040, each
split at the Galactic equator into upper (z >= 0) and lower (z < 0) halves.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from bmodesep.core import harmonics
from bmodesep.errors import DataError

MASK_NAMES = ("GAL020", "GAL040", "GAL060")
ZONE_NAMES = tuple(f"{m}_{h}" for m in MASK_NAMES for h in ("U", "L"))


def smoothed_polarised_intensity(
    qu: np.ndarray, nside: int, fwhm_deg: float, n_iter: int = 3
) -> np.ndarray:
    """sqrt(Q^2 + U^2) smoothed with a Gaussian of ``fwhm_deg`` (spin 0)."""
    p = np.sqrt(qu[0] ** 2 + qu[1] ** 2)
    lmax = 2 * nside  # where the iterated analysis is accurate; the beam kills higher l
    alm = harmonics.analysis(p, nside, lmax, spin=0, n_iter=n_iter)
    beam = harmonics.gaussian_beam(fwhm_deg * 60.0, lmax, spin=0)
    return harmonics.synthesis(harmonics.almxfl(alm, beam), nside, lmax, spin=0)[0]


def threshold_masks(intensity: np.ndarray, sky_fractions: Mapping[str, float]) -> dict:
    """Boolean masks keeping the ``round(f npix)`` pixels of lowest intensity, per name."""
    order = np.argsort(intensity, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return {name: rank < round(f * intensity.size) for name, f in sky_fractions.items()}


def latitude_masks(nside: int, sky_fractions: Mapping[str, float]) -> dict:
    """Masks keeping the given sky fractions of highest Galactic latitude |b| (nested, exact
    to a pixel): independent of the sky, for skies whose patches live in the zones."""
    import healpy as hp  # here: importing healpy costs ~1 s (matplotlib, astropy)

    z = hp.pix2vec(nside, np.arange(harmonics.npix(nside)))[2]
    return threshold_masks(1.0 - np.abs(z), sky_fractions)


def masks_from_planck_maps(maps: Mapping[str, np.ndarray], nside: int, source: str) -> dict:
    """Binary masks at ``nside`` from Planck GAL maps (any nside, RING): mean >= 0.5 is kept."""
    import healpy as hp  # here: importing healpy costs ~1 s (matplotlib, astropy)

    out = {}
    for name, m in maps.items():
        if not np.all(np.isfinite(m)):
            raise DataError(f"{source}: mask {name} contains NaN or inf")
        if m.min() < 0 or m.max() > 1:
            raise DataError(f"{source}: mask {name} has values outside [0, 1]")
        low = hp.ud_grade(m.astype(float), nside) if hp.get_nside(m) != nside else m
        out[name] = low >= 0.5
    for inner, outer in itertools.pairwise(MASK_NAMES):
        if np.any(out[inner] & ~out[outer]):
            raise DataError(f"{source}: mask {inner} is not contained in {outer}")
    return out


def galactic_zones(masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The six zones from nested masks GAL020 < GAL040 < GAL060."""
    import healpy as hp  # here: importing healpy costs ~1 s (matplotlib, astropy)

    nside = hp.get_nside(masks[MASK_NAMES[0]])
    upper = hp.pix2vec(nside, np.arange(harmonics.npix(nside)))[2] >= 0
    zones = {}
    previous = np.zeros_like(upper)
    for name in MASK_NAMES:
        ring = masks[name] & ~previous
        zones[f"{name}_U"] = ring & upper
        zones[f"{name}_L"] = ring & ~upper
        previous = masks[name]
    return zones
