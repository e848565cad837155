"""Parametric component separation: the spectral likelihood of kabalan2025 in JAX (float64).

Data ``d[freq, stokes, pix]`` in uK_CMB = A(beta) s + n with three components (CMB,
dust modified blackbody, synchrotron power law) at their reference frequencies and
white noise of inverse variance ``N^-1[freq]`` (or ``[freq, pix]``).  Spectral
parameters beta_d, T_d and beta_s each live on their own patch map.  Per pixel,

    -2 ln L = -(A^T N^-1 d)^T (A^T N^-1 A)^-1 (A^T N^-1 d),   s = (A^T N^-1 A)^-1 A^T N^-1 d.

Fast path: where the noise is homogeneous within each *cell* (a set of pixels sharing
the same three patches), the likelihood only needs the per-cell sufficient statistic
``D_c = sum_{p in c, stokes} d d^T`` (freq x freq), kept as a square root ``L_c L_c^T = D_c``;
its cost is independent of the pixel count.  The optimiser minimises the residual

    chi2/2 = 1/2 sum_c || N^-1/2 (I - A K B^T) L_c ||^2,   B = N^-1 A,  K = (A^T N^-1 A)^-1,

which equals -ln L + 1/2 sum d^T N^-1 d: the same minimum, but computed from residuals it
keeps residual-level precision (the spectral form -1/2 tr(K B^T D B) is a difference of
numbers of the size of the total signal power, and its rounding stalled noiseless fits
at ~3e-5 in T_d).  The per-pixel form serves inhomogeneous noise and is the tests'
reference.  ``nll_*`` return -ln L (up to the usual constant); ``residual_*`` return chi2/2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bmodesep.core import seds
from bmodesep.errors import DataError

jax.config.update("jax_enable_x64", True)

PARAMETERS = seds.SPECTRAL_PARAMETERS
COMPONENTS = ("cmb", "dust", "synchrotron")


class SpectralModel(NamedTuple):
    """Static description of the mixing matrix: band centres and SED reference frequencies."""

    frequencies_ghz: tuple[float, ...]
    dust_freq_ref_ghz: float = 353.0
    sync_freq_ref_ghz: float = 23.0


def mixing_matrix(model: SpectralModel, beta_d, temp_d_k, beta_s):
    """A ``[..., freq, 3]`` (CMB, dust, synchrotron) for parameter arrays of shape ``[...]``."""
    nu = jnp.asarray(model.frequencies_ghz)
    bd, td, bs = (jnp.asarray(x)[..., None] for x in (beta_d, temp_d_k, beta_s))
    dust = seds.dust_sed(nu, bd, td, model.dust_freq_ref_ghz, xp=jnp)
    sync = seds.synchrotron_sed(nu, bs, model.sync_freq_ref_ghz, xp=jnp)
    return jnp.stack([jnp.ones_like(dust), dust, sync], axis=-1)


def _inv3_sym(m):
    """Inverse of symmetric 3x3 matrices ``[..., 3, 3]`` by the adjugate (exact, no pivoting)."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 1], m[..., 1, 2], m[..., 2, 2]
    c00, c01, c02 = d * f - e * e, c * e - b * f, b * e - c * d
    c11, c12, c22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * c00 + b * c01 + c * c02
    adj = jnp.stack(
        [
            jnp.stack([c00, c01, c02], -1),
            jnp.stack([c01, c11, c12], -1),
            jnp.stack([c02, c12, c22], -1),
        ],
        -2,
    )
    return adj / det[..., None, None]


# ---------------------------------------------------------------- patches and cells
class CellLayout(NamedTuple):
    """Pixels of a zone grouped into cells of constant (beta_d, T_d, beta_s) patches."""

    pixels: np.ndarray  # [n_zone] HEALPix indices of the zone's pixels
    cell_of_pixel: np.ndarray  # [n_zone] cell index of each zone pixel
    cell_params: np.ndarray  # [n_cell, 3] index into the flat parameter vector
    pixel_params: np.ndarray  # [n_zone, 3] index into the flat parameter vector
    n_patches: tuple[int, int, int]  # patches of beta_d, T_d, beta_s

    @property
    def n_cells(self) -> int:
        return self.cell_params.shape[0]

    @property
    def n_params(self) -> int:
        return sum(self.n_patches)

    def offsets(self) -> tuple[int, int, int]:
        k = self.n_patches
        return 0, k[0], k[0] + k[1]


