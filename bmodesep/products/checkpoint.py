"""Resumable long jobs: per-piece checkpoints next to a product (progress: bmodesep.log).

A long job (a grid-search chunk, a chunk of an SBI simulation set) writes each finished
piece as its own small HDF5 product in ``<output>.parts/`` (atomically, like every
product), then assembles the output and removes the folder.  A job killed part-way
(SLURM time limit, preemption, Ctrl-C) leaves its finished pieces behind; the next run
of the same job reads them instead of recomputing them.  Each piece records the
fingerprint of everything its result depends on: the stage config, the job's identity, the
package version, a digest of the package's source files (an edited simulator at the same
version does not resume from pieces of the old code), the versions of the numerical
libraries the results come from, and the SHA-256 of every input file's content (a replaced
mask, new templates or a regenerated signal between two attempts).  Pieces with another
fingerprint are stale and are deleted, never mixed in.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bmodesep import __version__
from bmodesep.errors import DataError
from bmodesep.products import io

log = logging.getLogger(__name__)


SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".json")


def source_digest(root: Path) -> str:
    """SHA-256 over the names and contents of the source files under ``root``."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in SOURCE_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def code_digest() -> str:
    """Digest of this installed ``bmodesep`` package's code (no git needed)."""
    return source_digest(Path(__file__).resolve().parents[1])


# the libraries whose numbers end up in checkpointed results (an upgrade between two
# attempts must not mix pieces of both)
LIBRARIES = ("numpy", "scipy", "healpy", "ducc0", "camb", "jax", "jaxlib", "torch", "sbi")


@functools.cache
def library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content (a DataError naming the file if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def fingerprint(
    stage_config: Mapping[str, Any], inputs: Iterable[str | Path | None] = (), **job: Any
) -> str:
    """SHA-256 of the stage config, the job's identity, the package version and code, the
    library versions and the content of the ``inputs`` (in the order given; None skipped)."""
    blob = json.dumps(
        {
            "config": stage_config,
            "job": job,
            "version": __version__,
            "code": code_digest(),
            "libraries": library_versions(),
            "inputs": [file_digest(p) for p in inputs if p is not None],
        },
        sort_keys=True,
        default=str,
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
                log.info("discarding stale checkpoint %s", path)
                path.unlink()
        return found

    def write(self, index: int, data, provenance, attrs=None) -> None:
        attrs = dict(attrs or {}, fingerprint=self.fingerprint, index=index)
        io.write_product(self.path(index), self.kind, data, provenance, attrs)

    def read(self, index: int) -> io.Product:
        return io.read_product(self.path(index), self.kind)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
