"""kabalan2025 sec. 5.1 as a workflow target: target validation_all on a tiny config."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bmodesep.config import validate_config
from bmodesep.errors import ConfigError
from bmodesep.products import compsep as cp

SNAKEFILE = str(REPO / "workflow" / "Snakefile")
TRUTH = {"beta_d": 8, "temperature_d": 2, "beta_s": 2}


def validation_config(**masks):
    """The validation preset at CI size: nside 16, truth (8, 2, 2) per zone, 8 realisations."""
    field = {"amplitude": 0.03, "gamma": -2.0}
    return validate_config(
        {
            "cmb": {"lmax": 200},
            "skies": {
                "truth": {
                    "kind": "true_patch",
                    "seed": 4,
                    "dust": {
                        "beta": {"mean": 1.54, **field},
                        "temperature_k": {"mean": 20.0, "amplitude": 8.0, "gamma": -2.0},
                    },
                    "synchrotron": {"beta": {"mean": -3.0, **field}},
                    "galactic_envelope": {"amplitude": 10.0},
                    "patches": {p: {"kmeans": k} for p, k in TRUTH.items()},
                }
            },
            "instruments": {"litebird": "litebird"},
            "simulations": {
                "lb": {
                    "sky": "truth",
                    "instrument": "litebird",
                    "nside": 16,
                    "noise_realisations": 8,
                    "seed": 12,
                }
            },
            "masks": {"source": "latitude", **masks},
            "compsep": {
                "simulations": ["lb"],
                "zones": ["GAL020_U", "GAL040_L"],
                "grid": {"beta_d": [4, 8, 16], "temperature_d": [1, 2, 4], "beta_s": [1, 2, 4]},
                "multires_variants": {},
            },
        }
    )


def test_kmeans_true_patches_need_masks_that_do_not_depend_on_the_sky():
    cfg = validation_config()
    raw = {k: v for k, v in cfg.items()}
    raw["masks"] = dict(cfg["masks"], source="synthetic")
    with pytest.raises(ConfigError, match="masks must not depend on the sky"):
        validate_config(raw)


@pytest.mark.slow
def test_validation_target_recovers_the_true_patch_counts(tmp_path):
    cfg = validation_config()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["validation_all", "--configfile", "c.yaml", "--snakefile", SNAKEFILE, "--cores", "2"]
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = Path(tmp_path, "results")
    with (results / "recovery.csv").open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == cp.RECOVERY_COLUMNS
        rows = list(reader)
    assert {r["zone"] for r in rows} == {"GAL020_U", "GAL040_L"}
    assert {r["rule"] for r in rows} == {
        "variance",
        "threshold",
        "variance_plus_systematic",
        "nll",
        "r_aware",
    }
    truth = tuple(str(k) for k in TRUTH.values())
    for row in rows:
        assert tuple(row[f"true_k_{p}"] for p in TRUTH) == truth
    # the paper's rule (sec. 6, the default) recovers the truth in every zone
    for row in (r for r in rows if r["rule"] == "threshold"):
        assert tuple(row[f"selected_k_{p}"] for p in TRUTH) == truth, row
        assert row["condition_met"] == "True"
    figures = results / "figures" / "lb"
    assert (figures / "recovery.png").stat().st_size > 10_000
    # the true patches are the grid's own K-means output at the true counts
    import h5py

    with (
        h5py.File(results / "sims" / "lb" / "true_patches.h5") as t,
        h5py.File(results / "sims" / "lb" / "masks.h5") as m,
        h5py.File(results / "compsep" / "lb" / "patches" / "GAL020_U" / "kmeans_K8_seed0.h5") as k,
    ):
        zone = m["zones/GAL020_U"][()].astype(bool)
        labels = k["labels"][()]
        truth_labels = t["beta_d"][()]
        assert len(set(zip(labels[zone], truth_labels[zone], strict=True))) == 8
