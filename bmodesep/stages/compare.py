"""One sky, two methods: r of every method on the same simulations (``workflow/rules/compare.smk``).


    bmodesep compare compare_summary --config C --rows ROWS.json --output summary.csv
    bmodesep compare fig_compare --config C --summary summary.csv --output compare.png

``ROWS.json`` (written by the workflow, which alone knows the paths) lists one entry per
simulation and method: ``simulation``, ``sky``, ``instrument``, ``method``, ``kind``
(``rlike``, ``sbi`` or ``ps_likelihood``), ``result`` (the product holding its r) and
``benchmarks`` (the benchmark files of the jobs that result needs).  The rows are read and
summarised by :mod:`bmodesep.plots.compare`.
"""

from __future__ import annotations

import json
from pathlib import Path

from bmodesep.errors import DataError
from bmodesep.plots import compare as plots
from bmodesep.steps import File, step

ROW_KEYS = ("simulation", "sky", "instrument", "method", "kind", "result", "benchmarks")


def read_rows(path) -> list[dict]:
    """The rows file, each entry checked for the keys of :data:`ROW_KEYS`."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty list of rows")
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise DataError(f"{path}: row {i} lacks {missing}")
        if row["kind"] not in plots.KINDS:
            raise DataError(
                f"{path}: row {i} has kind '{row['kind']}' (known: {', '.join(plots.KINDS)})"
            )
    return rows


@step
def compare_summary(config, rows: File, output: File) -> None:
    """Rule compare_summary: ``summary.csv``, one row per sky, instrument and method."""
    plots.summary(read_rows(rows), float(config["cmb"]["r"]), output)


@step
def fig_compare(config, summary: File, output: File) -> None:
    """Rule fig_compare: r intervals per method and sky."""
    plots.compare(summary, output)
