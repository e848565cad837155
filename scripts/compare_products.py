"""Compare two bmodesep results folders product by product, bit for bit, provenance aside.

Purpose: prove that a restructuring of the package leaves the products of the default
config the same datasets, bit for bit.  Run the pipeline with the old code and with the
new one into two results folders, then::

    python scripts/compare_products.py OLD_RESULTS_DIR NEW_RESULTS_DIR [--ignore-attr NAME ...]

What is compared:

* every ``*.h5`` file under either folder (by relative path), except under ``logs/``,
  ``benchmarks/``, ``.snakemake/`` and ``*.parts/`` checkpoint folders; a file on one side
  only is a difference;
* in each common file, the set of groups and datasets, and for every dataset its dtype,
  shape and bytes (two NaNs count as equal whatever their payload; ``-0.0`` and ``0.0``
  do not, their bits differ);
* the attributes of the root, of every group and of every dataset, except the provenance
  attributes in :data:`PROVENANCE_ATTRS` (and any named with ``--ignore-attr``).  Values
  are compared as values: strings and bytes alike, numpy scalars and arrays by their
  elements, JSON strings by what they parse to;
* every other file under ``figures/``: by existence only (PNG bytes change with
  matplotlib versions and plotting changes), except ``*.csv``, compared as text.

Timings measured while a product was made (:data:`TIMING_ATTRS`, :data:`TIMING_DATASETS`)
differ between any two runs of the same code, so they are compared by presence, dtype and
shape only, unless ``--compare-timings`` is given.

One line is printed per difference, then ``compared N files, M datasets: K differences``.
Exit status: 0 without differences, 1 with, 2 on usage errors (a folder missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Attributes written by bmodesep.io.provenance() that describe how and when a product was
# made rather than what it holds: the resolved stage config (a JSON string whose layout may
# change with the code even when the products do not), the package version, the git
# revision of the package source, and the creation time.  The other provenance attributes
# (``stage``, ``seed``, ``format_version``) must stay equal and are compared.
PROVENANCE_ATTRS: tuple[str, ...] = (
    "config",
    "bmodesep_version",
    "git_revision",
    "created_utc",
)

# Wall and CPU seconds measured while making a product (npe_estimator's training time):
# compared by presence only unless --compare-timings.
TIMING_ATTRS: tuple[str, ...] = ("train_wall_s", "train_cpu_s")

# Datasets of measured CPU seconds (by last path component: npe_simulations' ``cpu_s``):
# compared by dtype and shape only unless --compare-timings.
TIMING_DATASETS: tuple[str, ...] = ("cpu_s",)

EXCLUDED_DIRS: tuple[str, ...] = ("logs", "benchmarks", ".snakemake")
FIGURES_DIR = "figures"

# datasets are compared in slices of about this many bytes, so big ones need little memory
_SLICE_BYTES = 64 * 2**20


@dataclass
class Report:
    """Differences found so far, and how much was compared."""

    files: int = 0
    datasets: int = 0
    differences: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.differences.append(line)
        print(line, flush=True)


def _excluded(rel: Path) -> bool:
    parts = rel.parts[:-1]
    return any(p in EXCLUDED_DIRS or p.endswith(".parts") for p in parts)


def _files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not _excluded(rel):
            yield rel


def collect(root: Path) -> tuple[set[Path], set[Path]]:
    """HDF5 products and other files under ``figures/`` in ``root``, as relative paths."""
    h5, figures = set(), set()
    for rel in _files(root):
        if rel.suffix == ".h5":
            if not rel.name.startswith("."):  # skip write_product's temporaries
                h5.add(rel)
        elif rel.parts[0] == FIGURES_DIR:
            figures.add(rel)
    return h5, figures


# ---------------------------------------------------------------- attribute values


def _plain(value: Any) -> Any:
    """An attribute value as plain Python: str for bytes, lists for arrays, parsed JSON."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[", '"'):
            try:
                return ("json", json.loads(text))
            except ValueError:
                pass
        return value
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):  # ("json", parsed)
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    numbers = isinstance(a, int | float) and isinstance(b, int | float)
    return (numbers or type(a) is type(b)) and bool(a == b)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare_attrs(
    where: str, a: h5py.AttributeManager, b: h5py.AttributeManager, ignored: set[str], timings: bool
) -> list[str]:
    """Difference lines for the attributes of one object (``where`` names it)."""
    lines = []
    for name in sorted(set(a.keys()) | set(b.keys())):
        if name in ignored:
            continue
        if name not in b:
            lines.append(f"{where}: attribute '{name}' only in OLD")
        elif name not in a:
            lines.append(f"{where}: attribute '{name}' only in NEW")
        elif name in TIMING_ATTRS and not timings:
            continue
        else:
            old, new = _plain(a[name]), _plain(b[name])
            if not _same_value(old, new):
                lines.append(
                    f"{where}: attribute '{name}' differs: OLD {_short(old)} != NEW {_short(new)}"
                )
    return lines


