"""Snakemake's benchmark files (``benchmarks/<rule>/<wildcards>.tsv``), read for costs.

Each holds a header and one row per run of the job (``--benchmark-repeats``), with the
CPU time of the job's processes in column ``cpu_time`` (seconds, user + system, the
children included).  The last row is the job's latest run.  Snakemake writes ``NA`` for a
job that ended before its first measurement (well under a second): counted as 0.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from bmodesep.errors import DataError

CPU_TIME = "cpu_time"


def cpu_seconds(path) -> float:
    """CPU seconds of a job's latest run, from its benchmark file."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except OSError as exc:
        raise DataError(f"cannot read benchmark file {path}: {exc.strerror or exc}") from exc
    if not rows or CPU_TIME not in rows[-1]:
        raise DataError(f"{path}: not a Snakemake benchmark file (no '{CPU_TIME}' column)")
    if rows[-1][CPU_TIME] == "NA":
        return 0.0
    try:
        value = float(rows[-1][CPU_TIME])
    except (TypeError, ValueError):
        raise DataError(f"{path}: '{CPU_TIME}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{path}: '{CPU_TIME}' is {value}")
    return value


def cpu_hours(paths: Iterable) -> float:
    """Total CPU hours of the jobs whose benchmark files are ``paths``."""
    return sum(cpu_seconds(p) for p in paths) / 3600.0
