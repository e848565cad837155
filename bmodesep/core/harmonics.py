"""Spherical harmonic transforms on HEALPix RING maps with ducc0, and alm helpers.

alm arrays use healpy's layout (m-major, ``mmax = lmax``) so that healpy and ducc0
agree; spin-2 transforms map (E, B) alm to (Q, U) with healpy's sign convention.

Backend: :func:`synthesis` and :func:`analysis` run on ducc0 (the default,
``"ducc0"``).  ``"healpy"`` routes them through healpy's ``alm2map``/``map2alm``
instead, the common reference code, for baselines and cross-checks; every caller of
these two functions follows the choice.  Choose it for a block of code with
:func:`backend` (``with harmonics.backend("healpy"): ...``) or until further notice
with :func:`set_backend`; :func:`current_backend` reads it.  The choice is one setting
of the process, shared by its threads (switch it where no transform is running).  With
healpy, ``nthreads`` is ignored (healpy follows ``OMP_NUM_THREADS``) and the analysis
iterations are healpy's ``iter``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import ducc0
import numpy as np

from bmodesep.errors import DataError


@lru_cache(maxsize=16)
def healpix_geometry(nside: int) -> dict:
    return ducc0.healpix.Healpix_Base(nside, "RING").sht_info()


def npix(nside: int) -> int:
    return 12 * nside * nside


# Pixel geometry through ducc0: importing healpy costs 2-6 CPU-s (matplotlib, astropy),
# a large share of a short compsep job's start-up (BENCHMARKS.md, issue 28 item 4).
def nside_of(n_pixels: int) -> int | None:
    """The nside of a HEALPix map of ``n_pixels`` pixels, None if no nside has that many."""
    nside = math.isqrt(n_pixels // 12) if n_pixels > 0 else 0
    ok = nside > 0 and npix(nside) == n_pixels
    return nside if ok else None


def _base(nside: int, scheme: str = "RING"):
    return ducc0.healpix.Healpix_Base(nside, scheme)


def pix2vec(nside: int, pixels: np.ndarray) -> np.ndarray:
    """Unit vectors ``[..., 3]`` of RING pixel centres (healpy's ``pix2vec``, stacked)."""
    return _base(nside).pix2vec(np.asarray(pixels, dtype=np.int64))


def ring2nest(nside: int, pixels: np.ndarray) -> np.ndarray:
    return _base(nside).ring2nest(np.asarray(pixels, dtype=np.int64))


def nest2ring(nside: int, pixels: np.ndarray) -> np.ndarray:
    return _base(nside).nest2ring(np.asarray(pixels, dtype=np.int64))


def alm_size(lmax: int) -> int:
    return (lmax + 1) * (lmax + 2) // 2


@lru_cache(maxsize=16)
def _alm_lm(lmax: int) -> tuple[np.ndarray, np.ndarray]:
    m = np.concatenate([np.full(lmax + 1 - mm, mm) for mm in range(lmax + 1)])
    ell = np.concatenate([np.arange(mm, lmax + 1) for mm in range(lmax + 1)])
    ell.flags.writeable = False
    m.flags.writeable = False
    return ell, m


def alm_ell(lmax: int) -> np.ndarray:
    """Multipole l of each alm index."""
    return _alm_lm(lmax)[0]


def alm_m(lmax: int) -> np.ndarray:
    """Order m of each alm index."""
    return _alm_lm(lmax)[1]


BACKENDS = ("ducc0", "healpy")
_backend = "ducc0"


def current_backend() -> str:
    """The backend :func:`synthesis` and :func:`analysis` run on: ``"ducc0"`` or ``"healpy"``."""
    return _backend


def set_backend(name: str) -> str:
    """Run :func:`synthesis` and :func:`analysis` on ``name`` (one of :data:`BACKENDS`) from
    now on; returns the previous backend."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown SHT backend {name!r} (known: {', '.join(BACKENDS)})")
    previous, _backend = _backend, name
    return previous


@contextmanager
def backend(name: str) -> Iterator[None]:
    """Run :func:`synthesis` and :func:`analysis` on ``name`` inside the ``with`` block."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _healpy_synthesis(alm: np.ndarray, nside: int, lmax: int, spin: int) -> np.ndarray:
    import healpy as hp

    alm = np.atleast_2d(alm)
    if spin == 0:
        return hp.alm2map(alm[0], nside, lmax=lmax)[None]
    return np.asarray(hp.alm2map_spin(list(alm), nside, 2, lmax))


def _healpy_analysis(maps: np.ndarray, lmax: int, spin: int, n_iter: int) -> np.ndarray:
    import healpy as hp

    maps = np.atleast_2d(maps)
    if spin == 0:
        return hp.map2alm(maps[0], lmax=lmax, iter=n_iter)[None]
    return hp.map2alm(np.stack([np.zeros_like(maps[0]), *maps]), lmax=lmax, iter=n_iter)[1:]


def synthesis(alm: np.ndarray, nside: int, lmax: int, spin: int, nthreads: int = 1) -> np.ndarray:
    """alm ``[ncomp, nalm]`` -> maps ``[ncomp, npix]`` (ncomp 1 for spin 0, 2 for spin 2)."""
    if _backend == "healpy":
        return _healpy_synthesis(alm, nside, lmax, spin)
    alm = np.ascontiguousarray(np.atleast_2d(alm), dtype=np.complex128)
    return ducc0.sht.synthesis(
        alm=alm, lmax=lmax, spin=spin, nthreads=nthreads, **healpix_geometry(nside)
    )


def analysis(
    maps: np.ndarray, nside: int, lmax: int, spin: int, n_iter: int = 3, nthreads: int = 1
) -> np.ndarray:
    """maps ``[ncomp, npix]`` -> alm, with ``n_iter`` Jacobi iterations like healpy's ``iter``."""
    if _backend == "healpy":
        return _healpy_analysis(maps, lmax, spin, n_iter)
    maps = np.ascontiguousarray(np.atleast_2d(maps), dtype=np.float64)
    geom = healpix_geometry(nside)
    weight = 4.0 * np.pi / maps.shape[-1]

    def adjoint(m):
        return (
            ducc0.sht.adjoint_synthesis(map=m, lmax=lmax, spin=spin, nthreads=nthreads, **geom)
            * weight
        )

    alm = adjoint(maps)
    for _ in range(n_iter):
        residual = maps - synthesis(alm, nside, lmax, spin, nthreads)
        alm += adjoint(residual)
    return alm


def almxfl(alm: np.ndarray, fl: np.ndarray) -> np.ndarray:
    """Multiply alm ``[..., nalm]`` by a function of l ``fl[..., lmax+1]`` (broadcast)."""
    lmax = fl.shape[-1] - 1
    return alm * np.asarray(fl)[..., alm_ell(lmax)]


def cross_spectrum(alm1: np.ndarray, alm2: np.ndarray, lmax: int) -> np.ndarray:
    """C_l = sum_m Re(a1 a2*) / (2l+1) for alm ``[..., nalm]``; returns ``[..., lmax+1]``."""
    ell, m = _alm_lm(lmax)
    prod = (alm1 * np.conj(alm2)).real
    prod = np.where(m > 0, 2.0 * prod, prod)
    flat = prod.reshape(-1, prod.shape[-1])
    sums = np.stack([np.bincount(ell, weights=row, minlength=lmax + 1) for row in flat])
    return sums.reshape((*prod.shape[:-1], lmax + 1)) / (2.0 * np.arange(lmax + 1) + 1.0)


def unit_gaussian_alm(lmax: int, rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``n`` independent complex alm with unit C_l (real, unit variance for m = 0)."""
    size = alm_size(lmax)
    z = rng.standard_normal((n, 2 * size)).view(np.complex128)
    z *= np.sqrt(0.5)
    m0 = lmax + 1  # m = 0 entries come first in the healpy layout
    z[:, :m0] = z[:, :m0].real * np.sqrt(2.0)
    return z


def gaussian_alm(cl: np.ndarray, lmax: int, rng: np.random.Generator) -> np.ndarray:
    """One alm with power spectrum ``cl[lmax+1]``."""
    return almxfl(unit_gaussian_alm(lmax, rng)[0], np.sqrt(np.clip(cl[: lmax + 1], 0, None)))


def correlated_gaussian_alm(cov: np.ndarray, lmax: int, rng: np.random.Generator) -> np.ndarray:
    """alm ``[n, nalm]`` with cross spectra ``cov[n, n, lmax+1]`` (positive semi-definite per l)."""
    n = cov.shape[0]
    z = unit_gaussian_alm(lmax, rng, n)
    per_ell = np.moveaxis(cov[..., : lmax + 1], -1, 0)  # [l, n, n]
    w, v = np.linalg.eigh(per_ell)
    root = v * np.sqrt(np.clip(w, 0, None))[:, None, :]  # root @ root.T = cov per l
    return np.einsum("kij,jk->ik", root[alm_ell(lmax)], z)


def gaussian_beam(fwhm_arcmin: float, lmax: int, spin: int = 2) -> np.ndarray:
    """Gaussian beam transfer b_l for a field of ``spin`` (healpy's ``gauss_beam`` convention)."""
    sigma = np.radians(fwhm_arcmin / 60.0) / np.sqrt(8.0 * np.log(2.0))
    ell = np.arange(lmax + 1)
    return np.exp(-0.5 * (ell * (ell + 1.0) - spin**2) * sigma**2)


def alm_lmax(nalm: int) -> int:
    """The lmax of a triangular (healpy) alm layout of ``nalm`` coefficients."""
    lmax = round((np.sqrt(8 * nalm + 1) - 3) / 2)
    if alm_size(lmax) != nalm:
        raise DataError(f"{nalm} coefficients are not a triangular alm layout")
    return lmax
