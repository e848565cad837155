"""Angular power spectra of masked Q/U maps, binning, and the residuals of kabalan2025 sec. 4.

* pseudo-spectra: spin-2 analysis (ducc0) of the masked maps, ``C~_l = sum_m |a_lm|^2/(2l+1)``;
* the f_sky correction of the paper: ``C_l = C~_l / f_sky`` with ``f_sky = <w^2>``;
* optionally band powers with the pseudo-C_l (MASTER) correction: the E/B mode-coupling matrices
  ``M+-_{l1 l2} = (2 l2 + 1)/(8 pi) sum_l3 (2 l3 + 1) W_l3 (l1 l2 l3; 2 -2 0)^2
  [1 +- (-1)^(l1+l2+l3)]`` (W the mask's power spectrum), binned and inverted:
  ``<C~^EE> = M+ C^EE + M- C^BB`` and ``<C~^BB> = M- C^EE + M+ C^BB``;
* residuals (sec. 4): systematic ``C_l(W(d_fg))``, total ``<C_l(s^(n) - s_true)>_n``,
  statistical = total - systematic.
Spectra are C_l in uK_CMB^2 (not D_l) from l = 0, except MASTER band powers (of D_l);
``BBEstimator`` is the one the r stage uses (either kind, over its multipole range).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import ducc0
import numpy as np

from bmodesep.core import harmonics


class Binning(NamedTuple):
    """Bins ``[edges[b], edges[b+1])`` of multipoles with uniform weights."""

    edges: np.ndarray

    @classmethod
    def linear(cls, lmin: int, lmax: int, width: int) -> Binning:
        edges = np.arange(lmin, lmax + 2, width)
        if edges[-1] < lmax + 1:
            edges = np.append(edges, lmax + 1)
        return cls(edges)

    @property
    def n_bins(self) -> int:
        return self.edges.size - 1

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[:-1] + self.edges[1:] - 1)

    def matrix(self, lmax: int) -> np.ndarray:
        """P ``[n_bins, lmax+1]``: the bin average."""
        p = np.zeros((self.n_bins, lmax + 1))
        for b in range(self.n_bins):
            lo, hi = self.edges[b], min(self.edges[b + 1], lmax + 1)
            p[b, lo:hi] = 1.0 / (hi - lo)
        return p

    def bin(self, cl: np.ndarray) -> np.ndarray:
        return cl @ self.matrix(cl.shape[-1] - 1).T


def masked_pseudo_spectra(qu: np.ndarray, mask: np.ndarray, lmax: int, n_iter: int = 3):
    """(EE, BB) pseudo-spectra ``[..., 2, lmax+1]`` of ``qu[..., 2, npix]`` times ``mask``."""
    nside = int(np.sqrt(mask.size / 12))
    flat = qu.reshape(-1, 2, qu.shape[-1])
    out = np.empty((flat.shape[0], 2, lmax + 1))
    for i, m in enumerate(flat):
        alm = harmonics.analysis(m * mask[None], nside, lmax, spin=2, n_iter=n_iter)
        out[i, 0] = harmonics.cross_spectrum(alm[0], alm[0], lmax)
        out[i, 1] = harmonics.cross_spectrum(alm[1], alm[1], lmax)
    return out.reshape((*qu.shape[:-2], 2, lmax + 1))


def fsky(mask: np.ndarray) -> float:
    """Effective sky fraction ``<w^2>`` of a (possibly apodised) mask."""
    return float(np.mean(np.asarray(mask, dtype=float) ** 2))


def mask_power(mask: np.ndarray, lmax: int) -> np.ndarray:
    """W_l of the mask up to ``lmax``; zero above 3 nside - 1, where the map has no modes."""
    nside = int(np.sqrt(mask.size / 12))
    top = min(lmax, 3 * nside - 1)
    alm = harmonics.analysis(np.asarray(mask, float), nside, top, spin=0, n_iter=3)[0]
    out = np.zeros(lmax + 1)
    out[: top + 1] = harmonics.cross_spectrum(alm, alm, top)
    return out


def coupling_matrices(mask_cl: np.ndarray, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Spin-2 mode-coupling matrices ``M+`` and ``M-`` ``[lmax+1, lmax+1]`` (l < 2 left zero)."""
    return _coupling(tuple(np.asarray(mask_cl, float)), lmax)


