"""Snakemake: dry runs and lint on every shipped config, and a tiny end-to-end run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    REPO,
    job_counts,
    tiny_config,
    tiny_workflow_config,
    user_map_placeholders,
    workflow_rules,
)

from bmodesep.products import io, sims
from bmodesep.products import npe_results as nr
from bmodesep.settings import resolve_instrument

SHIPPED = sorted((REPO / "config").glob("*.yaml"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
SNAKEFILE = str(REPO / "workflow" / "Snakefile")


def run(args, cwd=REPO):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)


# paper1.yaml's DAG (thousands of jobs) takes a minute to plan: the slow tier
DRY_RUNS = [
    pytest.param(p, marks=pytest.mark.slow) if p.name == "paper1.yaml" else p for p in SHIPPED
]


@pytest.mark.parametrize("config", DRY_RUNS, ids=lambda p: p.name)
def test_dry_run_is_clean(config, tmp_path):
    user_map_placeholders(config, tmp_path)  # config/maps_example.yaml reads FITS files
    r = run(
        [
            "-n",
            "--configfile",
            str(config),
            "--directory",
            str(tmp_path),
            "--snakefile",
            SNAKEFILE,
        ]
    )
    assert r.returncode == 0, r.stderr
    assert "simulate_all" in r.stdout + r.stderr or "camb_spectra" in r.stdout + r.stderr


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_lint_is_clean(config):
    r = run(["--lint", "--configfile", str(config)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


@pytest.mark.parametrize("search", ["exhaustive", "screened"])
def test_a_screened_search_plans_pass_1_the_screen_and_pass_2(search, tmp_path):
    """Issue 28: with compsep.grid.search screened, each zone's chunks run pass 1, its
    screen, then pass 2 over the candidates; the exhaustive search plans neither."""
    cfg = tiny_workflow_config()
    cfg["compsep"]["grid"] = dict(cfg["compsep"]["grid"], search=search)
    cfg["compsep"]["chunks"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run(
        ["-n", "-p", "--configfile", "c.yaml", "--snakefile", SNAKEFILE, "compsep_all"],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    jobs = job_counts(r.stdout + r.stderr)
    zones = len(cfg["compsep"]["zones"]) * len(cfg["compsep"]["simulations"])
    assert jobs["grid_chunk"] == 2 * zones and jobs["grid_select"] == zones
    if search == "screened":
        assert jobs["grid_screen_chunk"] == 2 * zones and jobs["grid_screen"] == zones
        assert re.search(r"--screen \S+/grid/GAL060_L/screen\.h5", r.stdout + r.stderr)
    else:
        assert "grid_screen_chunk" not in jobs and "grid_screen" not in jobs
        assert "--screen" not in r.stdout + r.stderr


def _figure_rules() -> set[str]:
    return {rule for stem, rule, *_ in workflow_rules() if stem == "figures"}


@pytest.mark.slow
def test_a_figure_reruns_when_its_products_change_not_on_a_config_edit(tmp_path):
    """Issue 30: figure rules carry no config.  Every output of `figures` (default config)
    is made to exist and marked done (`--touch` records each job's params); then
    npe.posterior_samples is edited: the dry run reruns the SBI jobs and the figures of
    their products (their input changed), no kabalan2025 figure (a figure rule with any
    params that follow the config, e.g. the whole config, would be rerun here), and no
    figure for its params."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    base = ["--configfile", "c.yaml", "--snakefile", SNAKEFILE, "figures"]
    r = run([*base, "--summary"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines()[1:]:
        path = tmp_path / line.split("\t")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    r = run([*base, "--touch", "--cores", "1"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run([*base, "-n"], cwd=tmp_path)
    assert "Nothing to be done" in r.stdout + r.stderr
    cfg["npe"]["posterior_samples"] += 1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run([*base, "-n"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    jobs = set(job_counts(out))
    assert {"npe_posterior", "fig_corner", "fig_tarp"} <= jobs  # the edit reaches SBI
    compsep_figures = {"fig_grid_search", "fig_patches", "fig_residual_maps", "r_summary"}
    assert not jobs & compsep_figures
    reasons = re.findall(r"^(?:local)?rule (\w+):\n(?:\s+\w+:.*\n)*?\s+reason: (.*)$", out, re.M)
    assert {rule for rule, _ in reasons} == jobs  # every job, read with its reason
    params = {rule for rule, why in reasons if "Params have changed" in why}
    assert "npe_train" in params  # the edit changed the SBI stage config ...
    assert not params & _figure_rules()  # ... but no figure's


def test_bad_config_stops_the_workflow(tmp_path):
    cfg = tiny_config()
    cfg["simulations"]["lb"]["nside"] = 10
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run(["-n", "--configfile", "c.yaml", "--snakefile", SNAKEFILE], cwd=tmp_path)
    assert r.returncode != 0
    assert "simulations.lb.nside: 10 is not a power of two" in r.stdout + r.stderr


def test_a_config_typo_is_one_line_naming_the_key_with_a_suggestion(tmp_path):
    cfg = tiny_config()
    cfg["simulations"]["lb"]["noise_realizations"] = cfg["simulations"]["lb"].pop(
        "noise_realisations"
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run(["-n", "--configfile", "c.yaml", "--snakefile", SNAKEFILE], cwd=tmp_path)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if "Error" in line)
    assert lines[first + 1] == (
        "config: simulations.lb: unknown key 'noise_realizations' "
        "(did you mean 'noise_realisations'?)"
    )
    assert len(lines) - first < 10  # no schema dump


def test_a_misspelled_target_lists_the_targets(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config()))
    r = run(["-n", "--configfile", "c.yaml", "--snakefile", SNAKEFILE, "compsep_al"], cwd=tmp_path)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "unknown target 'compsep_al' (did you mean 'compsep_all'?)" in out
    assert "targets: all, " in out and "simulate_all" in out and "npe_all" in out


@pytest.mark.slow
def test_recovery_after_snakemake_itself_is_killed(tmp_path):
    """kill -9 of Snakemake mid-job (its job runs on): the README's recovery works, and a
    rerun while the orphan still writes leaves one complete product."""
    import signal
    import time

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config()))
    target = "results/spectra/camb.h5"
    args = ["--configfile", "c.yaml", "--snakefile", SNAKEFILE, "--profile"]
    args += [str(REPO / "profiles" / "local"), target]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        [*SNAKEMAKE, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the job is not killed with Snakemake: an orphan
    )
    incomplete = tmp_path / ".snakemake" / "incomplete"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (incomplete.is_dir() and any(incomplete.iterdir())):
        time.sleep(0.05)
    assert incomplete.is_dir() and any(incomplete.iterdir()), "the job never started"
    first.send_signal(signal.SIGKILL)
    first.wait()
    locked = run(args, cwd=tmp_path)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    assert run([*args, "--unlock"], cwd=tmp_path).returncode == 0
    again = run(args, cwd=tmp_path)  # the orphan may still be writing camb.h5 meanwhile
    assert again.returncode == 0, again.stderr
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
        p.name.startswith(".camb.h5.tmp-") for p in (tmp_path / "results" / "spectra").iterdir()
    ):
        time.sleep(0.1)  # let the orphan finish
    assert sims.read_spectra(tmp_path / target, 100).lmax >= 100
    assert [p.name for p in (tmp_path / "results" / "spectra").iterdir()] == ["camb.h5"]


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path):
    cfg = tiny_workflow_config()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    args = ["--configfile", "c.yaml", "--snakefile", SNAKEFILE, "--cores", "2"]
    r = run(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    results = Path(tmp_path, "results")
    for sim in ("lb", "so"):
        for product in ("sky", "masks", "signal", "noise"):
            assert (results / "sims" / sim / f"{product}.h5").exists()
        assert (results / "logs" / "noise" / f"{sim}.log").exists()
        assert (results / "benchmarks" / "noise" / f"{sim}.tsv").exists()
    so = resolve_instrument(cfg, "sosat")
    assert sims.read_noise(results / "sims/so/noise.h5", so, 8)["b"].shape[:3] == (1, 2, 8)
    for method in ("kmeans", "multires", "multires_table5", "single"):
        fit = results / "compsep" / "lb" / "GAL060_L" / f"{method}.h5"
        assert io.read_product(fit, "compsep_fit")["converged"].all()
    nilc_maps = io.read_product(results / "nilc" / "so" / "joint.h5", "nilc")["maps"]
    assert nilc_maps.shape == (1, 2, 5, 12 * 8**2)
    r_lb = io.read_product(results / "rlike" / "lb" / "single.h5", "r_likelihood")
    assert r_lb["likelihood"].max() == 1.0 and r_lb.attrs["zones"].tolist() == ["GAL060_L"]
    for name in (
        "grid_search_GAL060_L",
        "patches_GAL060_L",
        "residual_maps",
        "metrics",
        "residual_spectra",
        "r_likelihood",
        "r_hat_vs_k",
    ):
        assert (results / "figures" / "lb" / f"{name}.png").stat().st_size > 10_000
    summary_rows = (results / "figures" / "lb" / "r_summary.csv").read_text().splitlines()
    assert summary_rows[0] == "method,patches,r_true,r_hat,lo68,hi68,upper68,sigma_r"
    assert sorted(row.split(",")[0] for row in summary_rows[1:]) == [
        "kmeans",
        "multires",
        "multires_table5",
        "single",
    ]
    rules = (results / "figures" / "lb" / "selection_rules.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in rules[1:]] == [
        "variance",
        "threshold",
        "variance_plus_systematic",
        "nll",
        "r_aware",
    ]
    npe_dir = results / "npe" / "joint"
    observed = io.read_product(npe_dir / "observed" / "so.h5", "npe_observed")
    assert observed["samples"].shape == (1, 50, 13) and 0 <= observed.attrs["ppc_p_value"] <= 1
    # a simulated sky: the CMB it was drawn with, the truth its corner plot marks
    truth = (observed.attrs["true_r"], observed.attrs["true_A_lens"])
    assert truth == (cfg["cmb"]["r"], cfg["cmb"]["a_lens"])
    assert io.read_product(npe_dir / "coverage.h5", "npe_coverage")["ecp"].shape == (14, 51)
    names = ("tarp", "corner_fixed", "corner_observed", "predictive", "predictive_fixed")
    for name in (*names, "training_size"):
        assert (results / "figures" / "npe" / "joint" / f"{name}.png").stat().st_size > 10_000
    yard = (npe_dir / "yardstick.csv").read_text().splitlines()
    assert yard[0] == "parameter,method,training_simulations,test_simulations,correlation,rms_error"
    assert len(yard) == 1 + 3 * 2  # three regressions at the two training subsets
    table3 = (results / "figures" / "npe" / "table3.csv").read_text().splitlines()
    assert table3[0] == "sky,compression,r_true,mean_r,mean_sigma_r,bias_sigma,n"
    assert [row.split(",")[:3] + row.split(",")[-1:] for row in table3[1:]] == [
        ["grf", "joint", "0.01", "3"],
        ["grf", "ps_likelihood", "0.01", "3"],
    ]
    assert (results / "figures" / "npe" / "likelihood_so_sky.png").stat().st_size > 10_000
    # the likelihood on simulation so's own maps, one posterior per noise realisation
    like = nr.read_ps_likelihood(results / "npe" / "ps_likelihood" / "observed" / "so.h5")
    assert like["samples"].shape == (1, 50, 9) and like.attrs["set"] == "observed:so"
    assert (results / "figures" / "npe" / "fixed_foreground.png").stat().st_size > 10_000
    for name in ("r_vs_sigma_beta_fixed", "sigma_r_fixed"):
        assert (results / "figures" / "npe" / f"{name}.png").stat().st_size > 10_000
    summary = (results / "figures" / "npe" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("set,compression")
    assert [row.split(",")[0] for row in summary[1:]] == [
        "coverage",
        "fixed",
        "so_sky",
        "observed:so",
    ]
    # one sky, two methods: every method's r on simulation so, and its figure
    compare = (results / "figures" / "compare" / "summary.csv").read_text().splitlines()
    assert compare[0] == "sky,instrument,method,r_true,r_hat,lo68,hi68,sigma_r,cpu_hours"
    methods = [row.split(",")[2] for row in compare[1:]]
    assert methods == [
        *("kmeans", "multires", "multires_table5", "single"),
        *("sbi_joint", "ps_likelihood"),
    ]
    for row in compare[1:]:
        sky, instrument, _, r_true, r_hat, lo, hi, sigma, hours = row.split(",")
        assert (sky, instrument, r_true) == ("grf", "sosat", "0") and float(r_hat) >= -0.01
        # (the mean of a posterior piled up at r = 0 can lie above its 68% HDI)
        assert float(lo) < float(hi) and float(sigma) == pytest.approx(
            (float(hi) - float(lo)) / 2, rel=1e-3
        )
        assert float(hours) > 0
    assert (results / "figures" / "compare" / "compare.png").stat().st_size > 10_000
    report = run([*args, "--report", "report.html"], cwd=tmp_path)
    assert report.returncode == 0 and (tmp_path / "report.html").stat().st_size > 100_000
    again = run([*args, "-n"], cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # an estimator setting retrains; the simulations stay (their config is the simulator's)
    edited = dict(cfg, npe=dict(cfg["npe"], estimator={"data_transform": "asinh"}))
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(edited))
    plan = run([*args[2:], "--configfile", "edited.yaml", "-n"], cwd=tmp_path)
    planned = job_counts(plan.stdout + plan.stderr)
    assert planned.get("npe_train") == 1 and "npe_chunk" not in planned, planned
    # an interrupted campaign redoes only its missing chunks
    chunks = results / "npe" / "simulations" / "train"
    assert sorted(p.name for p in chunks.glob("chunk*.h5")) == ["chunk0.h5", "chunk1.h5"]
    (chunks / "chunk1.h5").unlink()
    resumed = run([*args, "-n", "npe_simulations"], cwd=tmp_path)
    plan = resumed.stdout + resumed.stderr
    assert (
        re.search(r"npe_chunk\s+1\n", plan)
        and "output: results/npe/simulations/train/chunk1.h5" in plan
    )
    assert run([*args, "npe_simulations"], cwd=tmp_path).returncode == 0
    # re-running one stage: --forcerun a rule redoes it and what depends on it, nothing else
    forced = run([*args, "-n", "--forcerun", "grid_select"], cwd=tmp_path)
    assert forced.returncode == 0
    jobs = forced.stdout + forced.stderr
    assert "grid_select" in jobs and "compsep_fit" in jobs and "rule sky:" not in jobs
    # --until stops after the named rule: skies and masks again, nothing downstream
    until = run([*args, "-n", "--forcerun", "sky", "--until", "masks"], cwd=tmp_path)
    assert until.returncode == 0
    assert job_counts(until.stdout + until.stderr) == {"sky": 2, "masks": 2}
