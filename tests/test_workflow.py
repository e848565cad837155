"""Snakemake: dry runs and lint on every shipped config, and a tiny end-to-end run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_config

from bmodesep import sim_io
from bmodesep.instrument import resolve_instrument

SHIPPED = sorted((REPO / "config").glob("*.yaml"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run(args, cwd=REPO):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_dry_run_is_clean(config, tmp_path):
    r = run(
        [
            "-n",
            "--configfile",
            str(config),
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(REPO / "Snakefile"),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "simulate_all" in r.stdout + r.stderr or "camb_spectra" in r.stdout + r.stderr


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_lint_is_clean(config):
    r = run(["--lint", "--configfile", str(config)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


def test_bad_config_stops_the_workflow(tmp_path):
    cfg = tiny_config()
    cfg["simulations"]["lb"]["nside"] = 10
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run(["-n", "--configfile", "c.yaml", "--snakefile", str(REPO / "Snakefile")], cwd=tmp_path)
    assert r.returncode != 0
    assert "simulations.lb.nside: 10 is not a power of two" in r.stdout + r.stderr


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path):
    cfg = tiny_config()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    args = ["--configfile", "c.yaml", "--snakefile", str(REPO / "Snakefile"), "--cores", "2"]
    r = run([*args, "simulate_all"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = Path(tmp_path, "results")
    for sim in ("lb", "so"):
        for product in ("sky", "masks", "signal", "noise"):
            assert (results / "sims" / sim / f"{product}.h5").exists()
        assert (results / "logs" / "noise" / f"{sim}.log").exists()
        assert (results / "benchmarks" / "noise" / f"{sim}.tsv").exists()
    so = resolve_instrument(cfg, "sosat")
    assert sim_io.read_noise(results / "sims/so/noise.h5", so, 8)["b"].shape[:3] == (1, 2, 8)
    again = run([*args, "simulate_all", "-n"], cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
