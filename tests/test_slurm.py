"""The workflow on a real SLURM: a one-node cluster started here, driven by profiles/slurm.

tests/slurm/start_slurm.sh installs Debian's slurm-wlm (munge, slurmctld, slurmd,
slurmdbd with MariaDB, so that the plugin's default sacct status queries work) and starts
it with one fake GPU; the tiny end-to-end config then runs through
``snakemake --profile profiles/slurm`` unchanged.  Checked: every product, that the jobs
ran as SLURM jobs (sacct) with GPUs for the GPU rules, a single-stage re-run
(--forcerun/--until), and a simulation-campaign job killed mid-run (SIGKILL, as by the
out-of-memory killer) that resumes from its checkpoints.  The daemons are stopped
whatever happens, and the test checks that none is left.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, job_counts, tiny_workflow_config

from bmodesep.config import validate_config
from bmodesep.core.npe import simulator
from bmodesep.core.npe.sets import set_parameters, simulation_seed
from bmodesep.products import io
from bmodesep.settings import simulation_sets
from bmodesep.stages import npe

# It installs Debian's SLURM and MariaDB with apt-get and starts their daemons: root on a
# Debian machine, which a laptop is not.  CI (.ci/run) sets BMODESEP_SLURM_TEST=1.
SLURM_TEST = os.environ.get("BMODESEP_SLURM_TEST") == "1"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SLURM_TEST,
        reason="starts a SLURM cluster (apt-get install, daemons as root): "
        "set BMODESEP_SLURM_TEST=1 to run it, as .ci/run does",
    ),
]

SCRIPTS = REPO / "tests" / "slurm"
DAEMONS = {
    "slurmd": "slurmd.pid",
    "slurmctld": "slurmctld.pid",
    "slurmdbd": "slurmdbd.pid",
    "mariadbd": "db/mariadb.pid",
    "munged": "munge/munged.pid",
}


def sh(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def running(pid: int, program: str) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == program and not re.search(r"^State:\s+Z", status, re.M)


@pytest.fixture(scope="module")
def cluster():
    # not under pytest's tmp folder (mode 700): munged and mariadbd run as their own users
    base = Path(tempfile.mkdtemp(prefix="bmodesep-slurm-", dir="/tmp"))
    base.chmod(0o755)
    env = dict(
        os.environ,
        SLURM_BASE=str(base),
        SLURM_CONF=str(base / "etc" / "slurm.conf"),  # this cluster, not /etc/slurm
        PATH=f"/usr/sbin:/sbin:{os.environ['PATH']}",
    )
    started = sh("bash", str(SCRIPTS / "start_slurm.sh"), env=env)
    pids = {
        name: int(p.read_text())
        for name, rel in DAEMONS.items()
        if (p := base / rel).exists() and p.read_text().strip()
    }
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert {"slurmd", "slurmctld", "slurmdbd", "mariadbd"} <= set(pids)
        yield env
    finally:
        stopped = sh("bash", str(SCRIPTS / "stop_slurm.sh"), env=env)
        left = [name for name, pid in pids.items() if running(pid, name)]
        assert stopped.returncode == 0 and not left, f"daemons left running: {left}"
        shutil.rmtree(base)


# profiles/slurm as shipped; only the plugin's first status poll comes after 2 s, not 40 s
SNAKEMAKE = [
    *(sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles" / "slurm")),
    *("--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", "c.yaml"),
    *("--slurm-init-seconds-before-status-checks", "2"),
]


def snakemake(workdir, env, *args):
    return sh(*SNAKEMAKE, *args, cwd=workdir, env=dict(env, OMP_NUM_THREADS="1"))


def slurm_jobs(env) -> list[dict[str, str]]:
    """Jobs in the accounting database (allocations only)."""
    out = sh("sacct", "-X", "-n", "-P", "--format=JobID,State,AllocTRES", env=env).stdout
    return [
        dict(zip(("id", "state", "tres"), line.split("|"), strict=True)) for line in out.split()
    ]


def accounted_jobs(env, expected: int, wait_s: float = 60.0) -> list[dict[str, str]]:
    """The accounting database's jobs once it lists ``expected`` of them (slurmctld hands
    finished jobs to slurmdbd asynchronously: on a loaded machine the last ones arrive
    seconds after Snakemake has seen them end), or what it lists after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        jobs = slurm_jobs(env)
        if len(jobs) >= expected or time.monotonic() > deadline:
            return jobs
        time.sleep(2)


