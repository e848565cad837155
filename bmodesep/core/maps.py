"""Frequency maps a user brings (issue 29): units, pixel ordering, resolution, coverage.

Pure arrays in, arrays out; reading the FITS files is ``bmodesep.products.fits``.

Units (delta bandpasses at the band's centre frequency, stated): every map is converted
to uK_CMB.  Thermodynamic units scale (K_CMB, mK_CMB, uK_CMB); Rayleigh-Jeans
brightness temperature is multiplied by ``g(nu) = (e^x - 1)^2 / (x^2 e^x)``
(``bmodesep.core.seds.rj_to_cmb``); specific intensity is first turned into
Rayleigh-Jeans temperature, ``T_RJ = I c^2 / (2 k nu^2)`` (1 MJy/sr = 1e-20 W m^-2 Hz^-1
sr^-1).  Unit names are read case-insensitively with the spellings FITS headers use
(``K_CMB``, ``Kcmb``, ``uK_CMB``, ``K_RJ``, ``MJy/sr`` ...); a bare ``K`` or ``uK`` is
ambiguous and refused.

Resolution: a map of another nside is brought to the analysis nside in harmonic space:
its spin-2 (E, B) alm up to ``min(lmax, 3 nside_in - 1)`` (3 Jacobi iterations of the
analysis where that is at most 2 nside_in, where they converge, as healpy's default:
a band-limited map's alm to ~1e-5; quadrature above), multiplied by
``p_out(l) / p_in(l)`` where the maps carry the pixel window of their own nside
(``pixel_window``: healpy's polarisation windows), and synthesised at the analysis
nside.  The band's beam is the one the instrument states:
it is neither removed nor changed.  A map already at the analysis nside is untouched.
The pipeline's own simulated maps carry no pixel window and its transfer functions
(beams, filter) include none, so ``pixel_window`` is off by default; on, a resampled map
carries the analysis nside's window as a map made at that nside would (healpy's tables,
which healpy downloads once).

Coverage: a pixel is observed where every column of every band is finite and not
``UNSEEN``; unobserved pixels are set to 0 before any transform (a sharp edge: near it the
resampled maps mix in zeros, so a resampled map's coverage is shrunk to the analysis
pixels whose every sub-pixel was observed) and are masked out of every zone.
"""

from __future__ import annotations

import re
import string

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.seds import BOLTZMANN_K, rj_to_cmb
from bmodesep.errors import ConfigError, DataError

UNSEEN = -1.6375e30  # HEALPix's marker of an unobserved pixel
SPEED_OF_LIGHT_M_S = 299_792_458.0
MJY_SR = 1e-20  # W m^-2 Hz^-1 sr^-1
# canonical unit -> (factor to the micro-unit of its base, base); uK_CMB is exactly 1
UNITS = {
    "K_CMB": (1e6, "K_CMB"),
    "mK_CMB": (1e3, "K_CMB"),
    "uK_CMB": (1.0, "K_CMB"),
    "K_RJ": (1e6, "K_RJ"),
    "mK_RJ": (1e3, "K_RJ"),
    "uK_RJ": (1.0, "K_RJ"),
    "MJy/sr": (1e6, "MJy/sr"),
    "Jy/sr": (1.0, "MJy/sr"),
}
_PREFIX = {"": "", "m": "m", "u": "u", "mu": "u", "micro": "u", "µ": "u", "milli": "m"}


PLACEHOLDERS = ("band", "freq")


def placeholders(pattern: str) -> set[str]:
    """The ``{names}`` a path pattern uses."""
    try:
        return {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"'{pattern}' is not a valid path pattern: {exc}") from exc


def band_paths(pattern: str, frequencies_ghz, **more: int) -> list[str]:
    """The file of each band: ``pattern`` with ``{band}`` (0-based index) and ``{freq}``
    (the frequency in GHz, formatted ``%g``: 40, 68.4, 402), and the placeholders given in
    ``more`` (``realisation``, ``split`` of noise simulations).  ConfigError unless the
    pattern names a different file for each band."""
    known = (*PLACEHOLDERS, *more)
    unknown = sorted(placeholders(pattern) - set(known))
    if unknown:
        names = ", ".join(f"{{{k}}}" for k in known)
        raise ConfigError(f"'{pattern}' has placeholders {unknown}; only {names} are known")
    paths = [pattern.format(band=i, freq=f"{f:g}", **more) for i, f in enumerate(frequencies_ghz)]
    if len(set(paths)) != len(paths):
        raise ConfigError(
            f"'{pattern}' names the same file for several bands: use {{band}} or {{freq}}"
        )
    return paths


def noise_paths(pattern: str, frequencies_ghz, realisations: int, splits: int) -> list[str]:
    """The noise-simulation file of every (realisation, split, band), in that order
    (realisation first); ConfigError unless each is a different file."""
    used = placeholders(pattern)
    if realisations > 1 and "realisation" not in used:
        raise ConfigError(f"'{pattern}' needs a {{realisation}} placeholder")
    if splits > 1 and "split" not in used:
        raise ConfigError(f"'{pattern}' needs a {{split}} placeholder (the instrument has splits)")
    return [
        path
        for i in range(realisations)
        for s in range(splits)
        for path in band_paths(pattern, frequencies_ghz, realisation=i, split=s)
    ]


