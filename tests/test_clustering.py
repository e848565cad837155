import healpy as hp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmodesep.core.compsep.clustering import (
    _layout,
    _nearest_centroid,
    _update_centroids,
    kmeans_objective,
    kmeans_patches,
    multires_patches,
    relabel_contiguous,
    single_patch,
    spherical_kmeans,
    validate_patch_map,
    zone_kmeans_patches,
)
from bmodesep.core.simulate.sky import superpixel_patches
from bmodesep.errors import ConfigError, DataError


def pixel_z(nside):
    return hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]


def clustered_points(n_per_centre=30, sigma_rad=0.02, seed=1):
    """Points scattered by sigma_rad around the 12 nside-1 pixel centres, shuffled."""
    rng = np.random.default_rng(seed)
    centres = np.stack(hp.pix2vec(1, np.arange(12)), axis=-1)
    truth = np.repeat(np.arange(12), n_per_centre)
    points = centres[truth] + sigma_rad * rng.normal(size=(truth.size, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    order = rng.permutation(truth.size)
    return points[order], truth[order], centres


def irregular_zone(nside=8):
    """A cap of about 120 pixels around an off-axis direction, cut by a plane."""
    vec = np.stack(hp.pix2vec(nside, np.arange(hp.nside2npix(nside))), axis=-1)
    centre = np.array([0.6, 0.3, 0.74]) / np.linalg.norm([0.6, 0.3, 0.74])
    return (vec @ centre > 0.75) & (vec[:, 0] < 0.55)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_finds_well_separated_clusters(seed):
    points, truth, centres = clustered_points()
    labels, centroids = spherical_kmeans(points, 12, jax.random.key(seed))
    labels, centroids = np.asarray(labels), np.asarray(centroids)
    pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 12 and len(set(labels.tolist())) == 12
    # each centroid is the normalised mean of its cluster, near the true centre
    for t, found in pairs:
        mean = points[truth == t].mean(axis=0)
        np.testing.assert_allclose(centroids[found], mean / np.linalg.norm(mean), atol=1e-12)
        assert centroids[found] @ centres[t] > np.cos(0.03)


def test_kmeans_labels_are_the_assignment_to_the_returned_centroids():
    points, _, _ = clustered_points(sigma_rad=0.3, seed=4)
    labels, centroids = spherical_kmeans(points, 7, jax.random.key(3))
    nearest = np.argmax(points @ np.asarray(centroids).T, axis=1)
    np.testing.assert_array_equal(np.asarray(labels), nearest)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-12)


def test_kmeans_iterates_to_a_fixed_point():
    points, _, _ = clustered_points(sigma_rad=0.3, seed=4)
    labels, centroids = spherical_kmeans(points, 7, jax.random.key(3), tol=0.0)
    labels = np.asarray(labels)
    sums = np.stack([points[labels == k].sum(axis=0) for k in range(7)])
    np.testing.assert_allclose(centroids, sums / np.linalg.norm(sums, axis=1, keepdims=True))
    one_step = spherical_kmeans(points, 7, jax.random.key(3), max_iter=1)
    assert kmeans_objective(points, labels, centroids) < kmeans_objective(points, *one_step)


@pytest.mark.parametrize(("n_points", "n_centroids"), [(1000, 2999), (500, 37), (50, 1)])
def test_chunked_two_stage_assignment_is_the_plain_argmax(n_points, n_centroids):
    rng = np.random.default_rng(n_centroids)
    points, centroids = rng.normal(size=(2, max(n_points, n_centroids), 3))
    points, centroids = points[:n_points], centroids[:n_centroids]
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    labels, cos = jax.jit(_nearest_centroid)(points, centroids)
    dots = points @ centroids.T
    np.testing.assert_array_equal(labels, np.argmax(dots, axis=1))
    np.testing.assert_allclose(cos, dots.max(axis=1), rtol=1e-12)
    if n_centroids == 2999:  # several chunks of points, padded blocks of centroids
        chunk, block = _layout(n_points, n_centroids)
        assert n_points % chunk and n_centroids % block


def test_kmeans_one_cluster_is_the_normalised_mean():
    points, _, _ = clustered_points(seed=5)
    labels, centroids = spherical_kmeans(points[:40], 1, jax.random.key(0))
    mean = points[:40].mean(axis=0)
    np.testing.assert_array_equal(np.asarray(labels), 0)
    np.testing.assert_allclose(centroids[0], mean / np.linalg.norm(mean), atol=1e-12)


def test_kmeans_with_as_many_clusters_as_points_uses_every_label():
    points = np.stack(hp.pix2vec(2, np.arange(48)), axis=-1)
    labels, centroids = spherical_kmeans(points, 48, jax.random.key(7))
    assert sorted(np.asarray(labels).tolist()) == list(range(48))
    assert kmeans_objective(points, labels, centroids) == pytest.approx(0.0, abs=1e-12)


def test_empty_clusters_are_reseeded_at_the_farthest_points():
    points = jnp.asarray(np.stack(hp.pix2vec(1, np.arange(5)), axis=-1))
    labels = jnp.array([0, 0, 1, 1, 1])
    cos = jnp.array([0.9, 0.2, 0.95, 0.5, 0.99])  # point 1 farthest, then point 3
    old = jnp.asarray(np.eye(4)[:, :3])
    new, any_empty = _update_centroids(points, labels, cos, old)
    assert bool(any_empty)
    np.testing.assert_allclose(new[2], points[1])
    np.testing.assert_allclose(new[3], points[3])
    mean = points[:2].sum(axis=0)
    np.testing.assert_allclose(new[0], mean / jnp.linalg.norm(mean))


def test_kmeans_rejects_bad_inputs():
    points = np.stack(hp.pix2vec(1, np.arange(12)), axis=-1)
    with pytest.raises(ConfigError, match="n_clusters"):
        spherical_kmeans(points, 13, jax.random.key(0))
    with pytest.raises(DataError, match=r"\[n, 3\]"):
        spherical_kmeans(points[:, :2], 2, jax.random.key(0))


def test_kmeans_patches_are_deterministic_in_the_seed_and_contiguous():
    zone = irregular_zone()
    first = kmeans_patches(zone, 10, seed=3)
    np.testing.assert_array_equal(first, kmeans_patches(zone, 10, seed=3))
    assert not np.array_equal(first, kmeans_patches(zone, 10, seed=4))
    validate_patch_map(first, zone, "kmeans")
    assert first.max() == 9
    # numbered by first occurrence in RING order
    labels = first[zone]
    assert np.all(np.diff(np.unique(labels, return_index=True)[1]) > 0)


def test_kmeans_patches_use_every_label_even_when_crowded():
    zone = irregular_zone()
    n_patches = zone.sum() - 5
    patches = kmeans_patches(zone, n_patches, seed=0)
    validate_patch_map(patches, zone, "crowded")
    assert patches.max() == n_patches - 1


def test_kmeans_patches_with_too_many_patches_is_a_config_error():
    zone = irregular_zone()
    with pytest.raises(ConfigError, match="n_patches"):
        kmeans_patches(zone, zone.sum() + 1, seed=0)
    with pytest.raises(ConfigError, match="n_patches"):
        kmeans_patches(zone, 0, seed=0)
    with pytest.raises(DataError, match="no pixel"):
        kmeans_patches(np.zeros(hp.nside2npix(4), bool), 1, seed=0)


def test_single_patch_everywhere():
    zone = pixel_z(8) > 0.3
    expected = np.where(zone, 0, -1)
    np.testing.assert_array_equal(single_patch(zone), expected)
    np.testing.assert_array_equal(kmeans_patches(zone, 1, seed=5), expected)
    np.testing.assert_array_equal(multires_patches(zone, 0), expected)
    assert single_patch(zone).dtype == np.int64


@pytest.mark.parametrize(
    ("zone_kind", "n_expected"),
    # nside 4 has 88 pixels north of the equator and 16 on it, whose children straddle it
    [("full", 192), ("north", 88 + 16), ("south_of_equator_ring", 88)],
)
def test_multires_patch_counts_and_nesting(zone_kind, n_expected):
    z = pixel_z(16)
    superpixels = superpixel_patches(16, 4)
    equatorial = np.isin(superpixels, np.flatnonzero(pixel_z(4) == 0))
    zone = {
        "full": np.ones(z.size, bool),
        "north": z > 0,
        "south_of_equator_ring": (z < 0) & ~equatorial,
    }[zone_kind]
    patches = multires_patches(zone, 4)
    validate_patch_map(patches, zone, "multires")
    assert patches.max() + 1 == n_expected
    # each patch is the zone part of exactly one superpixel, and vice versa
    pairs = set(zip(patches[zone].tolist(), superpixels[zone].tolist(), strict=True))
    assert len(pairs) == n_expected == len(set(superpixels[zone].tolist()))


def test_multires_rejects_bad_patch_nside():
    zone = np.ones(hp.nside2npix(8), bool)
    for bad in (3, 16, -2):
        with pytest.raises(ConfigError, match="patch_nside"):
            multires_patches(zone, bad)


def test_relabel_contiguous_orders_by_first_occurrence():
    np.testing.assert_array_equal(
        relabel_contiguous([5, 5, -1, 2, 5, 9, -3]), [0, 0, -1, 1, 0, 2, -1]
    )
    with pytest.raises(DataError, match="integers"):
        relabel_contiguous([0.0, 1.0])


@pytest.fixture
def zone_and_map():
    zone = pixel_z(4) > 0.2
    return zone, multires_patches(zone, 2)


def test_validate_patch_map_accepts_a_good_map(zone_and_map):
    zone, patches = zone_and_map
    out = validate_patch_map(patches.astype(np.int32), zone, "good")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, patches)