def test_workflow_through_the_slurm_profile(cluster, tmp_path):
    env = cluster
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_workflow_config()))
    # the products checked below and everything they need: every kind of stage, 31 of the
    # 84 jobs (the whole workflow runs locally in test_workflow; each SLURM job here costs
    # a nested Snakemake start)
    targets = [
        "results/rlike/lb/kmeans.h5",
        "results/nilc/so/joint.h5",
        "results/figures/npe/summary.csv",
        "results/figures/lb/r_likelihood.png",
    ]
    run = snakemake(tmp_path, env, *targets)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    results = tmp_path / "results"
    fit = io.read_product(results / "compsep/lb/GAL060_L/kmeans.h5", "compsep_fit")
    assert fit["converged"].all()
    assert io.read_product(results / "rlike/lb/kmeans.h5", "r_likelihood")["likelihood"].max() == 1
    assert io.read_product(results / "nilc/so/joint.h5", "nilc")["maps"].shape[-1] == 12 * 8**2
    observed = io.read_product(results / "npe/joint/observed/so.h5", "npe_observed")
    assert observed["samples"].shape == (1, 50, 13)
    assert (results / "figures/npe/summary.csv").read_text().startswith("set,compression")
    assert (results / "figures/lb/r_likelihood.png").stat().st_size > 10_000
    # every job went through SLURM, and the GPU rules asked for (fake) GPUs
    counts = job_counts(run.stdout + run.stderr)
    jobs = accounted_jobs(env, sum(counts.values()))
    assert len(jobs) == sum(counts.values()) == 31  # no local rule among them
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    gpu_rules = ("grid_chunk", "compsep_fit", "npe_train", "npe_tune")
    assert sum("gres/gpu=1" in j["tres"] for j in jobs) == sum(counts.get(r, 0) for r in gpu_rules)
    assert "on 1 JAX device(s)" in (results / "logs/grid_chunk/lb_0.log").read_text()
    # progress lines with rate and ETA in the job logs
    assert re.search(
        r"1/2 configurations, .* ETA", (results / "logs/grid_chunk/lb_0.log").read_text()
    )
    assert "ETA" in (results / "logs/npe_train/joint.log").read_text()

    # one stage again: --forcerun a rule for one product: only its job is submitted (the
    # whole workflow would also run simulation so's separation, not run above)
    selection = results / "compsep/lb/grid/GAL060_L/selection.h5"
    before = selection.stat().st_mtime_ns
    fits_before = fit.path.stat().st_mtime_ns
    target = str(selection.relative_to(tmp_path))
    again = snakemake(tmp_path, env, target, "--forcerun", "grid_select")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(accounted_jobs(env, len(jobs) + 1)) == len(jobs) + 1
    assert selection.stat().st_mtime_ns > before and fit.path.stat().st_mtime_ns == fits_before


def running_in(pid: str, folder: Path) -> bool:
    """Whether process ``pid`` runs with its working directory inside ``folder``."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(folder)
    except OSError:  # gone already, or not ours to inspect
        return False


def test_killed_campaign_job_resumes_on_slurm(cluster, tmp_path):
    """A simulation chunk killed mid-run; the next run keeps its finished blocks."""
    env = cluster
    cfg = tiny_workflow_config()
    cfg["npe"] = dict(cfg["npe"], chunks=1, simulations_per_chunk=150)
    cfg = validate_config(cfg)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/npe/simulations/train/chunk0.h5"
    parts = tmp_path / f"{target}.parts"
    first = subprocess.Popen(
        [*SNAKEMAKE, "--retries", "0", target],
        cwd=tmp_path,
        env=dict(env, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(parts.glob("*.h5")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(parts.glob("*.h5")), "no checkpoint appeared"
        assert len(sh("squeue", "-h", "-o", "%A", env=env).stdout.split()) == 1
        # SIGKILL to the job's simulation process, as the out-of-memory killer does; the job
        # ends FAILED.  (A plain scancel ends it 'CANCELLED by <uid>', a state that plugin
        # 2.8 does not recognise: Snakemake would wait for that job for ever.)
        found = sh("pgrep", "-f", r"^[^ ]*python[^ ]* [^ ]*/bin/bmodesep npe npe_chunk")
        # this test's chunk process only (its working directory), not another run's
        pids = [p for p in found.stdout.split() if running_in(p, tmp_path)]
        assert len(pids) == 1
        os.kill(int(pids[0]), signal.SIGKILL)
        out, _ = first.communicate(timeout=300)
        assert first.returncode != 0 and not (tmp_path / target).exists(), out[-2000:]
    finally:  # never leave a Snakemake behind, whatever failed
        if first.poll() is None:
            first.kill()
            first.wait()
    kept = len(list(parts.glob("*.h5")))
    resumed = snakemake(tmp_path, env, target)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (tmp_path / "results/logs/npe_chunk/train_0.log").read_text()
    done = re.search(r"resuming: (\d+)/150 simulations done by an earlier run", log)
    assert done and int(done.group(1)) >= kept * npe.CHECKPOINT_EVERY
    computed = [line for line in log.splitlines() if "/150 simulations," in line]
    assert len(computed) == 150 - int(done.group(1))  # finished blocks not recomputed
    assert not parts.exists()
    # nothing lost or duplicated: the chunk is what an uninterrupted job writes
    chunk = io.read_product(tmp_path / target, "npe_simulations")
    stage = json.loads(chunk.attrs["config"])
    sets = simulation_sets(cfg)
    np.testing.assert_array_equal(
        chunk["theta"], set_parameters(sets["train"], 0, cfg["npe"]["seed"])
    )
    expected = [simulation_seed(cfg["npe"]["seed"], "train", 0, i) for i in range(150)]
    assert chunk["seed"].tolist() == expected and stage["npe"]["seed"] == cfg["npe"]["seed"]
    setups = npe._setups(cfg, tmp_path / "results/spectra/camb.h5")
    for i in (0, 149):  # one from a kept block, one simulated after the resume
        x = simulator.simulate_compressions(chunk["theta"][i], expected[i], setups)
        np.testing.assert_array_equal(chunk["x/joint"][i], x["joint"])
