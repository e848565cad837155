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
    # [n_pair, 3]: (cell, cell, weight 1) for every ordered pair of cells sharing a beta_d
    # patch (the sparsity of the Newton fit's Schur complement); padding rows weigh 0
    cell_pairs: np.ndarray | None = None

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
    return CellLayout(
        pixels,
        cell_of_pixel.ravel(),
        cell_params,
        pixel_params,
        tuple(n_patches),
        beta_d_pairs(cell_params),
    )


def beta_d_pairs(cell_params: np.ndarray) -> np.ndarray:
    """Every ordered pair (self pairs included) of cells with the same beta_d patch, with
    weight 1: ``[n_pair, 3]``."""
    patch = np.asarray(cell_params)[:, 0]
    order = np.argsort(patch, kind="stable")
    sorted_patch = patch[order]
    starts = np.flatnonzero(np.r_[True, sorted_patch[1:] != sorted_patch[:-1]])
    ends = np.r_[starts[1:], patch.size]
    pairs = [
        np.stack(np.meshgrid(order[a:b], order[a:b], indexing="ij"), -1).reshape(-1, 2)
        for a, b in zip(starts, ends, strict=True)
    ]
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return np.concatenate([pairs, np.ones((len(pairs), 1), pairs.dtype)], axis=1).astype(np.int64)


def pad_layout(
    layout: CellLayout, n_cells: int, n_patches: Sequence[int], n_pairs: int | None = None
) -> CellLayout:
    """Pad cells, parameter counts and cell pairs to fixed sizes so one compilation serves
    many layouts.

    Padding cells point at parameter 0 and get zero statistics (no contribution); padding
    parameters touch no cell (zero gradient) and are reported but meaningless; padding
    pairs weigh 0.
    """
    pairs = beta_d_pairs(layout.cell_params) if layout.cell_pairs is None else layout.cell_pairs
    n_pairs = len(pairs) if n_pairs is None else n_pairs
    if (
        n_cells < layout.n_cells
        or n_pairs < len(pairs)
        or any(p < k for p, k in zip(n_patches, layout.n_patches, strict=True))
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
        np.concatenate([pairs, np.zeros((n_pairs - len(pairs), 3), np.int64)]),
    )


class CellIndex(NamedTuple):
    """Zone pixels sorted by cell: cell ``c`` holds ``order[starts[c]:starts[c + 1]]``."""

    order: np.ndarray  # [n_zone]
    starts: np.ndarray  # [n_cells + 1]


def cell_index(cell_of_pixel, n_cells: int) -> CellIndex:
    cell_of_pixel = np.asarray(cell_of_pixel)
    counts = np.bincount(cell_of_pixel, minlength=n_cells)
    return CellIndex(np.argsort(cell_of_pixel, kind="stable"), np.r_[0, np.cumsum(counts)])


def cell_statistics(d_zone, cell_of_pixel, n_cells: int, index: CellIndex | None = None):
    """Square roots ``L[n_cell, freq, freq]`` of D_c = sum over a cell (pixels, Stokes) of
    d d^T (NumPy: one small matrix product per cell; XLA's batched forms were 5-10x
    slower on the CPU).

    A cell with fewer than ``freq / 2`` pixels keeps its data vectors themselves as its
    root (exact); the others take the Cholesky factor of D_c, or, where one of those is
    singular (noiseless maps), the eigen-decomposition square root.
    """
    d = np.asarray(d_zone)  # [freq, stokes, n_zone]
    n_freq = d.shape[0]
    index = cell_index(cell_of_pixel, n_cells) if index is None else index
    rows = np.ascontiguousarray(d[:, :, index.order].transpose(2, 1, 0)).reshape(-1, n_freq)
    roots = np.zeros((n_cells, n_freq, n_freq))
    big = []
    for c in range(n_cells):
        seg = rows[2 * index.starts[c] : 2 * index.starts[c + 1]]
        if seg.shape[0] < n_freq:
            roots[c, :, : seg.shape[0]] = seg.T
        else:
            roots[c] = seg.T @ seg
            big.append(c)
    if big:
        try:
            roots[big] = np.linalg.cholesky(roots[big])
        except np.linalg.LinAlgError:
            evals, evecs = np.linalg.eigh(roots[big])
            roots[big] = evecs * np.sqrt(np.clip(evals, 0.0, None))[:, None, :]
    return roots


# ---------------------------------------------------------------- likelihoods
def _split(params, cell_or_pixel_params):
    p = params[cell_or_pixel_params]
    return p[..., 0], p[..., 1], p[..., 2]


