"""Resumable long jobs: per-piece checkpoints next to a product, and progress lines.

A long job (a grid-search chunk, a chunk of an SBI simulation set) writes each finished
piece as its own small HDF5 product in ``<output>.parts/`` (atomically, like every
product), then assembles the output and removes the folder.  A job killed part-way
(SLURM time limit, preemption, Ctrl-C) leaves its finished pieces behind; the next run
of the same job reads them instead of recomputing them.  Each piece records the
fingerprint of everything its result depends on (stage config, job identity, package
version); pieces with another fingerprint are stale and are deleted, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bmodesep import __version__, io
from bmodesep.errors import DataError


def fingerprint(stage_config: Mapping[str, Any], **job: Any) -> str:
    """SHA-256 of the stage config, the job's identity and the package version."""
    blob = json.dumps(
        {"config": stage_config, "job": job, "version": __version__}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class Parts:
    """The checkpoint folder of one output: ``<output>.parts/<kind><index>.h5``."""

    def __init__(self, output, kind: str, job_fingerprint: str):
        self.directory = Path(f"{output}.parts")
        self.kind = kind
        self.fingerprint = job_fingerprint

    def path(self, index: int) -> Path:
        return self.directory / f"{self.kind}{index:06d}.h5"

    def done(self, indices) -> list[int]:
        """The indices with a valid piece; stale or unreadable pieces are deleted."""
        found = []
        for index in indices:
            path = self.path(index)
            if not path.exists():
                continue
            try:
                product = io.read_product(path, self.kind)
                valid = product.attrs.get("fingerprint") == self.fingerprint
            except (DataError, OSError):  # a damaged piece, or one of another format
                valid = False
            if valid:
                found.append(index)
            else:
                print(f"[bmodesep] discarding stale checkpoint {path}", flush=True)
                path.unlink()
        return found

    def write(self, index: int, data, provenance, attrs=None) -> None:
        attrs = dict(attrs or {}, fingerprint=self.fingerprint, index=index)
        io.write_product(self.path(index), self.kind, data, provenance, attrs)

    def read(self, index: int) -> io.Product:
        return io.read_product(self.path(index), self.kind)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (or ``--`` before any rate is known)."""
    if not seconds == seconds or seconds == float("inf"):  # NaN or inf
        return "--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress lines for job logs: done/total, rate and ETA from this run's own pace.

    ``already`` pieces done by an earlier run count towards done/total but not the rate.
    """

    def __init__(self, label: str, total: int, unit: str, already: int = 0, stream=None):
        self.label, self.total, self.unit = label, total, unit
        self.already = already
        self.done_here = 0
        self.stream = stream or sys.stdout
        self.t_start = time.perf_counter()
        if already:
            self._emit(f"resuming: {already}/{total} {unit} done by an earlier run")

    def _emit(self, text: str) -> None:
        print(f"[bmodesep] {self.label}: {text}", file=self.stream, flush=True)

    def step(self, detail: str = "", n: int = 1) -> None:
        self.done_here += n
        done = self.already + self.done_here
        elapsed = time.perf_counter() - self.t_start
        rate = self.done_here / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        per_minute = rate * 60
        pace = f"{per_minute:.1f} {self.unit}/min" if per_minute < 600 else f"{rate:.1f}/s"
        extra = f"; {detail}" if detail else ""
        self._emit(
            f"{done}/{self.total} {self.unit}, {pace}, elapsed {format_seconds(elapsed)}, "
            f"ETA {format_seconds(eta)}{extra}"
        )