def cell_layout(patch_maps: Mapping[str, np.ndarray], zone: np.ndarray) -> CellLayout:
    """Cells from three patch maps (labels 0..K-1 on the zone, -1 elsewhere) and the zone."""
    zone = np.asarray(zone, dtype=bool)
    pixels = np.flatnonzero(zone)
    labels, n_patches = [], []
    for name in PARAMETERS:
        lab = np.asarray(patch_maps[name])
        if lab.shape != zone.shape:
            raise DataError(f"patch map {name} has shape {lab.shape}, zone {zone.shape}")
        if np.any(lab[~zone] >= 0):
            raise DataError(f"patch map {name} labels pixels outside the zone")
        inside = lab[pixels]
        k = int(inside.max()) + 1 if inside.size else 0
        if inside.size == 0 or inside.min() < 0 or np.unique(inside).size != k:
            raise DataError(f"patch map {name}: zone labels must be the contiguous set 0..K-1")
        labels.append(inside)
        n_patches.append(k)
    off = np.cumsum([0, *n_patches[:2]])
    pixel_params = np.stack(labels, axis=1) + off[None]
    cell_params, cell_of_pixel = np.unique(pixel_params, axis=0, return_inverse=True)
    return CellLayout(pixels, cell_of_pixel.ravel(), cell_params, pixel_params, tuple(n_patches))


def pad_layout(layout: CellLayout, n_cells: int, n_patches: Sequence[int]) -> CellLayout:
    """Pad cells and parameter counts to fixed sizes so one compilation serves many layouts.

    Padding cells point at parameter 0 and get zero statistics (no contribution); padding
    parameters touch no cell (zero gradient) and are reported but meaningless.
    """
    if n_cells < layout.n_cells or any(
        p < k for p, k in zip(n_patches, layout.n_patches, strict=True)
    ):
        raise ValueError("padding sizes smaller than the layout")
    new_off = np.cumsum([0, *list(n_patches)[:2]])
    shift = new_off - np.asarray(layout.offsets())

    def remap(idx):
        col = np.searchsorted(np.asarray(layout.offsets()), idx, side="right") - 1
        return idx + shift[col]

    cell_params = np.zeros((n_cells, 3), dtype=np.int64)
    cell_params[: layout.n_cells] = remap(layout.cell_params)
    return CellLayout(
        layout.pixels,
        layout.cell_of_pixel,
        cell_params,
        remap(layout.pixel_params),
        tuple(int(p) for p in n_patches),
    )


def cell_statistics(d_zone, cell_of_pixel, n_cells: int):
    """Square roots ``L[n_cell, freq, freq]`` of D_c = sum over a cell (pixels, Stokes) of d d^T."""
    d = jnp.asarray(d_zone)  # [freq, stokes, n_zone]
    outer = jnp.einsum("fsp,gsp->pfg", d, d)
    stats = jax.ops.segment_sum(outer, jnp.asarray(cell_of_pixel), num_segments=n_cells)
    evals, evecs = jnp.linalg.eigh(stats)
    return evecs * jnp.sqrt(jnp.clip(evals, 0.0, None))[:, None, :]


# ---------------------------------------------------------------- likelihoods
def _split(params, cell_or_pixel_params):
    p = params[cell_or_pixel_params]
    return p[..., 0], p[..., 1], p[..., 2]