def observation_paths(pattern: str, frequencies_ghz, splits: int) -> list[str]:
    """The file of every (split, band), split first, of maps that contain their noise:
    ``{split}`` (0-based) is required where the instrument has splits."""
    if splits > 1 and "split" not in placeholders(pattern):
        raise ConfigError(
            f"'{pattern}' needs a {{split}} placeholder: the maps contain their noise and "
            f"the instrument has {splits} splits"
        )
    paths = [p for s in range(splits) for p in band_paths(pattern, frequencies_ghz, split=s)]
    return list(dict.fromkeys(paths)) if splits == 1 else paths


def canonical_unit(text: str) -> str:
    """The canonical name (a key of ``UNITS``) of a unit as a header or a config writes it.

    Raises DataError for an unknown or ambiguous unit (a bare K: thermodynamic or RJ?)."""
    raw = str(text).strip()
    s = raw.replace(" ", "").replace("-", "_").lower()
    if s in ("mjy/sr", "mjysr^-1", "mjy/steradian", "mjy.sr^-1", "mjy.sr**-1"):
        return "MJy/sr"
    if s in ("jy/sr", "jysr^-1", "jy/steradian"):
        return "Jy/sr"
    m = re.fullmatch(r"(micro|milli|mu|µ|m|u)?k_?(cmb|rj|thermo)?", s)
    if m is None:
        raise DataError(f"unknown unit '{raw}' (known: {', '.join(UNITS)})")
    prefix, kind = _PREFIX[m.group(1) or ""], m.group(2)
    if kind is None:
        raise DataError(f"ambiguous unit '{raw}': thermodynamic (K_CMB) or Rayleigh-Jeans (K_RJ)?")
    return f"{prefix}K_{'RJ' if kind == 'rj' else 'CMB'}"


def resolve_unit(header_unit: str | None, configured: str | None, source: str) -> str:
    """The unit of a file: its header's, else the configured one; DataError if it has none
    or both are given and differ."""
    if header_unit is None and configured is None:
        raise DataError(f"{source}: the header states no unit and the config sets no units key")
    if header_unit is None:
        return canonical_unit(configured)
    try:
        unit = canonical_unit(header_unit)
    except DataError as exc:
        raise DataError(f"{source}: header unit: {exc}") from exc
    if configured is not None and canonical_unit(configured) != unit:
        raise DataError(
            f"{source}: the header states {header_unit}, the units key {configured}: "
            "remove the key or fix the header"
        )
    return unit


def variance_unit(text: str) -> str:
    """The unit whose square ``text`` is (``K_CMB^2``, ``(uK_CMB)**2``, ``Kcmb^2``)."""
    m = re.fullmatch(r"\s*\(?\s*([^()]+?)\s*\)?\s*(\^2|\*\*2)\s*", str(text))
    if m is None:
        raise DataError(f"'{text}' is not the square of a unit (a variance: K_CMB^2 ...)")
    return canonical_unit(m.group(1))


def to_uk_cmb(unit: str, freq_ghz: float | None) -> float:
    """The factor that turns a map in ``unit`` at ``freq_ghz`` (delta band) into uK_CMB;
    ``freq_ghz`` None (the CMB itself): thermodynamic units only."""
    micro, base = UNITS[canonical_unit(unit)]
    if base == "K_CMB":
        return micro
    if freq_ghz is None:
        raise DataError(f"unit {unit} needs a frequency: give the CMB in K_CMB, mK_CMB or uK_CMB")
    if base == "K_RJ":
        return micro * float(rj_to_cmb(freq_ghz))
    # micro-MJy/sr -> uK_RJ: T_RJ = I c^2 / (2 k nu^2)
    nu = freq_ghz * 1e9
    k_rj_per_mjy_sr = MJY_SR * SPEED_OF_LIGHT_M_S**2 / (2.0 * BOLTZMANN_K * nu**2)
    return micro * k_rj_per_mjy_sr * float(rj_to_cmb(freq_ghz))


def observed_pixels(maps: np.ndarray) -> np.ndarray:
    """``[npix]`` bool: pixels finite and not UNSEEN in every leading index of ``maps``."""
    maps = np.asarray(maps)
    bad = ~np.isfinite(maps) | np.isclose(maps, UNSEEN, rtol=1e-5, atol=0.0)
    return ~bad.reshape(-1, maps.shape[-1]).any(axis=0)


def to_ring(maps: np.ndarray, ordering: str) -> np.ndarray:
    """Maps ``[..., npix]`` in ``ordering`` (RING or NESTED) as RING maps."""
    order = ordering.strip().upper()
    if order == "RING":
        return maps
    if order not in ("NEST", "NESTED"):
        raise DataError(f"unknown HEALPix ordering '{ordering}' (RING or NESTED)")
    nside = harmonics.nside_of(maps.shape[-1])
    if nside is None:
        raise DataError(f"{maps.shape[-1]} pixels is not a HEALPix map")
    # RING pixel p holds NESTED pixel ring2nest(p)
    return maps[..., harmonics.ring2nest(nside, np.arange(maps.shape[-1]))]


