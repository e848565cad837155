"""The masked analysis of duivenvoorden2025 (Appendix A): footprint, masked simulator,
fixed-foreground test sets."""

import healpy as hp
import numpy as np
import pytest
from conftest import tiny_config

from bmodesep.config import validate_config
from bmodesep.core import harmonics
from bmodesep.core.npe import prior, simulator
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate import footprint as fp
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import io, sims
from bmodesep.products.npe import read_chunks
from bmodesep.settings import npe_setup
from bmodesep.stages import npe
from bmodesep.stages import simulate as simulate_stage


def colatitude(nside):
    return hp.pix2ang(nside, np.arange(12 * nside * nside))[0]


def test_apodisation_is_the_cosine_of_the_distance_to_the_edge():
    nside, radius, apo = 64, 40.0, 10.0
    support = fp.cap_support(nside, (0.0, 90.0), radius, 0.0)  # a cap on the north pole
    mask = fp.apodise(support, apo)
    theta = np.degrees(colatitude(nside))
    d = radius - theta
    expected = np.where(d < apo, 0.5 * (1 - np.cos(np.pi * d / apo)), 1.0)
    pixel = np.degrees(hp.nside2resol(nside))
    inside = support & (d > pixel) & (d < apo - pixel)
    # distances are to the nearest outside pixel centre: exact to about a pixel
    slope = 0.5 * np.pi / apo * pixel  # the profile's largest change over one pixel
    assert np.max(np.abs(mask[inside] - expected[inside])) < slope
    assert np.all(mask[~support] == 0) and np.all(mask[support & (d > apo + pixel)] == 1)


def test_synthetic_footprint_has_the_requested_sky_fraction_off_the_galactic_plane():
    mask = fp.synthetic_footprint(32, 0.21, 10.0)
    assert abs(fp.effective_fsky(mask) - 0.21) < 2e-3  # one pixel is 8e-5 of the sky
    assert mask.min() == 0 and mask.max() == 1
    b = 90 - np.degrees(colatitude(32))
    assert np.all(mask[np.abs(b) < fp.PLANCK_GAL70_CUT_DEG] == 0)
    assert np.all(mask[b > 0] == 0)  # the default cap is in the southern hemisphere
    with pytest.raises(ConfigError, match=r"fsky 0\.9 is out of reach"):
        fp.synthetic_footprint(16, 0.9, 10.0)


def test_footprint_from_a_hits_file(tmp_path):
    nside = 32
    hits = np.where(np.degrees(colatitude(64)) < 50, 100.0, 0.0)  # at another nside
    hits[0] = 5.0  # below the threshold
    path = tmp_path / "hits.fits"
    hp.write_map(path, hits, dtype=np.float64)
    mask = fp.footprint_from_hits(sims.read_hits_map(path), nside, 0.1, 10.0, str(path))
    np.testing.assert_array_equal(mask, fp.apodise(hp.ud_grade(hits, nside) >= 10.0, 10.0))
    assert 0.1 < fp.effective_fsky(mask) < 0.2
    with pytest.raises(DataError, match=r"hits\.fits: the hits map contains NaN"):
        fp.footprint_from_hits(np.full(12 * 16**2, np.nan), nside, 0.1, 10.0, str(path))
    with pytest.raises(DataError, match="missing hits map"):
        sims.read_hits_map(tmp_path / "none.fits")


@pytest.fixture(scope="module")
def masked_setups(spectra):
    cfg = validate_config(dict(tiny_config(), npe={"nside": 32}))
    mask = fp.synthetic_footprint(32, 0.21, 10.0)
    return (
        npe_setup(cfg, spectra, "joint"),
        npe_setup(cfg, spectra, "joint", np.ones_like(mask)),
        npe_setup(cfg, spectra, "joint", mask),
        mask,
    )


def test_at_full_sky_the_masked_data_vector_is_the_full_sky_one(masked_setups):
    full, ones, masked, _ = masked_setups
    theta = prior.prior().sample(1, rng_for(1, "t"))[0]
    x_full = simulator.simulate(theta, 7, full)
    np.testing.assert_array_equal(simulator.simulate(theta, 7, ones), x_full)
    assert not np.allclose(simulator.simulate(theta, 7, masked), x_full, rtol=0.05)


def test_masked_spectra_are_pseudo_spectra_scaled_by_w2(masked_setups):
    """No mode-coupling correction: a masked map's power is w2 = mean(m^2) of the full sky's
    (for spectra smooth over the mask's kernel), here on the CMB alone."""
    full, _, _, mask = masked_setups
    lmax, nside = full.lmax, full.nside
    cl = 0.01 * full.tensor_cl + full.lensing_cl
    ratios = []
    for seed in range(6):
        alm = harmonics.gaussian_alm(cl, lmax, rng_for(seed, "cmb"))
        masked = fp.mask_b_alm(alm[None], mask, nside, lmax, 3)[0]
        ell = slice(30, 90)
        ratios.append(
            harmonics.cross_spectrum(masked, masked, lmax)[ell].sum()
            / harmonics.cross_spectrum(alm, alm, lmax)[ell].sum()
        )
    assert abs(np.mean(ratios) / fp.effective_fsky(mask, 2) - 1) < 0.15