def _cell_residuals(bd, td, bs, roots, ninv, model):
    """chi2/2 of each cell's best-fit components, ``[n_cell]``."""
    a = mixing_matrix(model, bd, td, bs)  # [cell, f, 3]
    b = a * ninv[None, :, None]
    k = _inv3_sym(jnp.einsum("cfi,cfj->cij", a, b))
    amplitudes = jnp.einsum("cij,cfj,cfk->cik", k, b, roots)  # [cell, 3, f]
    resid = roots - jnp.einsum("cfi,cik->cfk", a, amplitudes)
    return 0.5 * jnp.einsum("f,cfk->c", ninv, resid**2)


def residual_cells(params, roots, cell_params, ninv, model: SpectralModel):
    """chi2/2 of the best-fit components (the optimiser's objective)."""
    return jnp.sum(_cell_residuals(*_split(params, cell_params), roots, ninv, model))


def residual_cells_fast(params, roots, cell_params, ninv, model: SpectralModel):
    """:func:`residual_cells` through the spectral form: half the cost, signal-level rounding.

    ``1/2 tr(N^-1 D) - 1/2 sum_c tr(K B^T D B)``: the same function, but a difference of
    numbers of the size of the total signal power.  Good for the bulk of a fit; the last
    digits need :func:`residual_cells`.
    """
    a = mixing_matrix(model, *_split(params, cell_params))
    b = a * ninv[None, :, None]
    k = _inv3_sym(jnp.einsum("cfi,cfj->cij", a, b))
    bl = jnp.einsum("cfi,cfk->cik", b, roots)
    return data_term(roots, ninv) - 0.5 * jnp.einsum("cij,cik,cjk->", k, bl, bl)


def cell_residual(p, root, ninv, model: SpectralModel):
    """chi2/2 of one cell: ``p`` its (beta_d, T_d, beta_s), ``root`` its statistic [f, f]."""
    return _cell_residuals(p[None, 0], p[None, 1], p[None, 2], root[None], ninv, model)[0]


def data_term(roots, ninv):
    """1/2 sum d^T N^-1 d, the constant between :func:`residual_cells` and -ln L."""
    return 0.5 * jnp.einsum("f,cfk->", ninv, roots**2)


def nll_cells(params, roots, cell_params, ninv, model: SpectralModel):
    """-ln L = -1/2 sum d^T N^-1 A K A^T N^-1 d from the cell statistics."""
    return residual_cells(params, roots, cell_params, ninv, model) - data_term(roots, ninv)


def curvature_diagonal(params, roots, cell_params, ninv, model: SpectralModel):
    """Exact diagonal of the Hessian, assembled from per-cell 3x3 blocks."""

    def one(p, r):
        return _cell_residuals(p[None, 0], p[None, 1], p[None, 2], r[None], ninv, model)[0]

    hess = jax.vmap(jax.hessian(one))(params[cell_params], roots)  # [cell, 3, 3]
    diag = jnp.diagonal(hess, axis1=1, axis2=2)
    return jnp.zeros_like(params).at[cell_params.ravel()].add(diag.ravel())


def nll_pixels(params, d_zone, ninv_pix, pixel_params, model: SpectralModel):
    """-ln L per pixel: ``d_zone[freq, stokes, pix]``, ``ninv_pix[freq, pix]`` (general noise)."""
    s = reconstruct(params, d_zone, ninv_pix, pixel_params, model)
    a = mixing_matrix(model, *_split(params, pixel_params))  # [pix, f, 3]
    resid = d_zone - jnp.einsum("pfi,isp->fsp", a, s)
    return 0.5 * jnp.sum(ninv_pix[:, None] * resid**2) - 0.5 * jnp.sum(
        ninv_pix[:, None] * d_zone**2
    )


def reconstruct(params, d_zone, ninv_pix, pixel_params, model: SpectralModel):
    """Components s = W(d) ``[3 (cmb, dust, sync), stokes, pix]`` at the fitted parameters."""
    a = mixing_matrix(model, *_split(params, pixel_params))
    b = a * ninv_pix.T[:, :, None]
    k = _inv3_sym(jnp.einsum("pfi,pfj->pij", a, b))
    btd = jnp.einsum("pfi,fsp->psi", b, d_zone)
    return jnp.einsum("pij,psj->isp", k, btd)