def pixel_window(nside: int, lmax: int) -> np.ndarray:
    """The polarisation pixel window of ``nside`` up to ``lmax``: healpy's tables, which
    healpy fetches from healpy-data on first use (astropy's download cache); DataError
    where they cannot be had (offline, not cached)."""
    import healpy as hp

    window = np.zeros(lmax + 1)
    try:
        table = hp.pixwin(nside, pol=True, lmax=min(lmax, 3 * nside - 1))[1]
    except OSError as exc:  # urllib's URLError is an OSError
        raise DataError(
            f"the pixel window of nside {nside} is not available ({exc.__class__.__name__}: "
            "healpy downloads it from healpy-data); fetch it once where there is a network, "
            "or set pixel_window: false"
        ) from exc
    window[: table.size] = table
    return window


def resample_qu(qu: np.ndarray, nside: int, lmax: int, carries_pixel_window: bool) -> np.ndarray:
    """Q/U maps ``[..., 2, npix_in]`` at the analysis ``nside`` (see the module docstring);
    unchanged (the same array) where they are at that nside already."""
    nside_in = harmonics.nside_of(qu.shape[-1])
    if nside_in is None:
        raise DataError(f"{qu.shape[-1]} pixels is not a HEALPix map")
    if nside_in == nside:
        return qu
    band = min(lmax, 3 * nside_in - 1)
    factor = np.zeros(lmax + 1)
    factor[: band + 1] = 1.0
    if carries_pixel_window:
        factor[: band + 1] = (
            pixel_window(nside, band)[: band + 1] / pixel_window(nside_in, band)[: band + 1]
        )
    flat = qu.reshape(-1, 2, qu.shape[-1])
    n_iter = 3 if band <= 2 * nside_in else 0
    out = np.empty((flat.shape[0], 2, harmonics.npix(nside)))
    for i, m in enumerate(flat):
        alm = harmonics.analysis(m, nside_in, band, spin=2, n_iter=n_iter)
        alm = harmonics.almxfl(alm, factor[: band + 1])
        out[i] = harmonics.synthesis(alm, nside, band, spin=2)
    return out.reshape(*qu.shape[:-1], out.shape[-1])


def coverage_at(observed: np.ndarray, nside: int) -> np.ndarray:
    """A coverage ``[npix_in]`` at the analysis ``nside``: a pixel is observed where all of
    its sub-pixels are (coarser) or its parent is (finer)."""
    observed = np.asarray(observed, bool)
    nside_in = harmonics.nside_of(observed.size)
    if nside_in is None:
        raise DataError(f"{observed.size} pixels is not a HEALPix map")
    if nside_in == nside:
        return observed
    nest = observed[harmonics.nest2ring(nside_in, np.arange(observed.size))]  # NESTED order
    if nside_in > nside:
        nest_out = nest.reshape(-1, (nside_in // nside) ** 2).all(axis=1)
    else:
        nest_out = np.repeat(nest, (nside // nside_in) ** 2)
    return nest_out[harmonics.ring2nest(nside, np.arange(harmonics.npix(nside)))]


def to_analysis(
    qu: np.ndarray,
    unit: str,
    freq_ghz: float | None,
    nside: int,
    lmax: int,
    carries_pixel_window: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One band's Q/U ``[2, npix_in]`` (RING, in ``unit``) as the analysis uses it: uK_CMB at
    ``nside``, unobserved pixels 0; and its coverage ``[npix]`` (module docstring)."""
    seen = observed_pixels(qu)
    if not seen.any():
        raise DataError("no observed pixel (every pixel is UNSEEN or not finite)")
    factor = to_uk_cmb(unit, freq_ghz)
    converted = np.where(seen, qu, 0.0)
    if factor != 1.0:
        converted = converted * factor
    return resample_qu(converted, nside, lmax, carries_pixel_window), coverage_at(seen, nside)


def b_map(qu: np.ndarray, nside: int, lmax: int, n_iter: int = 3) -> np.ndarray:
    """The B-mode scalar map ``[npix]`` of Q/U ``[2, npix]``."""
    alm = harmonics.analysis(qu, nside, lmax, spin=2, n_iter=n_iter)
    return harmonics.synthesis(alm[1], nside, lmax, spin=0)[0]


def noise_from_variance(variance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White noise ``[2, npix]`` of per-pixel Q/U variances ``[2, npix]`` (any units
    squared); 0 where the variance is UNSEEN.  DataError for a negative variance."""
    seen = observed_pixels(variance)
    var = np.where(seen, variance, 0.0)
    if np.any(var < 0):
        raise DataError("negative noise variance")
    return np.sqrt(var) * rng.standard_normal(var.shape)
