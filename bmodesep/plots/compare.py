"""One sky, two methods: the r summary of every method on the same simulations, and its
figure (``workflow/rules/compare.smk``).

Methods, by the product that holds their r:

* ``rlike`` (kabalan2025's K-means grid search, multi-resolution, single patch): the
  r likelihood of the noise-averaged residuals; r-hat is its peak, lo68 / hi68 its 68%
  interval (:mod:`bmodesep.products.rlike`);
* ``sbi`` (duivenvoorden2025's NILC + SBI) and ``ps_likelihood`` (its App. E
  baseline): one posterior per noise realisation (``npe_observed``, ``ps_likelihood``
  products); r-hat is the mean over realisations of the posterior mean, lo68 / hi68 the
  mean of the 68% HDI's bounds, so that every method reports the typical interval of one
  realisation and a bias not scattered by the noise.

sigma_r is half the 68% interval for every method; cpu_hours the CPU time of the jobs the
result needs (the simulation of the sky itself, common to all, excluded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from bmodesep.core.compare import posterior_interval
from bmodesep.errors import DataError
from bmodesep.plots.npe import _save as save_figure
from bmodesep.products import benchmarks
from bmodesep.products import npe_results as nr
from bmodesep.products import rlike as rl
from bmodesep.products.io import read_csv, write_csv_atomic

SUMMARY_COLUMNS = (
    "sky",
    "instrument",
    "method",
    "r_true",
    "r_hat",
    "lo68",
    "hi68",
    "sigma_r",
    "cpu_hours",
)
KINDS = ("rlike", "sbi", "ps_likelihood")


def _method_interval(kind: str, path) -> tuple[float, float, float]:
    if kind == "rlike":
        a = rl.read_r_likelihood(path).attrs
        return float(a["r_hat"]), float(a["r_low"]), float(a["r_high"])
    if kind == "sbi":
        p = nr.read_observed(path)
    elif kind == "ps_likelihood":
        p = nr.read_ps_likelihood(path)
    else:
        raise DataError(f"{path}: unknown method kind '{kind}' (known: {', '.join(KINDS)})")
    return posterior_interval(p[nr.R_MEAN], p[nr.R_HDI])


def summary_rows(rows: Sequence[Mapping], r_true: float) -> list[dict[str, str]]:
    """One row per (simulation, method) of ``rows``: each names its ``sky``,
    ``instrument``, ``method``, ``kind`` (:data:`KINDS`), ``result`` product and the
    ``benchmarks`` files of the jobs it needs."""
    out = []
    for row in rows:
        r_hat, lo, hi = _method_interval(row["kind"], row["result"])
        out.append(
            {
                "sky": row["sky"],
                "instrument": row["instrument"],
                "method": row["method"],
                "r_true": f"{r_true:g}",
                "r_hat": f"{r_hat:.4e}",
                "lo68": f"{lo:.4e}",
                "hi68": f"{hi:.4e}",
                "sigma_r": f"{0.5 * (hi - lo):.4e}",
                "cpu_hours": f"{benchmarks.cpu_hours(row['benchmarks']):.4f}",
            }
        )
    return out


def summary(rows: Sequence[Mapping], r_true: float, output) -> None:
    write_csv_atomic(output, summary_rows(rows, r_true), SUMMARY_COLUMNS)


def read_summary(path) -> list[dict]:
    """The rows of a summary.csv, numbers parsed and checked."""
    rows = read_csv(path, SUMMARY_COLUMNS)
    if not rows:
        raise DataError(f"{path}: no rows")
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            values = {k: float(row[k]) for k in SUMMARY_COLUMNS[3:]}
        except ValueError:
            raise DataError(f"{path}: line {i} has a field that is not a number") from None
        out.append({**row, **values})
    return out


def _figure_compare(path) -> Figure:
    """r-hat (dot) and its 68% interval (bar) per method (rows), one panel per sky; the
    dashed line is the true r, the right margin the CPU hours."""
    rows = read_summary(path)
    skies = list(dict.fromkeys(r["sky"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = Figure(figsize=(3.2 * len(skies) + 1.0, 0.45 * len(methods) + 1.6))
    axes = fig.subplots(1, len(skies), sharey=True, squeeze=False)[0]
    lo = min(r["lo68"] for r in rows)
    hi = max(r["hi68"] for r in rows)
    pad = 0.08 * (hi - lo or 1e-3)
    for ax, sky in zip(axes, skies, strict=True):
        for r in (r for r in rows if r["sky"] == sky):
            y = methods.index(r["method"])
            # a skewed posterior (r near 0) can have its mean outside its 68% HDI
            ax.hlines(y, r["lo68"], r["hi68"], color=f"C{y}", lw=2)
            ax.plot(r["r_hat"], y, "o", color=f"C{y}")
            ax.annotate(
                f"{r['cpu_hours']:.2g} h",
                (1.0, y),
                xycoords=("axes fraction", "data"),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        truths = {r["r_true"] for r in rows if r["sky"] == sky}
        for t in truths:
            ax.axvline(t, ls="--", color="k", lw=1)
        ax.set_xlim(lo - pad, hi + pad)
        instruments = sorted({r["instrument"] for r in rows if r["sky"] == sky})
        ax.set_title(f"{sky} ({', '.join(instruments)})", fontsize=9)
        ax.set_xlabel("r (68%)")
    axes[0].set_yticks(range(len(methods)), methods)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig


def compare(path, output) -> None:
    save_figure(_figure_compare(path), output)
