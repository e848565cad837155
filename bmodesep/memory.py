"""Will a job fit in memory?  Checked before any work, with the key to change.

A simulation's jobs hold at least one set of its band maps (``bands x Q/U x pixels``
float64); the noise and NILC jobs hold one per split.  That lower bound alone is 180 GiB
for 15 bands at nside 8192, so a config that cannot run fails at once with one line naming
``simulations.<name>.nside`` instead of a numpy ``Unable to allocate`` traceback minutes
in.  The memory a job may use is the smallest of the machine's physical memory, the
cgroup limit the job runs under (SLURM, containers) and the memory SLURM granted it
(``SLURM_MEM_PER_NODE``, ``SLURM_MEM_PER_CPU``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bmodesep.errors import ConfigError

GIB = 2**30
CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def _physical_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_bytes() -> int | None:
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # 'max' or a huge number: no limit
            return int(text)
    return None


def _slurm_bytes() -> int | None:
    """The memory SLURM granted the job (``--mem`` or ``--mem-per-cpu``), in bytes."""
    try:
        if os.environ.get("SLURM_MEM_PER_NODE"):
            return int(os.environ["SLURM_MEM_PER_NODE"]) * 2**20
        if os.environ.get("SLURM_MEM_PER_CPU"):
            cpus = int(os.environ.get("SLURM_CPUS_ON_NODE") or 1)
            return int(os.environ["SLURM_MEM_PER_CPU"]) * cpus * 2**20
    except ValueError:
        return None
    return None


def usable_bytes() -> int | None:
    """Memory this job may use: physical memory, capped by a cgroup limit and by what
    SLURM granted (None if none is known)."""
    known = [b for b in (_physical_bytes(), _cgroup_bytes(), _slurm_bytes()) if b]
    return min(known) if known else None


def band_map_bytes(n_freq: int, nside: int, splits: int = 1) -> int:
    """Bytes of one set of Q/U maps in every band (and split), float64."""
    return 8 * 2 * 12 * nside**2 * n_freq * splits


def check_simulation_fits(config: Mapping[str, Any], name: str, limit: int | None) -> None:
    """ConfigError naming ``simulations.<name>.nside`` if one band-map set exceeds ``limit``."""
    from bmodesep.settings import resolve_instrument  # local: settings imports the core

    if limit is None or name not in config.get("simulations", {}):
        return
    sim = config["simulations"][name]
    inst = resolve_instrument(config, sim["instrument"])
    need = band_map_bytes(inst.n_freq, sim["nside"])
    if need > limit:
        raise ConfigError(
            f"simulations.{name}.nside: {sim['nside']} needs at least {need / GIB:.1f} GiB "
            f"for one set of its {inst.n_freq} band maps, and this job may use "
            f"{limit / GIB:.1f} GiB"
        )


def check_npe_fits(config: Mapping[str, Any], limit: int | None) -> None:
    """ConfigError naming ``npe.nside`` if one simulation's split maps exceed ``limit``."""
    from bmodesep.settings import resolve_instrument

    npe = config.get("npe")
    if limit is None or not npe or npe["instrument"] not in config.get("instruments", {}):
        return
    inst = resolve_instrument(config, npe["instrument"])
    need = band_map_bytes(inst.n_freq, npe["nside"], inst.splits)
    if need > limit:
        raise ConfigError(
            f"npe.nside: {npe['nside']} needs at least {need / GIB:.1f} GiB for the "
            f"{inst.n_freq} x {inst.splits} band maps of one simulation, and this job may use "
            f"{limit / GIB:.1f} GiB"
        )


# the steps that hold a simulation's band maps, and the one that simulates SBI data sets
# (a figure or an r likelihood of the same simulation holds none: no check there)
BAND_MAP_STEPS = (
    "sky",
    "frequency_maps",
    "noise",
    "grid_chunk",
    "compsep_fit",
    "nilc_compress",
    "npe_ps_observed",
)
SIMULATING_NPE_STEPS = ("npe_chunk",)


def check_job_fits(config: Mapping[str, Any], step: str, args: Mapping[str, Any]) -> None:
    """The lower-bound memory check of one ``bmodesep <stage> <step>`` job."""
    limit = usable_bytes()
    if step in BAND_MAP_STEPS and args.get("simulation") is not None:
        check_simulation_fits(config, args["simulation"], limit)
    if step in SIMULATING_NPE_STEPS:
        check_npe_fits(config, limit)
