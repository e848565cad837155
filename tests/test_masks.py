import healpy as hp
import numpy as np
import pytest

from bmodesep.core.simulate.masks import (
    MASK_NAMES,
    ZONE_NAMES,
    galactic_zones,
    latitude_masks,
    masks_from_planck_maps,
    smoothed_polarised_intensity,
    threshold_masks,
)
from bmodesep.errors import DataError

FRACTIONS = {"GAL020": 0.2, "GAL040": 0.4, "GAL060": 0.6}


def galactic_intensity(nside):
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    rng = np.random.default_rng(0)
    return np.exp(-np.abs(z) / 0.3) * (1 + 0.2 * rng.standard_normal(z.size))


def test_masks_have_their_sky_fractions_and_are_nested():
    nside = 32
    masks = threshold_masks(galactic_intensity(nside), FRACTIONS)
    npix = hp.nside2npix(nside)
    for name, f in FRACTIONS.items():
        assert abs(masks[name].mean() - f) <= 1 / npix
    assert np.all(masks["GAL020"] <= masks["GAL040"])
    assert np.all(masks["GAL040"] <= masks["GAL060"])


def test_zones_partition_gal060_into_six_halves():
    nside = 32
    masks = threshold_masks(galactic_intensity(nside), FRACTIONS)
    zones = galactic_zones(masks)
    assert set(zones) == set(ZONE_NAMES)
    stacked = np.stack([zones[z] for z in ZONE_NAMES]).astype(int)
    assert np.all(stacked.sum(0) <= 1)
    assert np.array_equal(stacked.sum(0).astype(bool), masks["GAL060"])
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    assert np.all(z[zones["GAL020_U"]] >= 0) and np.all(z[zones["GAL020_L"]] < 0)
    assert np.array_equal(zones["GAL040_U"] | zones["GAL040_L"], masks["GAL040"] & ~masks["GAL020"])


def test_smoothing_keeps_a_constant_intensity():
    nside = 16
    qu = np.stack([np.full(hp.nside2npix(nside), 3.0), np.full(hp.nside2npix(nside), 4.0)])
    assert np.allclose(smoothed_polarised_intensity(qu, nside, 10.0), 5.0, rtol=1e-4)


def test_planck_masks_downgrade_and_check_nesting():
    nside_in, nside = 32, 8
    inten = galactic_intensity(nside_in)
    masks_hi = threshold_masks(inten, FRACTIONS)
    maps = {n: masks_hi[n].astype(float) for n in MASK_NAMES}
    low = masks_from_planck_maps(maps, nside, "planck.fits")
    assert low["GAL020"].size == hp.nside2npix(nside)
    for n, f in FRACTIONS.items():
        assert abs(low[n].mean() - f) < 0.05
    bad = dict(maps, GAL040=np.zeros_like(maps["GAL040"]))
    with pytest.raises(DataError, match="GAL020 is not contained in GAL040"):
        masks_from_planck_maps(bad, nside, "planck.fits")
    nan = dict(maps, GAL060=np.full_like(maps["GAL060"], np.nan))
    with pytest.raises(DataError, match=r"planck\.fits: mask GAL060 contains NaN"):
        masks_from_planck_maps(nan, nside, "planck.fits")


def test_latitude_masks_are_nested_exact_and_independent_of_the_sky():
    nside = 16
    fractions = {"GAL020": 0.2, "GAL040": 0.4, "GAL060": 0.6}
    m = latitude_masks(nside, fractions)
    npix = hp.nside2npix(nside)
    for name, f in fractions.items():
        assert m[name].sum() == round(f * npix)
    assert np.all(m["GAL020"] <= m["GAL040"]) and np.all(m["GAL040"] <= m["GAL060"])
    z = np.abs(hp.pix2vec(nside, np.arange(npix))[2])
    # every kept pixel lies at a higher latitude than every masked one
    assert z[m["GAL020"]].min() >= z[~m["GAL020"]].max()