# ---------------------------------------------------------------- fixed-foreground sets
@pytest.fixture(scope="module")
def fixed_campaign(tmp_path_factory, spectra):
    root = tmp_path_factory.mktemp("fixed")
    base = tiny_config(nside=16)
    raw = dict(
        base,
        skies=dict(base["skies"], layered={**base["skies"]["grf"], "kind": "layered"}),
        simulations=dict(
            base["simulations"],
            so_layered=dict(base["simulations"]["so"], sky="layered"),
        ),
        npe={
            "nside": 16,
            "chunks": 1,
            "simulations_per_chunk": 3,
            "test_sets": {
                "layered_r0": {
                    "simulations": 3,
                    "fixed": {"r": 0.0, "A_lens": 0.5},
                    "foreground": "so_layered",
                },
            },
            "footprint": {"source": "synthetic", "fsky": 0.3},
            "ps_likelihood": {"sets": ["layered_r0"], "steps": 300, "burn": 100},
            "posterior_samples": 100,
        },
    )
    cfg = validate_config(raw)
    sims.write_spectra(root / "camb.h5", spectra, cfg)
    simulate_stage.sky(cfg, "so_layered", root / "camb.h5", root / "sky.h5")
    npe.npe_chunk(cfg, "layered_r0", 0, root / "camb.h5", root / "chunk.h5", root / "sky.h5")
    return root, cfg


def test_fixed_foreground_members_share_the_foreground_and_nothing_else(fixed_campaign):
    root, cfg = fixed_campaign
    theta, x, seeds = read_chunks([root / "chunk.h5"], "joint")
    head = io.read_product(root / "chunk.h5", "npe_simulations")
    assert head.attrs["foreground"] == "so_layered" and abs(head.attrs["fsky"] - 0.3) < 5e-3
    assert 0 < head.attrs["foreground_sigma_beta"] < 1
    np.testing.assert_array_equal(theta[:, :2], [[0.0, 0.5]] * 3)
    assert len(set(seeds.tolist())) == 3 and not np.allclose(x[0], x[1])
    # the members' skies: the same foreground alm, different CMB, from the product's sky
    setup = npe._setups(cfg, root / "camb.h5")["joint"]
    fg, _ = npe.fixed_foreground(
        cfg, npe.simulation_sets(cfg)["layered_r0"], root / "sky.h5", setup
    )
    a = simulator.simulate_sky(theta[0], int(seeds[0]), setup, fg)
    b = simulator.simulate_sky(theta[1], int(seeds[1]), setup, fg)
    np.testing.assert_array_equal(a.foreground_alm, b.foreground_alm)
    assert not np.allclose(a.cmb_alm, b.cmb_alm)
    # the chunk's data vectors are those of that foreground: regenerated member by member
    np.testing.assert_allclose(
        simulator.simulate_compressions(theta[2], int(seeds[2]), {"joint": setup}, fg)["joint"],
        x[2],
        rtol=1e-12,
    )
    # and without noise or CMB every member sees exactly the same data
    quiet = setup._replace(noise_cl=np.zeros_like(setup.noise_cl))
    zero = theta[0].copy()
    zero[:2] = 0.0
    x0 = simulator.simulate(zero, 1, quiet, fg)
    np.testing.assert_array_equal(simulator.simulate(zero, 2, quiet, fg), x0)
    assert np.all(np.isfinite(x0)) and np.any(x0 != 0)


def test_the_likelihood_runs_on_the_same_data(fixed_campaign):
    root, cfg = fixed_campaign
    from bmodesep.products import npe_results as nr

    _, spectra_x, _ = read_chunks([root / "chunk.h5"], "frequency_spectra")
    assert spectra_x.shape == (3, 8 * 9 // 2)  # 36 band pairs, one bin at nside 16
    npe.npe_ps_likelihood(cfg, [root / "chunk.h5"], root / "camb.h5", root / "like.h5")
    like = nr.read_ps_likelihood(root / "like.h5")
    assert like[nr.SAMPLES].shape == (3, 100, 9) and like.attrs["sky"] == "layered"
    assert like.attrs["compression"] == "ps_likelihood" and list(like.attrs["fixed"]) == [
        "r",
        "A_lens",
    ]
    assert np.all(like[nr.SAMPLES][..., 0] >= 0)  # the r >= 0 prior
    assert np.all((like[nr.R_HDI][:, 0] <= like[nr.R_MEAN]) | (like[nr.R_HDI][:, 0] == 0))


def test_fixed_foreground_sets_are_checked(fixed_campaign):
    _, cfg = fixed_campaign
    bad = dict(
        cfg,
        npe=dict(
            cfg["npe"],
            test_sets={"t": {"simulations": 1, "fixed": {"r": 0.0}, "foreground": "so_layered"}},
        ),
    )
    with pytest.raises(ConfigError, match=r"npe.test_sets.t.fixed: .*\['A_lens'\]"):
        validate_config(bad)
    fixed = {"r": 0.0, "A_lens": 1.0}
    for sim, match in (("nope", "unknown simulation 'nope'"), ("lb", "uses instrument 'litebird'")):
        bad = dict(
            cfg,
            npe=dict(
                cfg["npe"], test_sets={"t": {"simulations": 1, "fixed": fixed, "foreground": sim}}
            ),
        )
        with pytest.raises(ConfigError, match=match):
            validate_config(bad)
    with pytest.raises(ConfigError, match=r"npe\.footprint\.hits_file"):
        validate_config(dict(cfg, npe=dict(cfg["npe"], footprint={"source": "hits"})))
    bad = dict(cfg, npe=dict(cfg["npe"], ps_likelihood={"sets": ["nope"]}))
    with pytest.raises(ConfigError, match=r"npe\.ps_likelihood\.sets: 'nope'"):
        validate_config(bad)
    with pytest.raises(ConfigError, match="holds the foreground of 'so_layered'"):
        npe.npe_chunk(cfg, "layered_r0", 0, "camb.h5", "out.h5")
