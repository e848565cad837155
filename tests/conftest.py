import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import atexit
import copy
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bmodesep import jaxcache
from bmodesep.config import load_config, validate_config
from bmodesep.core.simulate.cmb import compute_camb_spectra
from bmodesep.settings import cosmology

if jaxcache.ENV not in os.environ:
    # one compilation cache for the session and every process it starts (workflow and
    # SLURM jobs), kept out of the user's ~/.cache and removed at the end
    _cache = tempfile.mkdtemp(prefix="bmodesep-test-jax-cache-")
    os.environ[jaxcache.ENV] = _cache
    atexit.register(shutil.rmtree, _cache, True)
jaxcache.enable()  # before the first compilation

REPO = Path(__file__).resolve().parents[1]


# The longest test files, longest first: with `--dist loadfile` each file goes to the next
# free worker in collection order, so starting these first keeps the last worker from
# finishing a long file alone (measured on 2 cores, full suite).
LONG_FILES = (
    "test_workflow.py",
    "test_slurm.py",
    "test_readme_commands.py",
    "test_gridsearch.py",
    "test_observation.py",
    "test_flows.py",
    "test_newton.py",
    "test_user_maps.py",
    "test_validation.py",
)


def pytest_collection_modifyitems(config, items):
    """The long files first (stable: the order within a file is kept)."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def workflow_rules():
    """(rule file stem, rule, stage, step, conda environment variable) of every rule that
    runs a ``bmodesep`` command, ``use rule ... with:`` rules with their base rule's
    command and environment (a figure's step is the first argument of its figure_args)."""
    found = []
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        bases = {}
        for block in re.split(r"^(?=rule |use rule )", path.read_text(), flags=re.M)[1:]:
            head = re.match(r"(?:rule (\w+)|use rule (\w+) as (\w+) with):", block)
            name, base = head.group(1) or head.group(3), head.group(2)
            command = re.search(r'"bmodesep (\w+) (\{params.args\}|\w+)', block)
            figure = re.search(r'figure_args\("(\w+)"', block)
            env = re.search(r"^\s+conda:\s*\n\s+(\w+)", block, re.M)
            if base is not None:
                if base not in bases:
                    continue
                stage, step, env_name = bases[base]
            elif command is None:
                continue  # aggregating targets
            else:
                stage, step, env_name = *command.groups(), env.group(1) if env else None
            bases[name] = (stage, step, env_name)
            if step == "{params.args}":
                step = figure.group(1) if figure else None
            found.append((path.stem, name, stage, step, env_name))
    return found


@pytest.fixture(scope="session")
def default_config():
    return load_config(REPO / "config" / "config.yaml")


@pytest.fixture(scope="session")
def spectra(default_config):
    """Real CAMB spectra (computed once per test session)."""
    return compute_camb_spectra(cosmology(default_config["cmb"]), 300)


def tiny_config(nside=8, **sky_overrides):
    """A complete small config: one GRF sky seen by LiteBIRD and by SO-SAT."""
    sky = {
        "kind": "grf",
        "seed": 5,
        "dust": {"beta": {"mean": 1.54, "amplitude": 0.3}},
        "synchrotron": {"beta": {"mean": -3.0, "amplitude": 0.25}},
        "galactic_envelope": {"amplitude": 5.0},
    }
    sky.update(sky_overrides)
    raw = {
        "cmb": {"lmax": 200},
        "skies": {"grf": sky},
        "instruments": {"litebird": "litebird", "sosat": "sosat"},
        "simulations": {
            "lb": {
                "sky": "grf",
                "instrument": "litebird",
                "nside": nside,
                "noise_realisations": 2,
                "seed": 9,
            },
            "so": {
                "sky": "grf",
                "instrument": "sosat",
                "nside": nside,
                "noise_realisations": 1,
                "seed": 10,
            },
        },
    }
    return validate_config(raw)


def tiny_workflow_config():
    """The tiny config with every stage switched on at its smallest (end-to-end runs)."""
    cfg = tiny_config()
    cfg["compsep"] = dict(
        cfg["compsep"],
        # so: also seen by SBI and the power-spectrum likelihood (npe.observed), so the
        # tiny run compares the methods on it (compare_all)
        simulations=["lb", "so"],
        zones=["GAL060_L"],
        noise_realisations=2,
        grid=dict(cfg["compsep"]["grid"], beta_d=[1, 3], temperature_d=[1], beta_s=[1]),
        multires={"GAL060": {"beta_d": 2, "temperature_d": 0, "beta_s": 0}},
        # Table 5 at nside 8 would fit three parameters per pixel with 2 realisations
        multires_variants={
            "table5": {
                f"GAL0{k}0": {"beta_d": 2, "temperature_d": 0, "beta_s": 1} for k in (2, 4, 6)
            }
        },
    )
    cfg["nilc"] = dict(cfg["nilc"], simulations=["so"], run=["joint"])
    cfg["npe"] = dict(
        cfg["npe"],
        nside=8,
        ell_min=8,
        chunks=2,
        simulations_per_chunk=40,
        coverage_simulations=10,
        test_sets={
            "fixed": {"simulations": 4, "fixed": {"r": 0.01}},
            # the foregrounds of simulation so held fixed, CMB and noise varying
            "so_sky": {"simulations": 3, "fixed": {"r": 0.01, "A_lens": 1.0}, "foreground": "so"},
        },
        ps_likelihood={"sets": ["so_sky"], "steps": 200, "burn": 100, "observed": True},
        training_fractions=[0.5],  # Fig. 1: one of the two training chunks, then both
        observed=["so"],
        posterior_samples=50,
        hyperparameters={"max_epochs": 2, "batch_size": 32, "hidden_features": 8},
        predictive={"simulations": 10},
    )
    return cfg


def user_map_placeholders(config_path, root) -> list[Path]:
    """Empty stand-ins, under ``root``, for the FITS files the maps skies of a config read
    (a dry run only checks that its inputs exist)."""
    from bmodesep.core.maps import band_paths, observation_paths
    from bmodesep.settings import resolve_instrument

    cfg = load_config(config_path)
    made = []
    for sim in cfg["simulations"].values():
        sky = cfg["skies"][sim["sky"]]
        if sky["kind"] != "maps":
            continue
        spec = sky["maps"]
        inst = resolve_instrument(cfg, sim["instrument"])
        freqs = inst.frequencies_ghz
        if spec["contains_noise"]:  # one file per split and band, noise included
            paths = observation_paths(spec["total"], freqs, inst.splits)
        else:
            paths = [
                p
                for key in ("total", "foregrounds")
                if spec[key]
                for p in band_paths(spec[key], freqs)
            ]
        for path in [*paths, *([spec["cmb"]] if spec["cmb"] else [])]:
            made.append(Path(root) / path)
            made[-1].parent.mkdir(parents=True, exist_ok=True)
            made[-1].touch()
    return made


@pytest.fixture
def config_factory():
    return lambda **kw: copy.deepcopy(tiny_config(**kw))


def binned_chi2(measured, expected, ell, lmin, lmax, dof_per_ell):
    """Chi-square of measured C_l against expected with cosmic-variance errors per l."""
    sel = (ell >= lmin) & (ell <= lmax)
    var = 2.0 * expected[sel] ** 2 / dof_per_ell[sel]
    return float(np.sum((measured[sel] - expected[sel]) ** 2 / var)), int(sel.sum())


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run."""
    table = output[output.index("Job stats:") :]
    rows = re.findall(r"^(\w+)\s+(\d+)$", table[: table.index("total")], re.M)
    return {name: int(count) for name, count in rows}


def config_file(cfg, directory) -> str:
    """Write a resolved config as JSON (as the workflow hands it to a job); its path."""
    import json

    path = Path(directory) / "stage-config.json"
    path.write_text(json.dumps(cfg, sort_keys=True))
    return str(path)


def bmodesep_command(*args) -> list[str]:
    """``python -m bmodesep ARGS`` with this interpreter (as the rules run ``bmodesep``)."""
    import sys

    return [sys.executable, "-m", "bmodesep", *map(str, args)]


class Mounts:
    """Small tmpfs folders under ``base`` (root only), unmounted at teardown; a test that
    cannot mount skips with the reason."""

    def __init__(self, base: Path):
        self.base = base
        self.mounted: list[Path] = []

    def tmpfs(self, name: str, size: str, readonly: bool = False, fill=None) -> Path:
        """A tmpfs folder ``name`` of ``size``; ``fill(path)`` puts its contents in first,
        then ``readonly`` remounts it read-only (which binds root too)."""
        why = "needs root and tmpfs mounts"
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip(f"{why}: not running as root")
        if shutil.which("mount") is None:
            pytest.skip(f"{why}: no mount command")
        target = self.base / name
        target.mkdir()
        options = f"size={size}"
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"{why}: mount -t tmpfs -o {options} failed: {r.stderr.strip()}")
        self.mounted.append(target)
        if fill is not None:
            fill(target)
        if readonly:
            r = subprocess.run(
                ["mount", "-o", "remount,ro", str(target)], capture_output=True, text=True
            )
            if r.returncode != 0:
                pytest.skip(f"{why}: remount,ro failed: {r.stderr.strip()}")
            try:
                (target / "probe").write_text("")
            except OSError:
                return target
            pytest.skip(f"{why}: {target} is still writable after remount,ro")
        return target

    def unmount_all(self) -> None:
        for target in reversed(self.mounted):
            r = subprocess.run(["umount", str(target)], capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def mounts(tmp_path):
    m = Mounts(tmp_path)
    yield m
    m.unmount_all()


def litebird_grf_problem(n_realisations: int, noise_seed: int = 5):
    """The benchmarks' LiteBIRD-like GRF sky at nside 16 on 20% of the sky as a zone's
    fitting problem with ``n_realisations`` noise realisations, and ``noise(seed)``, the
    noise realisations of another seed."""
    import healpy as hp

    from benchmarks.simulate import simulation_setup
    from bmodesep.core.compsep import fitting, gridsearch
    from bmodesep.core.compsep import likelihood as compsep
    from bmodesep.core.simulate.instrument import simulate_noise, white_noise_sigma_per_pixel
    from bmodesep.core.simulate.sky import foreground_maps

    nside = 16
    setup = simulation_setup("litebird", nside, {"galactic_envelope": {"amplitude": 10.0}})
    inst, lmax = setup.instrument, setup.lmax
    zone = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2] > 0.6
    sky = setup.draw(nside)
    pix = np.flatnonzero(zone)
    fg = foreground_maps(sky, inst.frequencies_ghz)[:, :, pix]

    def noise(seed):
        return lambda i: simulate_noise(inst, nside, lmax, seed, i).qu[0][:, :, pix]

    problem = gridsearch.Problem(
        model=compsep.SpectralModel(inst.frequencies_ghz),
        signal=fg + sky.cmb_qu[None][:, :, pix],
        foreground=fg,
        noise=gridsearch.memoised_noise(noise(noise_seed), n_realisations),
        n_realisations=n_realisations,
        ninv=1.0 / white_noise_sigma_per_pixel(inst, nside) ** 2,
        start={"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0},
        bounds={"beta_d": (0.5, 5.0), "temperature_d": (5.0, 100.0), "beta_s": (-6.0, -0.5)},
        options=fitting.FitOptions(),
    )
    return zone, problem, noise