def _cell_residuals(bd, td, bs, roots, ninv, model):
    """chi2/2 of each cell's best-fit components, ``[n_cell]``.

    Written as standard batched products (``[c, i, f] @ [c, f, k]``): on the CPU, XLA ran
    the same contractions in other index orders 2-3x slower (measured).
    """
    a = mixing_matrix(model, bd, td, bs)  # [cell, f, 3]
    bt = jnp.swapaxes(a, 1, 2) * ninv[None, None, :]  # [cell, 3, f]
    k = _inv3_sym(jnp.matmul(bt, a))
    amplitudes = jnp.matmul(k, jnp.matmul(bt, roots))  # [cell, 3, k]
    resid = roots - jnp.matmul(a, amplitudes)
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


# ---------------------------------------------------------------- exact derivatives per cell
# Each cell's chi2/2 is 1/2 tr(S) - 1/2 tr(M^-1 G) with M = A~^T A~, G = A~^T S A~, A~ the
# whitened mixing matrix and S = L~ L~^T the whitened statistic.  Its first and second
# derivatives need only Gram matrices of ten whitened vectors: the three columns of A~ and
# the first and second parameter derivatives of the dust and synchrotron columns.
_BASE = np.array([0, 1, 7])  # the CMB, dust and synchrotron columns among the ten vectors
_COLUMN = (1, 1, 2)  # the column of A each parameter (beta_d, T_d, beta_s) moves
_FIRST = (2, 3, 8)  # d/d(parameter) of that column
_SECOND = {(0, 0): 4, (0, 1): 5, (1, 1): 6, (2, 2): 9}  # second derivatives (others vanish)


def _planck_log_slope(y, temp_k):
    """-d/dT ln(expm1(y/T)) = (y/T^2) / (1 - exp(-y/T)), and its T derivative.

    Written through ``expm1(y/T)``, the very expression of :func:`seds.dust_sed`, so that
    the compiler computes that transcendental once for both (measured: it dominates).
    """
    u = y / temp_k
    e = jnp.expm1(u)
    ratio = (1.0 + e) / e  # 1 / (1 - exp(-u))
    phi = u / temp_k * ratio
    dphi = -phi / temp_k - (u / temp_k**2) * (e - u) * ratio / e
    return phi, dphi


def _gram_matrices(bd, td, bs, roots, ninv, model: SpectralModel):
    """Gram matrices ``V^T V`` and ``V^T S V`` ``[cell, 10, 10]`` of the ten whitened vectors."""
    nu = jnp.asarray(model.frequencies_ghz)
    w = jnp.sqrt(ninv)
    temp = td[:, None]
    dust = seds.dust_sed(nu, bd[:, None], temp, model.dust_freq_ref_ghz, xp=jnp) * w
    sync = seds.synchrotron_sed(nu, bs[:, None], model.sync_freq_ref_ghz, xp=jnp) * w
    log_d = jnp.log(nu / model.dust_freq_ref_ghz)
    log_s = jnp.log(nu / model.sync_freq_ref_ghz)
    phi, dphi = _planck_log_slope(seds.H_OVER_K_K_PER_GHZ * nu, temp)
    phi0, dphi0 = _planck_log_slope(seds.H_OVER_K_K_PER_GHZ * model.dust_freq_ref_ghz, temp)
    tau, dtau = phi - phi0, dphi - dphi0  # d ln(dust)/dT and its T derivative
    vectors = jnp.stack(
        [
            jnp.broadcast_to(w, dust.shape),
            dust,
            log_d * dust,
            tau * dust,
            log_d**2 * dust,
            log_d * tau * dust,
            (tau**2 + dtau) * dust,
            sync,
            log_s * sync,
            log_s**2 * sync,
        ],
        axis=1,
    )  # [cell, 10, f]; these index orders ran 2-3x faster than others on the CPU
    projected = jnp.matmul(vectors, roots * w[None, :, None])  # [cell, 10, k]
    return (
        jnp.einsum("caf,cbf->cab", vectors, vectors),
        jnp.einsum("cak,cbk->cab", projected, projected),
    )