@lru_cache(maxsize=8)
def _coupling(mask_cl: tuple, lmax: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(mask_cl)
    l3max = w.size - 1
    plus = np.zeros((lmax + 1, lmax + 1))
    minus = np.zeros((lmax + 1, lmax + 1))
    for l1 in range(2, lmax + 1):
        for l2 in range(2, lmax + 1):
            l3min, symbols = ducc0.misc.wigner3j_int(l1, l2, 2, -2)  # (l3 l1 l2; 0 2 -2)
            l3 = l3min + np.arange(symbols.size)
            keep = l3 <= l3max
            l3, s2 = l3[keep], symbols[keep] ** 2
            weight = (2 * l3 + 1) * w[l3] * s2
            even = (l1 + l2 + l3) % 2 == 0
            plus[l1, l2] = weight[even].sum() * 2.0
            minus[l1, l2] = weight[~even].sum() * 2.0
    norm = (2 * np.arange(lmax + 1) + 1)[None, :] / (8 * np.pi)
    return plus * norm, minus * norm


def dl_factor(lmax: int) -> np.ndarray:
    """l(l+1)/2pi, the factor from C_l to D_l."""
    ell = np.arange(lmax + 1)
    return ell * (ell + 1) / (2 * np.pi)


def master_bandpowers(
    pseudo_ee_bb: np.ndarray, mask: np.ndarray, binning: Binning, lmax: int
) -> np.ndarray:
    """Decoupled (EE, BB) band powers of D_l ``[..., 2, n_bins]`` (binned MASTER).

    The unknowns are the bin averages of D_l = l(l+1) C_l / 2pi, taken constant within
    a bin (D_l of CMB and foregrounds is much flatter than C_l).
    """
    plus, minus = coupling_matrices(mask_power(mask, 2 * lmax), lmax)
    p = binning.matrix(lmax)
    with np.errstate(divide="ignore"):
        to_cl = np.where(np.arange(lmax + 1) >= 2, 1.0 / dl_factor(lmax), 0.0)
    q = (p > 0).T * to_cl[:, None]  # a band power of D_l expanded to C_l
    p_dl = p * dl_factor(lmax)[None]  # bin average of D_l
    mp, mm = p_dl @ plus @ q, p_dl @ minus @ q
    full = np.block([[mp, mm], [mm, mp]])
    pseudo = np.concatenate(
        [pseudo_ee_bb[..., 0, :] @ p_dl.T, pseudo_ee_bb[..., 1, :] @ p_dl.T], axis=-1
    )
    solved = np.linalg.solve(full, pseudo[..., None])[..., 0]
    nb = binning.n_bins
    return np.stack([solved[..., :nb], solved[..., nb:]], axis=-2)


def bb_spectrum(
    qu: np.ndarray, mask: np.ndarray, lmax: int, binning: Binning | None = None, n_iter: int = 3
) -> np.ndarray:
    """BB C_l of masked maps with the paper's f_sky correction (binned if asked)."""
    bb = masked_pseudo_spectra(qu, mask, lmax, n_iter)[..., 1, :] / fsky(mask)
    return bb if binning is None else binning.bin(bb)


def bb_bandpowers(
    qu: np.ndarray, mask: np.ndarray, lmax: int, binning: Binning, n_iter: int = 3
) -> np.ndarray:
    """BB band powers of D_l with the pseudo-C_l mode-coupling (E/B leakage) correction."""
    pseudo = masked_pseudo_spectra(qu, mask, lmax, n_iter)
    return master_bandpowers(pseudo, mask, binning, lmax)[..., 1, :]


class BBEstimator(NamedTuple):
    """The BB spectrum of the r stage over the multipoles ``lmin..lmax`` it uses.

    ``bin_width`` None: per-multipole C_l with the paper's f_sky correction.  Otherwise
    MASTER band powers of D_l (E/B leakage and mode coupling corrected), solved over bins
    of this width from l = 2, keeping the bins that start at or above ``lmin``.  Each
    estimator has its theory counterpart (C_l, or the bin average of D_l) and its number
    of modes per element, f_sky sum (2l + 1), for the likelihood.
    """

    lmin: int
    lmax: int
    bin_width: int | None = None

    @property
    def binning(self) -> Binning:
        return Binning.linear(2, self.lmax, self.bin_width)

    @property
    def _kept(self) -> np.ndarray:
        return self.binning.edges[:-1] >= self.lmin

    @property
    def ell(self) -> np.ndarray:
        """Multipoles, or bin centres, of the elements."""
        if self.bin_width is None:
            return np.arange(self.lmin, self.lmax + 1)
        return self.binning.centres[self._kept]

    @property
    def units(self) -> str:
        return "uK_CMB^2" if self.bin_width is None else "uK_CMB^2 (D_l band powers)"

    def measure(self, qu: np.ndarray, mask: np.ndarray, n_iter: int = 3) -> np.ndarray:
        """Spectra ``[..., n]`` of masked full-sky maps ``qu[..., 2, npix]``."""
        if self.bin_width is None:
            return bb_spectrum(qu, mask, self.lmax, n_iter=n_iter)[..., self.lmin :]
        return bb_bandpowers(qu, mask, self.lmax, self.binning, n_iter)[..., self._kept]

    def theory(self, cl: np.ndarray) -> np.ndarray:
        """Counterpart ``[n]`` of a theory C_l given from l = 0."""
        cl = np.asarray(cl)[: self.lmax + 1]
        if self.bin_width is None:
            return cl[self.lmin :]
        return self.binning.bin(cl * dl_factor(self.lmax))[self._kept]

    def modes(self, fsky: float) -> np.ndarray:
        """f_sky sum (2l + 1) per element: the weights of eq. 15."""
        per_l = fsky * (2 * np.arange(self.lmax + 1) + 1.0)
        if self.bin_width is None:
            return per_l[self.lmin :]
        return (self.binning.matrix(self.lmax) > 0).astype(float)[self._kept] @ per_l


class Residuals(NamedTuple):
    total: np.ndarray  # <C_l(s^(n) - s_true)>_n
    systematic: np.ndarray  # C_l(W(d_fg))
    statistical: np.ndarray  # total - systematic


def residual_spectra(
    cmb_hat: np.ndarray,
    cmb_true: np.ndarray,
    systematic_cmb: np.ndarray,
    mask: np.ndarray,
    estimator: BBEstimator,
) -> Residuals:
    """Residual BB spectra of kabalan2025 eqs. 11-13 from reconstructed CMB maps.

    ``cmb_hat[n, 2, npix]`` per noise realisation, ``cmb_true[2, npix]``, ``systematic_cmb``
    the CMB of W(d_fg) ``[2, npix]``; maps are full-sky arrays (zero outside the mask).
    """
    total = estimator.measure(cmb_hat - cmb_true[None], mask).mean(axis=0)
    syst = estimator.measure(systematic_cmb, mask)
    return Residuals(total, syst, total - syst)
