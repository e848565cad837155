"""Bad input of every kind ends as one clear ``bmodesep: error:`` line and leaves nothing behind.

One parametrised table (issue 14): each case builds a bad config, input file or output
place in ``tmp_path``, runs one ``bmodesep <stage> <step>`` command and checks that

* the exit status is not 0 (2 for a ``BmodesepError``), and no crash;
* the last non-empty line of stderr starts with ``bmodesep: error:`` and names the
  offending config key (``instruments.litebird``, ``simulations.lb.nside``...) or file;
* no output file, no temporary file (``.NAME.tmp-*``) and no checkpoint folder
  (``*.parts``) is left in the output folder.

Commands run in-process (``bmodesep.cli.main``) unless a subprocess matters (a full disk
could crash the interpreter).  The read-only and full-disk cases mount small tmpfs
folders, which needs root; they skip, with the reason, where that is not possible.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from conftest import Mounts, bmodesep_command, config_file, tiny_config

from bmodesep import cli, log
from bmodesep.config import validate_config
from bmodesep.core import harmonics
from bmodesep.core.npe import prior
from bmodesep.products import compsep as compsep_products
from bmodesep.products import io, sims
from bmodesep.products import npe as npe_products
from bmodesep.stages import simulate

NSIDE = 8
ZONE = "GAL060_L"
ERROR = "bmodesep: error:"


# ---------------------------------------------------------------- valid upstream products
@dataclass(frozen=True)
class Inputs:
    """Cheap valid products of the tiny config, made once per module."""

    root: Path
    cfg: dict[str, Any]  # tiny config, cmb.lmax 100, compsep on 'lb'
    config: str  # cfg as the JSON stage config the workflow hands a job
    spectra: Path
    sky: Path
    masks: Path
    signal: Path
    chunk: Path  # an npe_simulations chunk holding x/joint only


def base_config() -> dict[str, Any]:
    cfg = tiny_config(NSIDE)
    cfg["cmb"]["lmax"] = 100
    cfg["compsep"] = dict(
        cfg["compsep"],
        simulations=["lb"],
        zones=[ZONE],
        grid=dict(cfg["compsep"]["grid"], beta_d=[1, 2], temperature_d=[1], beta_s=[1]),
    )
    return validate_config(cfg)


def write_chunk(path: Path, n: int = 3, n_data: int = 15) -> Path:
    rng = np.random.default_rng(1)
    theta = prior.prior().sample(n, rng)
    npe_products.write_simulations(
        path,
        theta,
        np.arange(n, dtype=np.int64),
        np.ones(n),
        {"joint": rng.uniform(1e-3, 1e-2, (n, n_data))},
        io.provenance({"npe": {"seed": 0}}, 0, "npe_simulations"),
        set_name="train",
        chunk=0,
        fixed=[],
        bin_edges=np.array([30, 45]),
        nside=16,
        lmax=47,
    )
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    cfg = base_config()
    paths = {name: root / f"{name}.h5" for name in ("spectra", "sky", "masks", "signal")}
    simulate.camb_spectra(cfg, output=paths["spectra"])
    simulate.sky(cfg, "lb", paths["spectra"], paths["sky"])
    simulate.masks(cfg, "lb", paths["masks"], sky=paths["sky"])
    simulate.frequency_maps(cfg, "lb", paths["sky"], paths["signal"])
    return Inputs(
        root=root,
        cfg=cfg,
        config=config_file(cfg, root),
        chunk=write_chunk(root / "chunk.h5"),
        **paths,
    )


# ---------------------------------------------------------------- the table
@dataclass
class Run:
    """One command of a case and what its error must name."""

    argv: list[str]
    names: list[str]  # each must appear in the error line (config key, file path...)
    subprocess: bool = False
    env: dict[str, str] = field(default_factory=dict)
    unchanged: list[Path] = field(default_factory=list)  # files whose bytes must not change


@dataclass
class Case:
    """What a case builder gets: the module's inputs, its own folders and the mounter."""

    inputs: Inputs
    tmp: Path  # for bad inputs
    out: Path  # the output folder (must stay as it was)
    mounts: Mounts

    def config(self, mutate: Callable[[dict], Any] | None = None, name="bad.yaml") -> str:
        """The base config, changed by ``mutate``, written as YAML; its path."""
        cfg = copy.deepcopy(self.inputs.cfg)
        if mutate is not None:
            mutate(cfg)
        path = self.tmp / name
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return str(path)

    def text_config(self, content: str | bytes, name: str = "bad.yaml") -> str:
        path = self.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    def copy(self, source: Path, name: str) -> Path:
        target = self.tmp / name
        shutil.copyfile(source, target)
        return target

    # commands of each stage, with valid inputs unless replaced
    def noise(self, config: str, output: Path | None = None, simulation="lb") -> list[str]:
        output = output or self.out / "noise.h5"
        return [
            *("simulate", "noise", "--config", config, "--simulation", simulation),
            *("--output", str(output)),
        ]

    def sky(self, config: str) -> list[str]:
        i = self.inputs
        return [
            *("simulate", "sky", "--config", config, "--simulation", "lb"),
            *("--spectra", str(i.spectra), "--output", str(self.out / "sky.h5")),
        ]

    def masks(self, config: str) -> list[str]:
        return [
            *("simulate", "masks", "--config", config, "--simulation", "lb"),
            *("--output", str(self.out / "masks.h5")),
        ]

    def frequency_maps(self, sky: Path | str) -> list[str]:
        return [
            *("simulate", "frequency_maps", "--config", self.inputs.config),
            *("--simulation", "lb", "--sky", str(sky), "--output", str(self.out / "signal.h5")),
        ]

    def grid_chunk(self, patches: Path | str, config: str | None = None) -> list[str]:
        i = self.inputs
        return [
            *("compsep", "grid_chunk", "--config", config or i.config, "--simulation", "lb"),
            *("--zone", ZONE, "--chunk", "0", "--masks", str(i.masks)),
            *("--signal", str(i.signal), "--patches", str(patches)),
            *("--output", str(self.out / "chunk0.h5")),
        ]

    def grid_select(self, config: str) -> list[str]:
        return [
            *("compsep", "grid_select", "--config", config, "--simulation", "lb"),
            *("--zone", ZONE, "--chunks", str(self.tmp / "chunk0.h5")),
            *("--output", str(self.out / "selection.h5")),
        ]

    def r_likelihood(self, config: str) -> list[str]:
        i = self.inputs
        return [
            *("rlike", "r_likelihood", "--config", config, "--simulation", "lb"),
            *("--method", "single", "--sky", str(i.sky), "--spectra", str(i.spectra)),
            *("--fits", str(self.tmp / "fit.h5"), "--output", str(self.out / "rlike.h5")),
        ]

    def npe_chunk(self, config: str, chunk: int = 0) -> list[str]:
        return [
            *("npe", "npe_chunk", "--config", config, "--set", "train", "--chunk", str(chunk)),
            *("--spectra", str(self.inputs.spectra), "--output", str(self.out / "chunk.h5")),
        ]

    def npe_train(self, chunk: Path, compression: str = "joint") -> list[str]:
        return [
            *("npe", "npe_train", "--config", self.inputs.config),
            *("--compression", compression, "--chunks", str(chunk)),
            *("--output", str(self.out / "estimator.h5")),
        ]