def cell_derivatives(params, roots, cell_params, ninv, model: SpectralModel):
    """Exact gradient ``[cell, 3]`` and Hessian ``[cell, 3, 3]`` of each cell's chi2/2
    with respect to its (beta_d, T_d, beta_s), in closed form.

    chi2/2 = 1/2 tr S - q/2 with q = tr(X G), X = M^-1, Y = X G X (M = A^T A, G = A^T S A,
    whitened).  A parameter moves one column j of A, so M_a = e_j r_a^T + r_a e_j^T (and
    G_a likewise with s_a): every trace of the first and second derivatives of q reduces to
    products of 3-vectors and entries of X and Y, e.g. dq_a = 2 (X s_a)_j - 2 (Y r_a)_j.
    Agrees with autodiff Hessians of the residual to ~1e-12 relative (the spectral form's
    rounding, harmless for a Newton step), at a fraction of their cost (BENCHMARKS.md).
    """
    gam, sig = _gram_matrices(*_split(params, cell_params), roots, ninv, model)
    col = np.array(_COLUMN)
    first = np.array(_FIRST)
    m = gam[:, _BASE][:, :, _BASE]
    g = sig[:, _BASE][:, :, _BASE]
    x = _inv3_sym(m)
    y = jnp.matmul(jnp.matmul(x, g), x)
    r = gam[:, first][:, :, _BASE]  # [c, a, 3]: d(column)/d(parameter a) . columns
    s = sig[:, first][:, :, _BASE]
    xr = jnp.einsum("cij,caj->cai", x, r)
    xs = jnp.einsum("cij,caj->cai", x, s)
    yr = jnp.einsum("cij,caj->cai", y, r)
    pick = np.arange(3)
    grad = 2.0 * xs[:, pick, col] - 2.0 * yr[:, pick, col]
    xjj = x[:, col[:, None], col[None, :]]  # [c, a, b] = X[j_a, j_b]
    yjj = y[:, col[:, None], col[None, :]]
    # second derivatives: cross terms of the two moved columns, and second-derivative vectors
    t1 = 2.0 * xjj * sig[:, first[:, None], first[None, :]]
    t6 = 2.0 * yjj * gam[:, first[:, None], first[None, :]]
    for (a, b), v in _SECOND.items():
        j = _COLUMN[a]
        extra_x = 2.0 * jnp.einsum("ci,ci->c", x[:, j], sig[:, v, _BASE])
        extra_y = 2.0 * jnp.einsum("ci,ci->c", y[:, j], gam[:, v, _BASE])
        t1 = t1.at[:, a, b].add(extra_x)
        t6 = t6.at[:, a, b].add(extra_y)
        if a != b:
            t1 = t1.at[:, b, a].add(extra_x)
            t6 = t6.at[:, b, a].add(extra_y)
    # K[a, b] = tr(X M_b X G_a), J[a, b] = tr(X M_b Y M_a); v[c, a, b] = (V r_a)_{j_b}
    xr_j, xs_j, yr_j = xr[:, :, col], xs[:, :, col], yr[:, :, col]
    r_xs = jnp.einsum("cbi,cai->cab", r, xs)  # r_b . X s_a
    r_yr = jnp.einsum("cbi,cai->cab", r, yr)  # r_b . Y r_a
    r_xr = jnp.einsum("cai,cbi->cab", r, xr)  # r_a . X r_b
    xr_t, yr_t = jnp.swapaxes(xr_j, 1, 2), jnp.swapaxes(yr_j, 1, 2)  # (X r_b)_{j_a}, ...
    k = 2.0 * xr_t * xs_j + 2.0 * xjj * r_xs
    j_ab = yr_t * xr_j + xjj * r_yr + jnp.swapaxes(yjj, 1, 2) * r_xr + yr_j * xr_t
    hess = t1 - t6 - k - jnp.swapaxes(k, 1, 2) + j_ab + jnp.swapaxes(j_ab, 1, 2)
    return -0.5 * grad, -0.5 * hess


def curvature_diagonal(params, roots, cell_params, ninv, model: SpectralModel):
    """Exact diagonal of the Hessian, assembled from the per-cell 3x3 blocks."""
    _, hess = cell_derivatives(params, roots, cell_params, ninv, model)
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


def cell_weights(params, ninv, cell_params, model: SpectralModel):
    """The component weights ``W_c = K B^T`` ``[cell, 3, freq]`` of each cell (noise
    homogeneous per band, ``ninv[freq]``): s_p = W_c d_p for every pixel of cell c."""
    a = mixing_matrix(model, *_split(params, cell_params))  # [cell, f, 3]
    b = a * ninv[None, :, None]
    k = _inv3_sym(jnp.einsum("cfi,cfj->cij", a, b))
    return jnp.einsum("cij,cfj->cif", k, b)


def apply_weights(weights, d_zone, cell_of_pixel):
    """Components ``[n_comp, stokes, pix]`` from per-cell weights ``[cell, n_comp, freq]``."""
    w = np.asarray(weights)[np.asarray(cell_of_pixel)]  # [pix, comp, f]
    return np.einsum("pif,fsp->isp", w, np.asarray(d_zone), optimize=True)
