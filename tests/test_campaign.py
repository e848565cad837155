"""The SBI simulation campaign: chunks of (theta, x, seed), deterministic and atomic."""

import numpy as np
import pytest
from conftest import tiny_config

from bmodesep import campaign, io, prior, sim_io
from bmodesep.cmb import compute_camb_spectra
from bmodesep.config import validate_config
from bmodesep.errors import DataError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    cfg = tiny_config()
    cfg = validate_config(
        dict(cfg, npe={"nside": 16, "chunks": 2, "simulations_per_chunk": 3, "seed": 4})
    )
    sim_io.write_spectra(root / "camb.h5", compute_camb_spectra(cfg["cmb"]["cosmology"], 100), cfg)
    return root, cfg


def test_chunks_are_complete_reproducible_and_distinct(setup):
    root, cfg = setup
    for i in range(2):
        campaign.run_chunk(cfg, root / "camb.h5", i, root / f"c{i}.h5")
    theta, x, seeds = campaign.read_chunks([root / "c0.h5", root / "c1.h5"])
    assert (
        theta.shape == (6, 13) and x.shape == (6, 15) and seeds.shape == (6,)
    )  # 1 bin at nside 16
    assert np.all(np.isfinite(prior.prior().log_prob(theta)))
    assert len(set(seeds.tolist())) == 6
    campaign.run_chunk(cfg, root / "camb.h5", 1, root / "again.h5")
    again = io.read_product(root / "again.h5", "npe_simulations")
    np.testing.assert_array_equal(again["x"], x[3:])
    np.testing.assert_array_equal(again["theta"], theta[3:])
    p = io.read_product(root / "c0.h5", "npe_simulations")
    assert p.config["npe"]["seed"] == 4 and p["cpu_s"].shape == (3,)


def test_bad_chunk_index_writes_nothing(setup):
    root, cfg = setup
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        campaign.run_chunk(cfg, root / "camb.h5", 2, root / "bad.h5")
    assert not (root / "bad.h5").exists()
