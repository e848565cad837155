"""Patch maps for clustered parametric component separation (kabalan2025).

Spectral parameters are shared within sky patches.  A *patch map* is an int64 HEALPix
RING map ``Int[ndarray, "pix"]`` holding the labels ``0..K-1`` on the pixels of a zone
and ``-1`` outside it; labels are numbered by first occurrence in pixel order, so equal
inputs give identical maps.  Patches come from spherical K-means on the pixel centres
of the zone (:func:`kmeans_patches`), from HEALPix superpixels (:func:`multires_patches`)
or are the whole zone (:func:`single_patch`).

The K-means is written here in JAX (float64): great-circle assignment (largest dot
product with a centroid), centroids as normalised means of the member unit vectors,
k-means++ seeding from a PRNG key, and an objective ``sum(1 - cos)`` whose relative
change stops the iterations.  The [point, centroid] dot products are computed in
chunks of points and reduced in two stages (best block of centroids, then best
centroid in that block), because a plain ``argmax`` over thousands of centroids is
several times slower than the dot products themselves on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bmodesep.core import harmonics
from bmodesep.core.simulate import sky
from bmodesep.errors import ConfigError, DataError

jax.config.update("jax_enable_x64", True)

OUTSIDE = -1
"""Label of the pixels outside the zone."""

_CHUNK_ELEMENTS = 1 << 20  # dot products per chunk of points (8 MB in float64)


class KMeansResult(NamedTuple):
    """Labels ``Int[Array, "point"]`` in ``0..K-1`` and unit centroids ``Float[Array, "K 3"]``."""

    labels: jax.Array
    centroids: jax.Array


# --------------------------------------------------------------------------- K-means


def _layout(n_points: int, n_clusters: int) -> tuple[int, int]:
    """(points per chunk, centroids per block) for the chunked two-stage argmax."""
    chunk = 1 << max(4, round(math.log2(max(1, _CHUNK_ELEMENTS // n_clusters))))
    return min(chunk, n_points), math.ceil(math.sqrt(n_clusters))


def _nearest_centroid(points: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Index of the centroid with the largest dot product with each point, and that cosine.

    points ``[n, 3]``, centroids ``[K, 3]`` -> labels ``[n]`` int, cosines ``[n]``.  Ties go
    to the lowest index, as with ``argmax``.
    """
    n, k = points.shape[0], centroids.shape[0]
    chunk, block = _layout(n, k)
    n_blocks = -(-k // block)
    n_chunks = -(-n // chunk)
    # pad the centroids with copies of centroid 0: a copy never beats the original,
    # which lies in an earlier block; pad the points with zeros, sliced off below
    padded = jnp.concatenate(
        [centroids, jnp.broadcast_to(centroids[:1], (n_blocks * block - k, 3))]
    )
    blocks = padded.reshape(n_blocks, block, 3)
    chunks = jnp.pad(points, ((0, n_chunks * chunk - n), (0, 0))).reshape(n_chunks, chunk, 3)
    offsets = jnp.arange(block)

    def one_chunk(x):
        best_block = jnp.argmax(jnp.einsum("pi,bki->pbk", x, blocks).max(axis=2), axis=1)
        cos = jnp.einsum("pi,pki->pk", x, blocks[best_block])
        index = best_block[:, None] * block + offsets
        cos = jnp.where(index < k, cos, -jnp.inf)  # never a padding label, even at a tie
        within = jnp.argmax(cos, axis=1)
        return best_block * block + within, jnp.take_along_axis(cos, within[:, None], axis=1)[:, 0]

    labels, cos = lax.map(one_chunk, chunks)
    return labels.reshape(-1)[:n], cos.reshape(-1)[:n]


def _kmeans_plus_plus(points: jax.Array, n_clusters: int, key: jax.Array) -> jax.Array:
    """k-means++ seeds ``[K, 3]``: each new seed drawn with probability prop. to ``1 - cos``.

    ``1 - cos`` is half the squared chord to the nearest seed, so this is the usual D^2
    weighting.  A point already chosen has weight 0 and is never drawn again.
    """
    n = points.shape[0]
    first_key, loop_key = jax.random.split(key)
    first = points[jax.random.randint(first_key, (), 0, n)]
    seeds = jnp.zeros((n_clusters, 3), points.dtype).at[0].set(first)
    dist = jnp.maximum(1.0 - points @ first, 0.0)

    def add_seed(i, carry):
        seeds, dist = carry
        cdf = jnp.cumsum(dist)
        # threshold in (0, total]: the first cdf >= threshold has positive weight
        threshold = (1.0 - jax.random.uniform(jax.random.fold_in(loop_key, i))) * cdf[-1]
        index = jnp.minimum(jnp.searchsorted(cdf, threshold, side="left"), n - 1)
        seed = points[index]
        dist = jnp.minimum(dist, jnp.maximum(1.0 - points @ seed, 0.0))
        return seeds.at[i].set(seed), dist

    seeds, _ = lax.fori_loop(1, n_clusters, add_seed, (seeds, dist))
    return seeds


def _update_centroids(
    points: jax.Array, labels: jax.Array, cos: jax.Array, centroids: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Normalised mean of the members of each cluster; empty clusters re-seeded.

    Empty clusters, in index order, take the points farthest from their centroid, the
    farthest first (ties to the lowest pixel index), so the result is deterministic.
    A cluster whose members sum to zero keeps its centroid.  Returns the new centroids
    ``[K, 3]`` and whether any cluster was empty.
    """
    k = centroids.shape[0]
    sums = jax.ops.segment_sum(points, labels, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones_like(labels), labels, num_segments=k)
    norms = jnp.linalg.norm(sums, axis=1, keepdims=True)
    new = jnp.where(norms > 0, sums / jnp.where(norms > 0, norms, 1.0), centroids)
    empty = counts == 0

    def reseed(new):
        farthest = jnp.argsort(cos, stable=True)  # smallest cosine first
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, points.shape[0] - 1)
        return jnp.where(empty[:, None], points[farthest[rank]], new)

    return lax.cond(jnp.any(empty), reseed, lambda new: new, new), jnp.any(empty)


@jax.jit(static_argnames=("n_clusters",))
def _spherical_kmeans(
    points: jax.Array, n_clusters: int, key: jax.Array, max_iter: jax.Array, tol: jax.Array
) -> KMeansResult:
    def step(state):
        centroids, _, objective, count = state
        labels, cos = _nearest_centroid(points, centroids)
        new, any_empty = _update_centroids(points, labels, cos, centroids)
        return new, objective, jnp.where(any_empty, jnp.nan, jnp.sum(1.0 - cos)), count + 1

    def go_on(state):
        _, previous, objective, count = state
        converged = jnp.isfinite(previous) & (jnp.abs(previous - objective) <= tol * previous)
        return (count < max_iter) & ~converged

    # the objective is NaN after an iteration with an empty cluster, so that the loop
    # goes on until every cluster has members (or max_iter)
    start = (_kmeans_plus_plus(points, n_clusters, key), jnp.inf, jnp.inf, 0)
    centroids, *_ = lax.while_loop(go_on, step, start)
    labels, _ = _nearest_centroid(points, centroids)
    return KMeansResult(labels, centroids)


def spherical_kmeans(
    vectors, n_clusters: int, key: jax.Array, max_iter: int = 100, tol: float = 1e-5
) -> KMeansResult:
    """Spherical K-means of unit vectors ``Float[Array, "point 3"]`` into ``n_clusters``.

    Each point goes to the centroid with the largest dot product (smallest great-circle
    distance); each centroid is the normalised mean of its members; empty clusters are
    re-seeded at the points farthest from their centroids.  Seeds are drawn k-means++
    style from ``key``.  Iterations stop when the relative change of the objective
    ``sum(1 - cos)`` (cos to the assigned centroid) is at most ``tol`` with no cluster
    empty, or after ``max_iter``.  The returned labels are the final assignment to the
    returned centroids, so every cluster is used unless points coincide.

    Memory goes as ``n + K`` plus about 8 MB of dot products per chunk of points.
    Compiled once per (n, K); deterministic in (vectors, K, key).
    """
    points = jnp.asarray(vectors, dtype=jnp.float64)
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise DataError(f"K-means needs unit vectors of shape [n, 3], got {points.shape}")
    if not 1 <= n_clusters <= points.shape[0]:
        raise ConfigError(f"K-means needs 1 <= n_clusters <= {points.shape[0]}, got {n_clusters}")
    if max_iter < 1 or not tol >= 0:
        raise ConfigError(f"K-means needs max_iter >= 1 and tol >= 0, got {max_iter}, {tol}")
    return _spherical_kmeans(points, int(n_clusters), key, max_iter, tol)


def kmeans_objective(vectors, labels, centroids) -> float:
    """Mean ``1 - cos`` between each unit vector and the centroid of its label."""
    vectors, centroids = np.asarray(vectors), np.asarray(centroids)
    return float(np.mean(1.0 - np.sum(vectors * centroids[np.asarray(labels)], axis=1)))


# --------------------------------------------------------------------------- patch maps


def relabel_contiguous(labels) -> np.ndarray:
    """Labels renumbered ``0..K-1`` in order of first occurrence; negative labels -> -1.

    ``[5, 5, -1, 2, 5, 9]`` -> ``[0, 0, -1, 1, 0, 2]``.  Returns int64.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {labels.dtype}")
    out = np.full(labels.shape, OUTSIDE, dtype=np.int64)
    inside = labels >= 0
    values, first, inverse = np.unique(labels[inside], return_index=True, return_inverse=True)
    rank = np.empty(values.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(values.size)
    out[inside] = rank[inverse.reshape(-1)]
    return out


def _zone_pixels(zone_mask) -> tuple[np.ndarray, int]:
    """(zone as a boolean map, its nside); DataError if not a non-empty HEALPix mask."""
    zone = np.asarray(zone_mask)
    nside = harmonics.nside_of(zone.size) if zone.ndim == 1 else None
    if nside is None:
        raise DataError(f"zone mask must be a HEALPix map [npix], got shape {zone.shape}")
    if zone.dtype != bool:
        if not np.all((zone == 0) | (zone == 1)):
            raise DataError(f"zone mask must be boolean (or 0/1), got dtype {zone.dtype}")
        zone = zone.astype(bool)
    if not zone.any():
        raise DataError("zone mask holds no pixel")
    return zone, nside


def single_patch(zone_mask) -> np.ndarray:
    """Patch map with one patch: 0 on the zone, -1 outside."""
    zone, _ = _zone_pixels(zone_mask)
    return np.where(zone, 0, OUTSIDE).astype(np.int64)


def multires_patches(zone_mask, patch_nside: int) -> np.ndarray:
    """Patch map of the HEALPix superpixels at ``patch_nside`` restricted to the zone.

    ``patch_nside`` 0 gives one patch; otherwise it must be a power of two no larger
    than the zone's nside.  Labels are numbered by first occurrence in RING order.
    """
    zone, nside = _zone_pixels(zone_mask)
    if patch_nside != 0 and not (
        patch_nside > 0 and patch_nside & (patch_nside - 1) == 0 and patch_nside <= nside
    ):
        raise ConfigError(
            f"patch_nside must be 0 or a power of two <= nside {nside}, got {patch_nside}"
        )
    superpixels = sky.superpixel_patches(nside, patch_nside)
    return relabel_contiguous(np.where(zone, superpixels, OUTSIDE))


def kmeans_patches(zone_mask, n_patches: int, seed: int) -> np.ndarray:
    """Patch map of ``n_patches`` spherical K-means clusters of the zone's pixel centres.

    Deterministic in (zone, n_patches, seed); labels numbered by first occurrence in
    RING order.  ``n_patches`` 1 gives the single patch without running K-means.
    """
    zone, nside = _zone_pixels(zone_mask)
    pixels = np.flatnonzero(zone)
    if not 1 <= n_patches <= pixels.size:
        raise ConfigError(
            f"n_patches must be between 1 and the {pixels.size} pixels of the zone, got {n_patches}"
        )
    if seed < 0:
        raise ConfigError(f"K-means seed must be non-negative, got {seed}")
    if n_patches == 1:
        return single_patch(zone)
    vectors = harmonics.pix2vec(nside, pixels)
    labels, _ = spherical_kmeans(vectors, int(n_patches), jax.random.key(seed))
    patches = np.full(zone.size, OUTSIDE, dtype=np.int64)
    patches[pixels] = np.asarray(labels)
    return relabel_contiguous(patches)


def zone_kmeans_patches(zones: Mapping[str, np.ndarray], n_patches: int, seed: int) -> np.ndarray:
    """A full-sky patch map: ``n_patches`` spherical K-means patches in each zone (as
    :func:`kmeans_patches` makes them for the grid search), numbered zone after zone in
    the order given; the pixels outside every zone form one more patch."""
    zone_list = list(zones.values())
    if not zone_list:
        raise ConfigError("K-means true patches need at least one zone")
    out = np.full(np.asarray(zone_list[0]).size, -1, dtype=np.int64)
    offset = 0
    for mask in zone_list:
        mask = np.asarray(mask, dtype=bool)
        if np.any(out[mask] >= 0):
            raise ConfigError("the zones of K-means true patches overlap")
        labels = kmeans_patches(mask, n_patches, seed)
        out[mask] = labels[mask] + offset
        offset += n_patches
    out[out < 0] = offset
    return out


def validate_patch_map(patch_map, zone_mask, name: str) -> np.ndarray:
    """Check a patch map against its zone; return it as int64.

    DataError naming ``name`` if the shape differs from the zone's, the labels are not
    integers, a pixel outside the zone is not -1, a zone pixel has a negative label,
    or the zone's labels are not the contiguous set ``0..K-1``.
    """
    zone, _ = _zone_pixels(zone_mask)
    patches = np.asarray(patch_map)
    if patches.shape != zone.shape:
        raise DataError(f"patch map {name!r} has shape {patches.shape}, zone has {zone.shape}")
    if not np.issubdtype(patches.dtype, np.integer):
        raise DataError(f"patch map {name!r} must hold integers, got dtype {patches.dtype}")
    outside = patches[~zone]
    if np.any(outside >= 0):
        raise DataError(
            f"patch map {name!r} labels {np.count_nonzero(outside >= 0)} pixels outside "
            "the zone (they must be -1)"
        )
    if np.any(outside != OUTSIDE):
        raise DataError(f"patch map {name!r} has pixels outside the zone that are not -1")
    inside = patches[zone]
    if np.any(inside < 0):
        raise DataError(
            f"patch map {name!r} leaves {np.count_nonzero(inside < 0)} zone pixels "
            "without a patch (negative label)"
        )
    used = np.unique(inside)
    if used[-1] != used.size - 1:
        missing = np.setdiff1d(np.arange(used[-1] + 1), used)
        raise DataError(
            f"patch map {name!r} labels are not contiguous 0..K-1: {missing.size} missing "
            f"(first {missing[:5].tolist()}), largest {used[-1]}"
        )
    return patches.astype(np.int64)