def _label_outside(zone, patches):
    patches[np.flatnonzero(~zone)[0]] = 0


def _unlabel_inside(zone, patches):
    patches[np.flatnonzero(zone)[0]] = -1


def _leave_gap(zone, patches):
    patches[patches == patches.max()] += 2


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_label_outside, "outside the zone"),
        (_unlabel_inside, "without a patch"),
        (_leave_gap, "not contiguous"),
    ],
)
def test_validate_patch_map_names_each_problem(zone_and_map, spoil, problem):
    zone, patches = zone_and_map
    spoil(zone, patches)
    with pytest.raises(DataError, match=f"'dust_beta'.*{problem}"):
        validate_patch_map(patches, zone, "dust_beta")


def test_validate_patch_map_rejects_wrong_shape_and_type(zone_and_map):
    zone, patches = zone_and_map
    with pytest.raises(DataError, match=r"'p'.*shape"):
        validate_patch_map(patches[:-1], zone, "p")
    with pytest.raises(DataError, match=r"'p'.*integers"):
        validate_patch_map(patches.astype(float), zone, "p")


def test_zone_kmeans_patches_are_the_grids_kmeans_in_each_zone():
    nside = 16
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    zones = {"north": z > 0.5, "south": z < -0.5}
    labels = zone_kmeans_patches(zones, 6, 3)
    # 6 patches per zone, numbered zone after zone, one more patch for the rest of the sky
    assert set(labels[zones["north"]]) == set(range(6))
    assert set(labels[zones["south"]]) == set(range(6, 12))
    rest = ~(zones["north"] | zones["south"])
    assert set(labels[rest]) == {12}
    # the same partition as the grid search's K-means of that zone with that seed
    grid = kmeans_patches(zones["south"], 6, 3)
    pairs = set(zip(grid[zones["south"]], labels[zones["south"]], strict=True))
    assert len(pairs) == 6
    with pytest.raises(ConfigError, match="overlap"):
        zone_kmeans_patches({"a": z > 0, "b": z > 0.5}, 2, 0)
