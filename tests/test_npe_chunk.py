"""The SBI simulation campaign: chunks of (theta, x, seed), deterministic and atomic."""

import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import bmodesep_command, config_file, tiny_config

from bmodesep.config import validate_config
from bmodesep.core.npe import prior
from bmodesep.core.npe.sets import set_parameters
from bmodesep.core.simulate.cmb import compute_camb_spectra
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import checkpoint, io, sims
from bmodesep.products.npe import read_chunks
from bmodesep.settings import cosmology, simulation_sets
from bmodesep.stages import npe


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    cfg = tiny_config()
    cfg = validate_config(
        dict(
            cfg,
            npe={
                "nside": 16,
                "chunks": 2,
                "simulations_per_chunk": 3,
                "seed": 4,
                "compressions": ["joint", "hilc_joint"],
                "coverage_simulations": 4,
                "test_sets": {"fixed_r": {"simulations": 2, "fixed": {"r": 0.01, "B_d": 0.0}}},
            },
        )
    )
    sims.write_spectra(root / "camb.h5", compute_camb_spectra(cosmology(cfg["cmb"]), 100), cfg)
    return root, cfg


def test_chunks_are_complete_reproducible_and_distinct(setup):
    root, cfg = setup
    for i in range(2):
        npe.npe_chunk(cfg, "train", i, root / "camb.h5", root / f"c{i}.h5")
    theta, x, seeds = read_chunks([root / "c0.h5", root / "c1.h5"], "joint")
    assert (
        theta.shape == (6, 13) and x.shape == (6, 15) and seeds.shape == (6,)
    )  # 1 bin at nside 16
    assert np.all(np.isfinite(prior.prior().log_prob(theta)))
    assert len(set(seeds.tolist())) == 6
    npe.npe_chunk(cfg, "train", 1, root / "camb.h5", root / "again.h5")
    again = io.read_product(root / "again.h5", "npe_simulations")
    np.testing.assert_array_equal(again["x/joint"], x[3:])
    np.testing.assert_array_equal(again["theta"], theta[3:])
    p = io.read_product(root / "c0.h5", "npe_simulations")
    assert p.config["npe"]["seed"] == 4 and p["cpu_s"].shape == (3,)
    # the same sky and noise under the harmonic ILC: a different, equally long data vector
    _, x_hilc, _ = read_chunks([root / "c0.h5"], "hilc_joint")
    assert x_hilc.shape == (3, 15) and not np.allclose(x_hilc, x[:3])
    # the CMB auto spectrum is the first pair: both compressions see the same CMB
    assert np.allclose(x_hilc[:, 0], x[:3, 0], rtol=0.5)


def test_sets_have_their_own_draws_and_fixed_parameters(setup):
    root, cfg = setup
    sets = simulation_sets(cfg)
    assert {k: v.chunks for k, v in sets.items()} == {"train": 2, "coverage": 2, "fixed_r": 1}
    assert sets["coverage"].chunk_size(1) == 1
    npe.npe_chunk(cfg, "fixed_r", 0, root / "camb.h5", root / "t.h5")
    t = io.read_product(root / "t.h5", "npe_simulations")
    assert t.attrs["set"] == "fixed_r" and list(t.attrs["fixed"]) == ["r", "B_d"]
    assert np.all(t["theta"][:, 0] == 0.01) and np.all(t["theta"][:, 5] == 0.0)
    assert np.unique(t["theta"][:, 2]).size == 2  # A_d still drawn
    train = set_parameters(sets["train"], 0, 4)
    cov = set_parameters(sets["coverage"], 0, 4)
    assert not np.any(np.isin(cov[:, 2], train[:, 2]))


def test_bad_chunk_index_or_set_writes_nothing(setup):
    root, cfg = setup
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        npe.npe_chunk(cfg, "train", 2, root / "camb.h5", root / "bad.h5")
    with pytest.raises(ConfigError, match="unknown or empty simulation set 'nope'"):
        npe.npe_chunk(cfg, "nope", 0, root / "camb.h5", root / "bad.h5")
    assert not (root / "bad.h5").exists()
    with pytest.raises(DataError, match="x/constrained"):
        read_chunks([root / "c0.h5"], "constrained")