CASES: dict[str, Callable[[Case], Run]] = {}


def case(name: str):
    def register(build: Callable[[Case], Run]) -> Callable[[Case], Run]:
        assert name not in CASES, name
        CASES[name] = build
        return build

    return register


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation setting the dotted config key ``path`` to ``value``."""

    def mutate(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


# ---- the config: keys, types, values
@case("unknown-key")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("colour", "blue"))), ["'colour'"])


@case("wrong-type")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("simulations.lb.nside", "eight"))), ["simulations.lb.nside"])


@case("nside-not-power-of-two")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("simulations.lb.nside", 24))), ["simulations.lb.nside"])


@case("negative-noise-realisations")
def _(c: Case) -> Run:
    bad = c.config(_set("simulations.lb.noise_realisations", -1))
    return Run(c.noise(bad), ["simulations.lb.noise_realisations"])


@case("unknown-pysm-preset")
def _(c: Case) -> Run:
    def mutate(cfg):
        cfg["skies"]["dusty"] = {"kind": "pysm", "pysm": {"preset": "d1s99"}}
        cfg["simulations"]["lb"]["sky"] = "dusty"

    return Run(c.sky(c.config(mutate)), ["skies.dusty.pysm.preset"])


@case("unknown-instrument-preset")
def _(c: Case) -> Run:
    bad = c.config(_set("instruments.litebird", "litebird2"))
    return Run(c.noise(bad), ["instruments.litebird", "'litebird2'"])


@case("nested-key-typo")
def _(c: Case) -> Run:
    """A typo of a nested key: the error line names the entry, the key and the fix."""

    def mutate(cfg):
        sim = cfg["simulations"].pop("lb")
        sim["noise_realizations"] = sim.pop("noise_realisations")
        cfg["simulations"]["litebird_grf"] = sim
        cfg["compsep"]["simulations"] = ["litebird_grf"]

    names = ["simulations.litebird_grf", "noise_realizations", "noise_realisations"]
    return Run(c.noise(c.config(mutate), simulation="litebird_grf"), names)


@case("empty-grid")
def _(c: Case) -> Run:
    return Run(c.grid_select(c.config(_set("compsep.grid.beta_d", []))), ["compsep.grid.beta_d"])


@case("inverted-bounds")
def _(c: Case) -> Run:
    bad = c.config(_set("compsep.bounds.beta_d", [5.0, 0.5]))
    return Run(c.grid_select(bad), ["compsep.bounds.beta_d"])


@case("start-outside-bounds")
def _(c: Case) -> Run:
    return Run(c.grid_select(c.config(_set("compsep.start.beta_d", 9.0))), ["compsep.start.beta_d"])


@case("r-grid-of-one-point")
def _(c: Case) -> Run:
    return Run(c.r_likelihood(c.config(_set("rlike.r_points", 1))), ["rlike.r_points"])


@case("r-min-equals-r-max")
def _(c: Case) -> Run:
    def mutate(cfg):
        cfg["rlike"]["r_min"] = cfg["rlike"]["r_max"] = 0.01

    return Run(c.r_likelihood(c.config(mutate)), ["rlike.r_min"])


@case("observed-simulation-not-in-nilc")
def _(c: Case) -> Run:
    def mutate(cfg):
        cfg["npe"] = {"chunks": 2, "simulations_per_chunk": 3, "nside": 8, "ell_min": 8}
        cfg["npe"]["observed"] = ["so"]
        cfg["nilc"]["simulations"] = []

    return Run(c.npe_chunk(c.config(mutate)), ["npe.observed", "'so'"])


@case("unknown-simulation")
def _(c: Case) -> Run:
    return Run(c.noise(c.inputs.config, simulation="nope"), ["'nope'"])


@case("chunk-index-out-of-range")
def _(c: Case) -> Run:
    bad = c.config(_set("npe", {"chunks": 2, "simulations_per_chunk": 3}))
    return Run(c.npe_chunk(bad, chunk=5), ["chunk 5", "'train'"])


# ---- issue 25: values that used to pass the schema or give a traceback
@case("integer-written-as-float")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("simulations.lb.nside", 8.0))), ["simulations.lb.nside"])


@case("chunk-count-written-as-float")
def _(c: Case) -> Run:
    return Run(c.grid_select(c.config(_set("compsep.chunks", 2.0))), ["compsep.chunks"])


@case("integer-written-as-boolean")
def _(c: Case) -> Run:
    bad = c.config(_set("simulations.lb.noise_realisations", True))
    return Run(c.noise(bad), ["simulations.lb.noise_realisations"])


@case("fractional-realisation-count")
def _(c: Case) -> Run:
    bad = c.config(_set("simulations.lb.noise_realisations", 2.5))
    return Run(c.noise(bad), ["simulations.lb.noise_realisations"])


@case("more-grid-jobs-than-configurations")
def _(c: Case) -> Run:
    """2 x 1 x 1 configurations in 50 jobs: chunk 40 would hold none."""
    bad = c.config(_set("compsep.chunks", 50))
    argv = c.grid_chunk(c.inputs.root / "patches.h5", bad)
    argv[argv.index("--chunk") + 1] = "40"
    return Run(argv, ["compsep.chunks", "50"])


@case("negative-cmb-r")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("cmb.r", -0.5))), ["cmb.r"])


@case("nan-cmb-r")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("cmb.r", float("nan")))), ["cmb.r", "finite"])


@case("infinite-lensing-amplitude")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("cmb.a_lens", float("inf")))), ["cmb.a_lens", "finite"])


@case("nan-depth")
def _(c: Case) -> Run:
    def mutate(cfg):
        cfg["instruments"]["custom"] = {
            "frequencies_ghz": [100.0, 143.0],
            "depth_uk_arcmin": [10.0, float("nan")],
        }
        cfg["simulations"]["lb"]["instrument"] = "custom"

    return Run(c.noise(c.config(mutate)), ["instruments.custom.depth_uk_arcmin[1]", "finite"])


@case("nan-in-a-bound")
def _(c: Case) -> Run:
    bad = c.config(_set("compsep.bounds.beta_d", [0.5, float("nan")]))
    return Run(c.grid_select(bad), ["compsep.bounds.beta_d[1]"])


def _npe(test_sets: dict) -> Callable[[dict], None]:
    def mutate(cfg):
        cfg["npe"] = {"chunks": 2, "simulations_per_chunk": 3, "nside": 8, "ell_min": 8}
        cfg["npe"]["test_sets"] = test_sets

    return mutate


@case("fixed-r-below-the-prior-support")
def _(c: Case) -> Run:
    bad = c.config(_npe({"low": {"simulations": 2, "fixed": {"r": -0.3}}}))
    return Run(c.npe_chunk(bad), ["npe.test_sets.low.fixed.r", "-0.3", "support"])


@case("fixed-r-far-outside-the-prior")
def _(c: Case) -> Run:
    bad = c.config(_npe({"high": {"simulations": 2, "fixed": {"r": 5.0}}}))
    return Run(c.npe_chunk(bad), ["npe.test_sets.high.fixed.r", "5.0"])


@case("nan-fixed-parameter")
def _(c: Case) -> Run:
    bad = c.config(_npe({"odd": {"simulations": 2, "fixed": {"beta_d": float("nan")}}}))
    return Run(c.npe_chunk(bad), ["npe.test_sets.odd.fixed.beta_d", "finite"])


@case("job-larger-than-its-memory")
def _(c: Case) -> Run:
    """nside 8192: one set of 15 LiteBIRD band maps is 180 GiB, against 16 GB granted."""

    def mutate(cfg):
        cfg["simulations"]["lb"].update(nside=8192, lmax=cfg["cmb"]["lmax"])

    bad = c.config(mutate)
    return Run(
        c.noise(bad), ["simulations.lb.nside", "8192", "GiB"], env={"SLURM_MEM_PER_NODE": "16000"}
    )


@case("results-dir-is-a-file")
def _(c: Case) -> Run:
    blocker = c.tmp / "results"
    blocker.write_text("not a folder\n")
    return Run(c.noise(c.config(_set("results_dir", str(blocker)))), ["results_dir", str(blocker)])


@case("duplicate-yaml-section")
def _(c: Case) -> Run:
    path = c.config()
    with open(path, "a") as f:
        f.write("cmb:\n  r: 0.01\n")
    return Run(c.noise(path), [path, "'cmb'", "twice"])


@case("duplicate-simulation-name")
def _(c: Case) -> Run:
    text = yaml.safe_dump(c.inputs.cfg, sort_keys=False)
    lines = text.splitlines()
    start = lines.index("simulations:") + 1
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        entry.append(line)
    lines[start:start] = entry  # 'lb:' twice in 'simulations'
    path = c.text_config("\n".join(lines) + "\n")
    return Run(c.noise(path), [path, "'lb'", "twice"])


@case("lmax-above-three-nside")
def _(c: Case) -> Run:
    bad = c.config(_set("simulations.lb.lmax", 3 * NSIDE))
    return Run(c.noise(bad), ["simulations.lb.lmax", "3 nside - 1"])


@case("npe-lmax-above-three-nside")
def _(c: Case) -> Run:
    def mutate(cfg):
        _npe({})(cfg)
        cfg["npe"]["lmax"] = 40

    return Run(c.npe_chunk(c.config(mutate)), ["npe.lmax", "3 npe.nside - 1"])


@case("duplicate-grid-entries")
def _(c: Case) -> Run:
    bad = c.config(_set("compsep.grid.beta_d", [5, 5, 10]))
    return Run(c.grid_select(bad), ["compsep.grid.beta_d", "more than once"])


@case("duplicate-zones")
def _(c: Case) -> Run:
    return Run(c.grid_select(c.config(_set("compsep.zones", [ZONE, ZONE]))), ["compsep.zones"])


@case("duplicate-compressions-run")
def _(c: Case) -> Run:
    return Run(c.noise(c.config(_set("nilc.run", ["joint", "joint"]))), ["nilc.run"])


@case("r-grid-too-large")
def _(c: Case) -> Run:
    return Run(c.r_likelihood(c.config(_set("rlike.r_points", 10**10))), ["rlike.r_points"])


# ---- issue 25: command-line arguments and outputs that are inputs
@case("negative-device-count")
def _(c: Case) -> Run:
    return Run([*c.grid_chunk(c.inputs.root / "patches.h5"), "--devices", "-1"], ["--devices"])


@case("negative-chunk-index")
def _(c: Case) -> Run:
    argv = c.npe_chunk(c.inputs.config)
    argv[argv.index("--chunk") + 1] = "-1"
    return Run(argv, ["--chunk"])


@case("chunk-index-not-a-number")
def _(c: Case) -> Run:
    argv = c.npe_chunk(c.inputs.config)
    argv[argv.index("--chunk") + 1] = "first"
    return Run(argv, ["--chunk", "'first'"])


@case("missing-required-argument")
def _(c: Case) -> Run:
    return Run(["simulate", "noise", "--config", c.inputs.config], ["--simulation"])


@case("output-is-the-input")
def _(c: Case) -> Run:
    """``--sky sky.h5 --output sky.h5`` would replace the sky by a signal product."""
    sky = c.copy(c.inputs.sky, "sky.h5")
    argv = c.frequency_maps(sky)
    argv[argv.index("--output") + 1] = str(sky)
    return Run(argv, ["--output", str(sky), "--sky"], unchanged=[sky])


@case("output-is-the-input-through-a-link")
def _(c: Case) -> Run:
    sky = c.copy(c.inputs.sky, "sky.h5")
    link = c.tmp / "same-sky.h5"
    link.symlink_to(sky)
    argv = c.frequency_maps(sky)
    argv[argv.index("--output") + 1] = str(link)
    return Run(argv, ["--output", str(link), str(sky)], unchanged=[sky])


@case("output-is-the-config")
def _(c: Case) -> Run:
    config = c.config()
    return Run(c.noise(config, Path(config)), ["--output", config], unchanged=[Path(config)])


@case("same-chunk-twice")
def _(c: Case) -> Run:
    """Training on a chunk given twice would duplicate its rows (into validation too)."""
    argv = c.npe_train(c.inputs.chunk)
    argv[argv.index("--chunks") + 1 : argv.index("--chunks") + 1] = [str(c.inputs.chunk)]
    return Run(argv, ["--chunks", str(c.inputs.chunk), "twice"])


@case("same-patch-output-twice")
def _(c: Case) -> Run:
    i = c.inputs
    out = str(c.out / "K1.h5")
    argv = [
        *("compsep", "kmeans_patches", "--config", i.config, "--simulation", "lb"),
        *("--zone", ZONE, "--masks", str(i.masks), "--outputs", out, out),
    ]
    return Run(argv, ["--outputs", out, "twice"])


@case("two-inputs-the-same-file")
def _(c: Case) -> Run:
    i = c.inputs
    argv = c.grid_chunk(i.root / "patches.h5")
    argv[argv.index("--signal") + 1] = str(i.masks)
    return Run(argv, ["--signal", str(i.masks), "--masks"])


@case("unknown-stage")
def _(c: Case) -> Run:
    return Run(["separate", "grid_chunk", "--config", c.inputs.config], ["'separate'"])


@case("nan-start-value")
def _(c: Case) -> Run:
    bad = c.config(_set("compsep.start.beta_d", float("nan")))
    return Run(c.grid_select(bad), ["compsep.start.beta_d", "finite"])


@case("npe-nside-written-as-float")
def _(c: Case) -> Run:
    def mutate(cfg):
        _npe({})(cfg)
        cfg["npe"]["nside"] = 8.0

    return Run(c.npe_chunk(c.config(mutate)), ["npe.nside", "integer"])


# ---- the config file itself
@case("config-not-yaml")
def _(c: Case) -> Run:
    path = c.text_config("simulations: [unclosed\n  nside: {\n")
    return Run(c.noise(path), [path])


@case("zero-length-config")
def _(c: Case) -> Run:
    path = c.text_config("")
    return Run(c.noise(path), [path])


@case("config-only-a-comment")
def _(c: Case) -> Run:
    path = c.text_config("# the simulations go here\n")
    return Run(c.noise(path), [path])


@case("config-list-at-top-level")
def _(c: Case) -> Run:
    path = c.text_config("- simulations\n- instruments\n")
    return Run(c.noise(path), [path])


@case("config-scalar-at-top-level")
def _(c: Case) -> Run:
    path = c.text_config("just a string\n")
    return Run(c.noise(path), [path])


@case("config-json-not-valid")
def _(c: Case) -> Run:
    path = c.text_config('{"simulations": {"lb": ', name="stage.json")
    return Run(c.noise(path), [path])


@case("config-is-a-folder")
def _(c: Case) -> Run:
    path = c.tmp / "config.yaml"
    path.mkdir()
    return Run(c.noise(str(path)), [str(path)])


@case("config-not-utf8")
def _(c: Case) -> Run:
    path = c.text_config(b"simulations:\n  lb: \xff\xfe\x00\x81\n")
    return Run(c.noise(path), [path])


# ---- input files
@case("pysm-sky-without-templates")
def _(c: Case) -> Run:
    def mutate(cfg):
        cfg["skies"]["dusty"] = {"kind": "pysm", "pysm": {"preset": "d1s1"}}
        cfg["simulations"]["lb"]["sky"] = "dusty"

    empty = c.tmp / "pysm-data"
    empty.mkdir()
    return Run(c.sky(c.config(mutate)), [str(empty)], env={"PYSM_LOCAL_DATA": str(empty)})


@case("planck-mask-file-missing")
def _(c: Case) -> Run:
    missing = str(c.tmp / "HFI_Mask_GalPlane.fits")

    def mutate(cfg):
        cfg["masks"] = dict(cfg["masks"], source="planck", planck_file=missing)

    return Run(c.masks(c.config(mutate)), [missing])


@case("planck-mask-file-not-fits")
def _(c: Case) -> Run:
    bad = c.tmp / "HFI_Mask_GalPlane.fits"
    bad.write_text("SIMPLE? no: this is a text file\n")

    def mutate(cfg):
        cfg["masks"] = dict(cfg["masks"], source="planck", planck_file=str(bad))

    return Run(c.masks(c.config(mutate)), [str(bad)])


@case("true-patch-map-wrong-pixel-count")
def _(c: Case) -> Run:
    patches = c.tmp / "patches.h5"
    with h5py.File(patches, "w") as f:
        f["patches"] = np.zeros(harmonics.npix(NSIDE // 2), dtype=np.int64)

    def mutate(cfg):
        cfg["skies"]["grf"]["kind"] = "true_patch"
        cfg["skies"]["grf"]["patches"] = {
            "beta_d": {"file": str(patches)},
            "temperature_d": {"superpixel_nside": 0},
            "beta_s": {"superpixel_nside": 1},
        }

    return Run(c.sky(c.config(mutate)), [str(patches)])


@case("truncated-hdf5")
def _(c: Case) -> Run:
    bad = c.copy(c.inputs.sky, "sky.h5")
    with open(bad, "r+b") as f:
        f.truncate(bad.stat().st_size // 2)
    return Run(c.frequency_maps(bad), [str(bad)])


@case("zero-length-hdf5")
def _(c: Case) -> Run:
    bad = c.tmp / "sky.h5"
    bad.touch()
    return Run(c.frequency_maps(bad), [str(bad)])


@case("nan-in-a-map")
def _(c: Case) -> Run:
    bad = c.copy(c.inputs.sky, "sky.h5")
    with h5py.File(bad, "a") as f:
        f[sims.CMB_QU][0, 3] = np.nan
    return Run(c.frequency_maps(bad), [str(bad), sims.CMB_QU])


@case("corrupted-bytes-in-a-product")
def _(c: Case) -> Run:
    """250 values of the CMB map overwritten on disk, below HDF5 (a bad disk or copy)."""
    bad = c.copy(c.inputs.sky, "sky.h5")
    with h5py.File(bad, "r") as f:
        offset = f[sims.CMB_QU].id.get_chunk_info(0).byte_offset
    with open(bad, "r+b") as f:
        f.seek(offset + 64)
        f.write(np.full(250, 1.0e3).tobytes())
    return Run(c.frequency_maps(bad), [str(bad), sims.CMB_QU, "checksum"])


@case("patch-file-not-hdf5")
def _(c: Case) -> Run:
    patches = c.tmp / "patches.h5"
    patches.write_text("label per pixel, as text\n")

    def mutate(cfg):
        cfg["skies"]["grf"]["kind"] = "true_patch"
        cfg["skies"]["grf"]["patches"] = {
            "beta_d": {"file": str(patches)},
            "temperature_d": {"superpixel_nside": 0},
            "beta_s": {"superpixel_nside": 1},
        }

    return Run(c.sky(c.config(mutate)), [str(patches)])


@case("product-of-the-wrong-kind")
def _(c: Case) -> Run:
    masks = str(c.inputs.masks)
    return Run(c.frequency_maps(masks), [masks, "'masks'", "'sky'"])


@case("missing-input")
def _(c: Case) -> Run:
    missing = str(c.tmp / "sky.h5")
    return Run(c.frequency_maps(missing), [missing])


@case("kmeans-labels-wrong-length")
def _(c: Case) -> Run:
    bad = c.tmp / "patches_K2.h5"
    labels = np.zeros(harmonics.npix(NSIDE // 2), dtype=np.int64)
    compsep_products.write_patch_map(bad, labels, ZONE, 2, io.provenance({}, 0, "patches"))
    return Run(c.grid_chunk(bad), [str(bad)])


@case("patch-file-of-another-kind")
def _(c: Case) -> Run:
    sky = str(c.inputs.sky)
    return Run(c.grid_chunk(sky), [sky, "'patch_map'"])


@case("nan-in-an-sbi-chunk")
def _(c: Case) -> Run:
    bad = c.copy(c.inputs.chunk, "chunk0.h5")
    with h5py.File(bad, "a") as f:
        f[npe_products.x_name("joint")][1, 2] = np.nan
    return Run(c.npe_train(bad), [str(bad)])


@case("sbi-chunk-of-another-compression")
def _(c: Case) -> Run:
    chunk = str(c.inputs.chunk)
    return Run(c.npe_train(c.inputs.chunk, "joint_cds"), [chunk, "joint_cds"])


# ---- the output place
@case("output-parent-is-a-file")
def _(c: Case) -> Run:
    blocker = c.out / "noise"
    blocker.write_text("a regular file where the output folder should be\n")
    return Run(c.noise(c.inputs.config, blocker / "noise.h5"), [str(blocker)])


@case("output-is-a-folder")
def _(c: Case) -> Run:
    folder = c.out / "noise.h5"
    folder.mkdir()
    return Run(c.noise(c.inputs.config, folder), [str(folder)])


@case("read-only-output-folder")
def _(c: Case) -> Run:
    c.out = c.mounts.tmpfs("read-only", "64k", readonly=True)
    output = c.out / "noise.h5"
    return Run(c.noise(c.inputs.config, output), [str(output), "Read-only file system"])


@case("full-disk")
def _(c: Case) -> Run:
    """368 kB of noise maps (2 x 15 bands x Q/U at nside 8) into a 16 kB tmpfs."""
    c.out = c.mounts.tmpfs("full", "16k")
    output = c.out / "noise.h5"
    names = [str(output), "No space left on device"]
    return Run(c.noise(c.inputs.config, output), names, subprocess=True)


# ---------------------------------------------------------------- running and checking
def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:
        err = capsys.readouterr().err
        summary = "".join(traceback.format_exception_only(exc)).strip()
        pytest.fail(f"uncaught exception instead of '{ERROR}': {summary}\nstderr:\n{err}")
    finally:
        log.unconfigure()
    return rc, capsys.readouterr().err


def run_subprocess(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    command = bmodesep_command(*argv)
    r = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if r.returncode < 0 or r.returncode >= 128:
        pytest.fail(f"the command crashed (exit status {r.returncode})\nstderr:\n{r.stderr}")
    return r.returncode, r.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def leftovers(names: set[str]) -> list[str]:
    return sorted(
        n for n in names if io._TMP_MARK in Path(n).name or Path(n).name.endswith(".parts")
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_error_and_leaves_nothing(
    name, inputs, tmp_path, mounts, capsys, monkeypatch
):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    c = Case(inputs=inputs, tmp=tmp_path / "in", out=tmp_path / "out", mounts=mounts)
    run = CASES[name](c)
    before = listing(c.out)
    digests = [sha(p) for p in run.unchanged]
    if run.subprocess:
        rc, stderr = run_subprocess(run.argv, run.env)
    else:
        for key, value in run.env.items():
            monkeypatch.setenv(key, value)
        rc, stderr = run_in_process(run.argv, capsys)
    line = error_line(stderr)
    after = listing(c.out)

    problems = []
    if rc == 0:
        problems.append("exit status 0")
    if "Traceback" in stderr:
        problems.append("a traceback on stderr")
    if not line.startswith(ERROR):
        problems.append(f"the last stderr line does not start with '{ERROR}'")
    missing = [n for n in run.names if n not in line]
    if missing:
        elsewhere = [n for n in missing if n in stderr]
        problems.append(
            f"the last stderr line does not name {missing}"
            + (f" (earlier lines name {elsewhere})" if elsewhere else "")
        )
    if leftovers(after):
        problems.append(f"temporary files left in {c.out}: {leftovers(after)}")
    if after != before:
        problems.append(f"new files in {c.out}: {sorted(after - before)}")
    changed = [str(p) for p, digest in zip(run.unchanged, digests, strict=True) if sha(p) != digest]
    if changed:
        problems.append(f"inputs changed: {changed}")
    assert not problems, "\n".join([*problems, f"last stderr line: {line!r}", "stderr:", stderr])


def test_the_table_has_at_least_75_kinds():
    assert len(CASES) >= 75
