"""A bad config through Snakemake: one clear error naming the key or the file, as bmodesep
gives it, before anything is written.

Each case is the default config (config/config.yaml) with one defect, given to
``snakemake -n --configfile`` in a temporary folder. Snakemake frames a WorkflowError with
lines of its own (``WorkflowError in file .../Snakefile, line N:`` and the Snakefile's
``File ..., line N, in <module>``); what is asserted is: a non-zero exit, no Python
traceback, one line of the output naming everything the case lists (the key, or the file
and what is wrong in it), and no results folder.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SNAKEFILE = str(REPO / "workflow" / "Snakefile")
DEFAULT = REPO / "config" / "config.yaml"
FIRST_SIM, FIRST = next(iter(yaml.safe_load(DEFAULT.read_text())["simulations"].items()))

# Snakemake reads the --configfile files itself, before the Snakefile runs (snakemake/cli.py
# args_to_api builds ConfigSettings, whose __post_init__ in snakemake/settings/types.py calls
# load_configfile of snakemake/common/configfile.py), so no code of the workflow can see a
# file it cannot read: open() of a missing file or a folder raises outside its try (a
# FileNotFoundError or IsADirectoryError traceback), a YAML error becomes "Config file is
# not valid JSON or YAML" and an empty file or a list "Config file must be given as JSON or
# YAML with keys at top level", both without the file's name. Strict: when Snakemake names
# the file without a traceback these pass, and the mark goes.
SNAKEMAKE_READS_IT = pytest.mark.xfail(
    strict=True, reason="Snakemake reads --configfile files before the workflow's code runs"
)


def _changed(path: Path, *keys_value) -> None:
    """The default config with the value at the dotted key set."""
    *keys, value = keys_value
    cfg = yaml.safe_load(DEFAULT.read_text())
    node = cfg
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _text(path: Path, text: str) -> None:
    path.write_text(text)


def _folder(path: Path) -> None:
    path.mkdir()


def _results_dir_a_file(path: Path) -> None:
    (path.parent / "somefile").write_text("not a folder\n")
    _changed(path, "results_dir", "somefile")


def _twice(path: Path) -> None:
    path.write_text(DEFAULT.read_text() + "\ncmb:\n  r: 0.01\n")


# how bad.yaml is made, and the words one line of the output must hold
CASES = [
    pytest.param(
        lambda p: _text(p, "simulations: [unclosed\n"),
        ["bad.yaml", "line"],
        id="not-yaml",
        marks=SNAKEMAKE_READS_IT,
    ),
    pytest.param(
        lambda p: _text(p, ""), ["bad.yaml", "empty"], id="empty", marks=SNAKEMAKE_READS_IT
    ),
    pytest.param(_folder, ["bad.yaml"], id="folder", marks=SNAKEMAKE_READS_IT),
    pytest.param(lambda p: None, ["bad.yaml"], id="missing", marks=SNAKEMAKE_READS_IT),
    pytest.param(
        lambda p: _text(p, "- cmb\n- simulations\n"),
        ["bad.yaml", "list"],
        id="top-level-list",
        marks=SNAKEMAKE_READS_IT,
    ),
    pytest.param(_results_dir_a_file, ["results_dir", "somefile"], id="results_dir-a-file"),
    pytest.param(
        lambda p: _changed(p, "simulations", FIRST_SIM, "nside", 32.0),
        [f"simulations.{FIRST_SIM}.nside"],
        id="nside-float",
    ),
    pytest.param(
        lambda p: _changed(p, "compsep", "chunks", 5000), ["compsep.chunks"], id="more-chunks"
    ),
    pytest.param(lambda p: _changed(p, "cmb", "r", -0.5), ["cmb.r"], id="negative-r"),
    pytest.param(lambda p: _changed(p, "cmb", "r", float("nan")), ["cmb.r"], id="nan-r"),
    pytest.param(
        lambda p: _changed(p, "cmb", "a_lens", float("inf")), ["cmb.a_lens"], id="inf-a_lens"
    ),
    pytest.param(_twice, ["bad.yaml", "'cmb'"], id="cmb-twice"),
    pytest.param(
        lambda p: _changed(p, "compsep", "grid", "beta_d", [5, 5, 10]),
        ["compsep.grid.beta_d"],
        id="repeated-grid-entry",
    ),
    pytest.param(
        lambda p: _changed(p, "simulations", FIRST_SIM, "lmax", 3 * FIRST["nside"]),
        [f"simulations.{FIRST_SIM}.lmax"],
        id="lmax-above-3-nside",
    ),
]


@pytest.mark.parametrize(("make", "names"), CASES)
def test_a_bad_config_is_one_clear_error(make, names, tmp_path):
    make(tmp_path / "bad.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["-n", "--snakefile", SNAKEFILE, "--configfile", "bad.yaml"]
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    assert any(all(n in line for n in names) for line in out.splitlines()), out
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_job_that_cannot_run_shows_its_error_line_on_the_console(tmp_path):
    """A check a job makes before it computes (here: the memory one set of band maps needs
    against what SLURM granted it) fails the job; through the local profile the console then
    shows the job's log, i.e. bmodesep's one line naming the key, and nothing is written."""
    for folder in ("workflow", "config", "profiles"):
        shutil.copytree(REPO / folder, tmp_path / folder, symlinks=True)
    (tmp_path / "bmodesep").symlink_to(REPO / "bmodesep")  # the schema link resolves
    cfg = {
        "cmb": {"lmax": 200},
        "skies": {"grf": {"kind": "grf"}},
        "instruments": {"litebird": "litebird"},
        "simulations": {"lb": {"sky": "grf", "instrument": "litebird", "nside": 64}},
    }
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", SLURM_MEM_PER_NODE="1")  # 1 MB granted
    target = "results/sims/lb/sky.h5"
    command = ["snakemake", "--profile", "profiles/local", target, "--configfile", "big.yaml"]
    r = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    line = "bmodesep: error: simulations.lb.nside: 64 needs at least"
    assert any(row.startswith(line) for row in out.splitlines()), out
    assert not (tmp_path / target).exists()