def kill_after_first_checkpoint(command, out, parts, env=None, cwd=None) -> None:
    """Start a chunk job and SIGKILL it once its first checkpoint piece exists."""
    job = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not list(parts.glob("*.h5")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not out.exists(), "the job finished before it could be killed"


@pytest.mark.slow
def test_killed_chunk_job_resumes_from_its_checkpoints(setup, tmp_path):
    """SIGKILL mid-chunk: the rerun keeps finished blocks, recomputes none, loses none."""
    root, cfg = setup
    cfg = validate_config(dict(cfg, npe=dict(cfg["npe"], simulations_per_chunk=23)))
    out = tmp_path / "chunk0.h5"
    parts = tmp_path / "chunk0.h5.parts"
    command = bmodesep_command(
        *("npe", "npe_chunk", "--config", config_file(cfg, tmp_path)),
        *("--spectra", root / "camb.h5", "--set", "train", "--chunk", 0, "--output", out),
    )
    kill_after_first_checkpoint(command, out, parts)
    blocks = len(list(parts.glob("npe_simulation_block*.h5")))
    assert 1 <= blocks <= 2
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    done = npe.CHECKPOINT_EVERY * blocks
    assert f"resuming: {done}/23 simulations done by an earlier run" in resumed.stdout
    computed = [line for line in resumed.stdout.splitlines() if "/23 simulations," in line]
    assert len(computed) == 23 - done  # nothing recomputed
    assert not parts.exists()
    npe.npe_chunk(cfg, "train", 0, root / "camb.h5", tmp_path / "clean.h5")
    got, clean = (io.read_product(p, "npe_simulations") for p in (out, tmp_path / "clean.h5"))
    for name in ("theta", "seed", "x/joint", "x/hilc_joint"):
        np.testing.assert_array_equal(got[name], clean[name], err_msg=name)
    # a checkpoint written under another config is discarded, not mixed in
    stale = checkpoint.Parts(out, "npe_simulation_block", "another config")
    zeros = {f"x/{c}": io.Dataset(np.zeros((10, 15)), "uK_CMB^2") for c in ("joint", "hilc_joint")}
    stale.write(0, zeros | {"cpu_s": io.Dataset(np.zeros(10), "s")}, io.provenance(cfg, 4, "t"))
    npe.npe_chunk(cfg, "train", 0, root / "camb.h5", tmp_path / "chunk0.h5")
    again = io.read_product(out, "npe_simulations")
    np.testing.assert_array_equal(again["x/joint"], clean["x/joint"])
    assert not parts.exists()


@pytest.mark.slow
def test_checkpoints_of_other_code_are_discarded(setup, tmp_path):
    """Kill a chunk, edit the simulator (same version), rerun: no piece of the old code is kept."""
    import os
    import shutil
    import sys
    from pathlib import Path

    root, cfg = setup
    cfg = validate_config(dict(cfg, npe=dict(cfg["npe"], simulations_per_chunk=23)))
    package = Path(npe.__file__).resolve().parents[1]
    copy = tmp_path / "src"
    shutil.copytree(package, copy / "bmodesep", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(copy))
    out = tmp_path / "chunk0.h5"
    parts = tmp_path / "chunk0.h5.parts"
    command = [sys.executable, "-m", "bmodesep", "npe", "npe_chunk"]
    command += ["--config", str(config_file(cfg, tmp_path)), "--spectra", str(root / "camb.h5")]
    command += ["--set", "train", "--chunk", "0", "--output", str(out)]
    # run in tmp_path: ``-m`` puts the working folder first on the path
    kill_after_first_checkpoint(command, out, parts, env=env, cwd=tmp_path)
    assert list(parts.glob("npe_simulation_block*.h5"))
    simulator = copy / "bmodesep" / "core" / "npe" / "simulator.py"
    simulator.write_text(simulator.read_text() + "\n# an edit of the simulator\n")
    rerun = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "discarding stale checkpoint" in rerun.stdout + rerun.stderr
    assert "resuming" not in rerun.stdout + rerun.stderr
    computed = [line for line in rerun.stdout.splitlines() if "/23 simulations," in line]
    assert len(computed) == 23  # everything recomputed by the new code
    assert not parts.exists()