# ------------------------------------------------------------------------ datasets


def _objects(f: h5py.File) -> dict[str, str]:
    """Path -> "group" or "dataset" for everything in ``f`` below the root."""
    found: dict[str, str] = {}

    def visit(name: str, obj: Any) -> None:
        found[name] = "dataset" if isinstance(obj, h5py.Dataset) else "group"

    f.visititems(visit)
    return found


def _slices(ds: h5py.Dataset) -> Iterator[Any]:
    if ds.ndim == 0 or ds.size == 0:
        yield ()
        return
    row = max(ds.dtype.itemsize * (ds.size // ds.shape[0]), 1)
    step = max(_SLICE_BYTES // row, 1)
    for start in range(0, ds.shape[0], step):
        yield slice(start, min(start + step, ds.shape[0]))


def _differing(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Mask of elements whose bits differ (NaN == NaN), and their largest |a - b|."""
    kind = a.dtype.kind
    if kind in "fc" and a.dtype.itemsize in ((2, 4, 8) if kind == "f" else (8, 16)):
        width = a.dtype.itemsize if kind == "f" else a.dtype.itemsize // 2
        parts_a = a.reshape(-1) if kind == "f" else a.reshape(-1).view(f"f{width}")
        parts_b = b.reshape(-1) if kind == "f" else b.reshape(-1).view(f"f{width}")
        uint = np.dtype(f"u{width}")
        bits = parts_a.view(uint) != parts_b.view(uint)
        bits &= ~(np.isnan(parts_a) & np.isnan(parts_b))
        if kind == "c":
            bits = bits.reshape(-1, 2).any(axis=1)
        mask = bits
        if not mask.any():
            return mask, None
        with np.errstate(invalid="ignore", over="ignore"):
            delta = np.abs(
                a.reshape(-1)[mask].astype(complex if kind == "c" else float) - b.reshape(-1)[mask]
            )
        finite = delta[np.isfinite(delta)]
        return mask, float(finite.max()) if finite.size else float("nan")
    if kind in "iub":
        mask = a.reshape(-1) != b.reshape(-1)
        if not mask.any() or kind == "b":
            return mask, None
        delta = np.abs(a.reshape(-1)[mask].astype(np.float64) - b.reshape(-1)[mask])
        return mask, float(delta.max())
    if kind == "O":
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        mask = np.array([_plain(x) != _plain(y) for x, y in zip(flat_a, flat_b, strict=True)])
        return mask.astype(bool).reshape(-1), None
    # fixed-length strings, compound and opaque types: compare each element's bytes
    item = a.dtype.itemsize
    rows_a = np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8).reshape(-1, item)
    rows_b = np.frombuffer(np.ascontiguousarray(b).tobytes(), np.uint8).reshape(-1, item)
    return (rows_a != rows_b).any(axis=1) if item else np.zeros(a.size, bool), None


def compare_dataset(where: str, a: h5py.Dataset, b: h5py.Dataset, timings: bool) -> str | None:
    """A difference line for one dataset's dtype, shape or values, or None if equal."""
    if a.dtype != b.dtype or h5py.check_string_dtype(a.dtype) != h5py.check_string_dtype(b.dtype):
        return f"{where}: dtype differs: OLD {a.dtype} != NEW {b.dtype}"
    if a.shape != b.shape:
        return f"{where}: shape differs: OLD {a.shape} != NEW {b.shape}"
    if a.name.rsplit("/", 1)[-1] in TIMING_DATASETS and not timings:
        return None
    count, largest = 0, None
    for sel in _slices(a):
        old, new = np.asarray(a[sel]), np.asarray(b[sel])
        if old.tobytes() == new.tobytes() and old.dtype.kind != "O":
            continue
        mask, delta = _differing(old, new)
        count += int(np.count_nonzero(mask))
        if delta is not None:
            largest = delta if largest is None else max(largest, delta)
    if not count:
        return None
    size = max(a.size, 1)
    extra = "" if largest is None else f", max abs difference {largest:.6g}"
    return f"{where}: values differ in {count} of {size} elements{extra}"


def compare_h5(
    rel: Path, old: Path, new: Path, ignored: set[str], report: Report, timings: bool
) -> None:
    """Compare one product present on both sides."""
    try:
        fa = h5py.File(old, "r")
    except OSError as exc:
        report.add(f"{rel}: OLD file unreadable: {exc}")
        return
    try:
        fb = h5py.File(new, "r")
    except OSError as exc:
        fa.close()
        report.add(f"{rel}: NEW file unreadable: {exc}")
        return
    with fa, fb:
        for line in compare_attrs(f"{rel}:/", fa.attrs, fb.attrs, ignored, timings):
            report.add(line)
        objs_a, objs_b = _objects(fa), _objects(fb)
        for name in sorted(set(objs_a) | set(objs_b)):
            where = f"{rel}:/{name}"
            kind_a, kind_b = objs_a.get(name), objs_b.get(name)
            if kind_b is None:
                report.add(f"{where}: {kind_a} only in OLD")
                continue
            if kind_a is None:
                report.add(f"{where}: {kind_b} only in NEW")
                continue
            if kind_a != kind_b:
                report.add(f"{where}: a {kind_a} in OLD but a {kind_b} in NEW")
                continue
            if kind_a == "dataset":
                report.datasets += 1
                line = compare_dataset(where, fa[name], fb[name], timings)
                if line:
                    report.add(line)
            for line in compare_attrs(where, fa[name].attrs, fb[name].attrs, ignored, timings):
                report.add(line)


def compare_text(rel: Path, old: Path, new: Path, report: Report) -> None:
    """Compare two CSV files line by line; report the first differing line."""
    a = old.read_text(errors="replace").splitlines()
    b = new.read_text(errors="replace").splitlines()
    if a == b:
        return
    for n, (x, y) in enumerate(zip(a, b, strict=False), start=1):
        if x != y:
            report.add(f"{rel}: text differs from line {n}: OLD {_short(x)} != NEW {_short(y)}")
            return
    report.add(f"{rel}: text differs: OLD has {len(a)} lines, NEW {len(b)}")


def compare_dirs(old: Path, new: Path, ignored: set[str], timings: bool = False) -> Report:
    """Compare every product of ``old`` with the same one in ``new``."""
    report = Report()
    h5_a, fig_a = collect(old)
    h5_b, fig_b = collect(new)
    for rel in sorted((h5_a | fig_a) - (h5_b | fig_b)):
        report.add(f"{rel}: only in OLD")
    for rel in sorted((h5_b | fig_b) - (h5_a | fig_a)):
        report.add(f"{rel}: only in NEW")
    for rel in sorted(h5_a & h5_b):
        report.files += 1
        compare_h5(rel, old / rel, new / rel, ignored, report, timings)
    for rel in sorted(fig_a & fig_b):
        report.files += 1
        if rel.suffix == ".csv":
            compare_text(rel, old / rel, new / rel, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare two bmodesep results folders bit for bit, provenance aside.",
        epilog=f"Provenance attributes ignored by default: {', '.join(PROVENANCE_ATTRS)}.",
    )
    parser.add_argument("old", type=Path, help="results folder of the reference code")
    parser.add_argument("new", type=Path, help="results folder of the changed code")
    parser.add_argument(
        "--ignore-attr",
        action="append",
        default=[],
        metavar="NAME",
        help="also ignore attributes of this name (repeatable)",
    )
    parser.add_argument(
        "--compare-timings",
        action="store_true",
        help=f"also compare measured timings ({', '.join(TIMING_ATTRS + TIMING_DATASETS)})",
    )
    args = parser.parse_args(argv)
    for folder in (args.old, args.new):
        if not folder.is_dir():
            print(f"compare_products: {folder} is not a folder", file=sys.stderr)
            return 2
    ignored = set(PROVENANCE_ATTRS) | set(args.ignore_attr)
    report = compare_dirs(args.old, args.new, ignored, args.compare_timings)
    print(
        f"compared {report.files} files, {report.datasets} datasets: "
        f"{len(report.differences)} differences"
    )
    return 1 if report.differences else 0


if __name__ == "__main__":
    sys.exit(main())
