"""Figures and the summary table of duivenvoorden2025 from the SBI products.

tarp (Figs. 1, 11: joint and marginal coverage with +-2 sigma bootstrap bands),
corner (Figs. 2, 5: posteriors of r, A_lens, B_d, gamma_d, B_s, gamma_s for the first
dataset of a test set, or several observed skies overlaid, drawn with GetDist as the
paper does; true values dashed where the product holds them), r_vs_sigma_beta (Fig. 3:
posterior r against the inferred spectral-index power), sigma_r (Fig. 4: posterior width
of r against the inferred index power, one panel per compression), predictive (Fig. 9:
posterior predictive chi^2 against the observed value), summary (mean r and mean
half-width of its 68% HDI per set and compression, as CSV), table3 (Table 3 of the
fixed-foreground skies, with the bias in posterior widths) and fixed_foreground (Figs.
5-6: posterior means of r per sky).  Products are read through
:mod:`bmodesep.products.npe_results`.  ``NAME(inputs, output)`` saves the figure;
``_figure_NAME(inputs)`` builds and returns it (for tests).
"""

from __future__ import annotations

import csv
import logging
import textwrap
import warnings
from contextlib import contextmanager, redirect_stdout
from io import BytesIO, StringIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import MatplotlibDeprecationWarning, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bmodesep.core.npe.prior import PARAMETERS, prior
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import npe_results as nr
from bmodesep.products.io import write_bytes_atomic

CORNER = ("r", "A_lens", "B_d", "gamma_d", "B_s", "gamma_s")
LABELS = {
    "r": "$r$",
    "A_lens": r"$A_{\rm lens}$",
    "B_d": "$B_d$",
    "gamma_d": r"$\gamma_d$",
    "B_s": "$B_s$",
    "gamma_s": r"$\gamma_s$",
}
SIGMA_BETA = r"$(\sigma_{\beta_d}^2 + \sigma_{\beta_s}^2)^{1/2}$"
log = logging.getLogger(__name__)


def _save(fig, output) -> None:
    """Write the figure atomically (a failed write leaves nothing at ``output``)."""
    buffer = BytesIO()
    with _quiet_getdist():  # a GetDist figure lays out its ticks as it is drawn
        fig.savefig(buffer, format=Path(output).suffix[1:] or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(output, buffer.getvalue())


# ---------------------------------------------------------------- TARP
def tarp(inputs, output) -> None:
    cov = nr.read_coverage(inputs[0])
    names = list(cov.attrs["names"])
    alpha, ecp, std = cov[nr.CREDIBILITY], cov[nr.ECP], cov[nr.ECP_STD]
    ncol = 5
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3 * ncol, 3 * nrow), sharex=True, sharey=True, squeeze=False
    )
    for ax, name, e, s, dev in zip(
        axes.flat, names, ecp, std, cov[nr.DEVIATION_SIGMA], strict=False
    ):
        ax.fill_between(alpha, e - 2 * s, e + 2 * s, color="C1", alpha=0.3, lw=0)
        ax.plot(alpha, e, color="C1")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_title(f"{LABELS.get(name, name)}  ({dev:.1f}$\\sigma$)", fontsize=9)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("credibility level")
    for ax in axes[:, 0]:
        ax.set_ylabel("ECP")
    fig.suptitle(
        f"TARP, {cov.attrs['compression']}, {cov.attrs['test_simulations']} test simulations "
        "(bands: +-2 bootstrap sigma)"
    )
    _save(fig, output)


# ---------------------------------------------------------------- corner (GetDist)
# GetDist's analysis settings, all stated so that no GetDist ini file (GETDIST_CONFIG)
# changes the figure; the densities are deterministic functions of the samples.
GETDIST_SETTINGS = {
    "ignore_rows": 0,  # posterior draws: no burn-in to remove
    "smooth_scale_1D": -1,  # GetDist's optimised kernel width per parameter (x1)
    "smooth_scale_2D": -1,  # and per pair of parameters
    "boundary_correction_order": 1,  # linear boundary kernel at the prior's edges
    "mult_bias_correction_order": 1,  # multiplicative correction of the smoothing bias
    "contours": "0.68 0.95",  # the two contours drawn, and the limits of getMargeStats
    "range_confidence": 0.001,  # axis range: 0.1% tails, or the prior edge near it
    "fine_bins": 1024,
    "fine_bins_2D": 256,
}
TRUTH_STYLE = {"color": "gray", "ls": "--", "lw": 0.8}


class _GetDistLog(logging.Handler):
    """GetDist reports with ``logging.warning`` on the root logger, which would print
    'WARNING:root:...' into the job log: while it draws, its records become debug lines
    of this module (and any other record keeps its level)."""

    def emit(self, record: logging.LogRecord) -> None:
        from_getdist = Path(record.pathname).parent.name == "getdist"
        level = logging.DEBUG if from_getdist else record.levelno
        log.log(level, "while plotting with GetDist: %s", record.getMessage())


@contextmanager
def _quiet_getdist():
    """GetDist's log records and its prints ('Removed no burn in') as debug lines, and
    without the deprecation warnings its tick locator raises on matplotlib >= 3.11 (it
    reads ``ScalarFormatter.format``)."""
    root, handler, printed = logging.getLogger(), _GetDistLog(), StringIO()
    root.addHandler(handler)
    try:
        with redirect_stdout(printed), warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", category=MatplotlibDeprecationWarning, module=r"getdist\."
            )
            yield
    finally:
        root.removeHandler(handler)
        for line in printed.getvalue().splitlines():
            log.debug("GetDist printed: %s", line)


def _getdist_samples(samples, names, labels, ranges=None, label=None):
    """A GetDist ``MCSamples`` of independent posterior draws ``[n, len(names)]``;
    ``labels``: LaTeX without ``$``; ``ranges``: name -> (low, high), None where open."""
    from getdist import MCSamples

    with _quiet_getdist():
        return MCSamples(
            samples=np.asarray(samples, float),
            names=list(names),
            labels=list(labels),
            ranges={k: list(v) for k, v in (ranges or {}).items()},
            settings=dict(GETDIST_SETTINGS),
            sampler="uncorrelated",  # i.i.d. draws: no autocorrelation to estimate
            label=label,
        )


def _prior_ranges(product, names, sample_sets) -> dict[str, tuple]:
    """The prior's bounds of ``names`` where the product's provenance names its prior
    (``npe.prior``; none otherwise), so that GetDist corrects its densities at the edges.
    An edge is moved out to the extreme sample if a sample lies beyond it (float32
    rounding of a draw at the edge): GetDist's boundary kernel needs every sample inside."""
    try:
        variant = product.config["npe"]["prior"]
        bounds = prior(variant)
    except (KeyError, TypeError, ValueError, ConfigError):
        return {}
    out = {}
    for name in names:
        k = PARAMETERS.index(name)
        lo, hi = float(bounds.low[k]), float(bounds.high[k])
        values = np.concatenate([s[:, names.index(name)] for s in sample_sets])
        lo = min(lo, float(values.min())) if np.isfinite(lo) else None
        hi = max(hi, float(values.max())) if np.isfinite(hi) else None
        if lo is not None or hi is not None:
            out[name] = (lo, hi)
    return out


def _triangle_figure(sample_sets, legend, names, truth=None, title="", ranges=None) -> Figure:
    """GetDist's triangle plot of one or more sample sets ``[n, len(names)]`` (two
    parameters or more) overlaid: filled 68% and 95% contours and 1D densities, one colour
    per set; the true values ``truth`` (name -> value; NaN or absent where unknown) as
    dashed grey lines through every panel of their parameter, each axis widened to show
    its true value; the title at the top left and the legend at the top right of the
    empty upper triangle.  ``ranges``: hard bounds of the densities (:func:`_prior_ranges`)."""
    from getdist import plots as gdplots

    labels = [LABELS.get(n, n).strip("$") for n in names]  # GetDist adds the $
    sets = [
        _getdist_samples(s, names, labels, ranges, label)
        for s, label in zip(sample_sets, legend, strict=True)
    ]
    markers = {n: float(truth[n]) for n in names if truth and n in truth and np.isfinite(truth[n])}
    limits = {}
    with _quiet_getdist():
        for n, value in markers.items():  # widen a range that leaves its true value out
            lo, hi = np.array([s.get1DDensity(n).bounds() for s in sets]).T
            lo, hi = float(lo.min()), float(hi.max())
            if not lo <= value <= hi:
                lo, hi = min(lo, value), max(hi, value)
                pad = 0.05 * (hi - lo)
                limits[n] = (lo - pad if value == lo else lo, hi + pad if value == hi else hi)
        g = gdplots.get_subplot_plotter(subplot_size=1.8)
        g.settings.line_labels = False  # the legend below names the sets and the truth
        g.settings.axis_marker_color = TRUTH_STYLE["color"]
        g.settings.axis_marker_ls = TRUTH_STYLE["ls"]
        g.settings.axis_marker_lw = TRUTH_STYLE["lw"]
        g.settings.progress = False
        colours = [f"C{k}" for k in range(len(sets))]
        g.triangle_plot(
            sets,
            list(names),
            filled=True,
            contour_colors=colours,
            markers=markers or None,
            param_limits=limits,
        )
    fig = g.fig
    axes = g.subplots
    n = len(names)
    handles = [Patch(facecolor=c, edgecolor=c) for c in colours]
    entries = list(legend)
    if markers:
        handles.append(Line2D([], [], **TRUTH_STYLE))
        entries.append("true value")
    # title block at the top left of the empty triangle, legend at its top right
    top = axes[0, 0].get_position().y1
    left = axes[1, 1].get_position().x0
    right = axes[n - 1, n - 1].get_position().x1
    fig.text(left + 0.01, top, title, ha="left", va="top", fontsize=11)
    fig.legend(handles, entries, loc="upper right", bbox_to_anchor=(right, top), frameon=False)
    return fig


def _observed_truth(products) -> dict[str, float] | None:
    """The r and A_lens that observed simulations were drawn with (attributes ``true_*``),
    where every sky of the figure has the same; none for a user's maps."""
    values = [
        {p: float(x.attrs[f"true_{p}"]) for p in CORNER if f"true_{p}" in x.attrs} for x in products
    ]
    if not values[0] or any(v != values[0] for v in values[1:]):
        return None
    return values[0]


def _truth(product) -> dict[str, float] | None:
    """The true values of the corner's parameters in the product's first dataset: all of
    them in a test set, r and A_lens (its fixed ones) in a fixed-foreground set; those an
    observed simulation records (none for a user's maps)."""
    if product.kind != nr.NPE_POSTERIORS:
        return _observed_truth([product])
    theta = product[nr.THETA][0]
    known = set(PARAMETERS)
    if product.attrs.get("foreground"):  # a fixed foreground: only the fixed are known
        known = set(product.attrs["fixed"])
    return {p: float(theta[PARAMETERS.index(p)]) for p in CORNER if p in known}


def _figure_corner(inputs) -> Figure:
    products = [nr.read_posteriors_or_observed(p) for p in inputs]
    first = products[0]
    idx = [PARAMETERS.index(p) for p in CORNER]
    if first.kind == nr.NPE_POSTERIORS:
        fixed = ", ".join(first.attrs["fixed"]) or "none"
        title = f"set '{first.attrs['set']}', first dataset, {first.attrs['compression']}"
        title += "\n" + textwrap.fill(f"fixed: {fixed}", 48)
        sample_sets = [first[nr.SAMPLES][0][:, idx]]
        legend = [first.attrs["compression"]]
    else:
        title = f"observed skies, {first.attrs['compression']}\n(first noise realisation)"
        sample_sets = [p[nr.SAMPLES][0][:, idx] for p in products]
        legend = [p.attrs["simulation"] for p in products]
    ranges = _prior_ranges(first, list(CORNER), sample_sets)
    truth = _truth(first) if first.kind == nr.NPE_POSTERIORS else _observed_truth(products)
    return _triangle_figure(sample_sets, legend, CORNER, truth, title, ranges)


def corner(inputs, output) -> None:
    _save(_figure_corner(inputs), output)


# ---------------------------------------------------------------- r and sigma_r against sigma_beta
def _hdi_half_width(p) -> np.ndarray:
    h = p[nr.R_HDI]
    return 0.5 * (h[:, 1] - h[:, 0])


def r_vs_sigma_beta(inputs, output) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, path in enumerate(inputs):
        p = nr.read_posteriors(path)
        order = np.argsort(p[nr.SIGMA_BETA_MEAN])
        r_mean, hdi = p[nr.R_MEAN][order], p[nr.R_HDI][order]
        sb = p[nr.SIGMA_BETA_MEAN][order]
        # the mean of a skewed posterior can lie outside its HDI: bars are drawn as intervals
        ax.vlines(sb, hdi[:, 0], hdi[:, 1], color=f"C{k}", alpha=0.5, lw=0.8)
        ax.plot(sb, r_mean, "o", ms=3, color=f"C{k}", label=p.attrs["compression"])
        if "r" in p.attrs["fixed"]:
            ax.axhline(p[nr.THETA][0, 0], color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"inferred {SIGMA_BETA} (posterior mean)")
    ax.set_ylabel("posterior mean $r$ (68% HDI)")
    ax.set_title(f"set '{p.attrs['set']}'")
    ax.legend()
    _save(fig, output)


def _constant(values: np.ndarray) -> bool:
    """All equal, to rounding: a colour scale over them would span nothing."""
    return float(np.ptp(values)) <= 1e-9 * max(1.0, float(np.max(np.abs(values))))


def _figure_sigma_r(inputs) -> Figure:
    products = [nr.read_posteriors(path) for path in inputs]
    fig, axes = plt.subplots(
        1,
        len(products),
        figsize=(4 * len(products) + 1, 3.8),
        sharey=True,
        squeeze=False,
        constrained_layout=True,
    )
    truth = np.concatenate([p[nr.TRUE_SIGMA_BETA] for p in products])
    constant = _constant(truth)
    norm = None if constant else plt.Normalize(truth.min(), truth.max())
    for ax, p in zip(axes[0], products, strict=True):
        sb_hdi = p[nr.SIGMA_BETA_HDI]
        sb = p[nr.SIGMA_BETA_MEAN]
        width = _hdi_half_width(p)
        ax.hlines(width, sb_hdi[:, 0], sb_hdi[:, 1], color="lightgray", lw=0.8)
        colour = {"color": "C0"} if constant else {"c": p[nr.TRUE_SIGMA_BETA], "norm": norm}
        sc = ax.scatter(sb, width, s=12, zorder=2, **colour)
        ax.set_title(p.attrs["compression"])
        ax.set_xlabel(f"inferred {SIGMA_BETA}")
    axes[0, 0].set_ylabel(r"$\sigma_r$ (half 68% HDI)")
    title = f"set '{products[0].attrs['set']}'"
    if constant:
        value = float(truth[0])
        if value < 0:  # a fixed PySM foreground: no index maps to measure
            title += f": true index power {SIGMA_BETA} unknown"
        elif value == 0:
            title += f": true index power {SIGMA_BETA} = 0 in every dataset"
        else:
            title += f": true index power {SIGMA_BETA} = {value:.3g} in every dataset"
    else:
        fig.colorbar(sc, ax=axes[0].tolist(), label=f"true {SIGMA_BETA}")
    fig.suptitle(title)
    return fig


def sigma_r(inputs, output) -> None:
    _save(_figure_sigma_r(inputs), output)


# ---------------------------------------------------------------- posterior predictive
def _figure_predictive(inputs) -> Figure:
    products = [nr.read_observed(path) for path in inputs]
    fig, axes = plt.subplots(
        1,
        len(products),
        figsize=(4.5 * len(products), 3.4),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, p in zip(axes[0], products, strict=True):
        chi2, observed = p[nr.CHI2_PREDICTIVE], float(p.attrs["chi2_observed"])
        lo, hi = float(chi2.min()), float(chi2.max())
        span = max(hi - lo, 1e-3 * max(abs(hi), 1.0))
        ax.hist(chi2, bins=30, color="C1", alpha=0.7, label="posterior predictive")
        if lo - span <= observed <= hi + span:
            ax.axvline(observed, color="k", ls="--", label="observed")
        else:
            # far outside the predictive draws: keep their histogram readable and point
            # to the observed value from the edge it lies beyond
            ax.set_xlim(lo - 0.1 * span, hi + 0.1 * span)
            right = observed > hi
            ax.annotate(
                f"observed\n{observed:.4g}",
                xy=(1.0 if right else 0.0, 0.88),
                xytext=(0.8 if right else 0.2, 0.88),
                xycoords="axes fraction",
                ha="center",
                va="center",
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": "k"},
            )
        ax.set_ylim(0, 1.3 * ax.get_ylim()[1])  # room for the legend and the arrow
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4))
        formatter = ticker.ScalarFormatter(useOffset=False)
        formatter.set_powerlimits((-3, 5))
        ax.xaxis.set_major_formatter(formatter)
        ax.set_title(f"{p.attrs['simulation']}: p = {p.attrs['ppc_p_value']:.2f}")
        ax.set_xlabel(r"$\chi^2$")
        ax.set_ylabel("predictive simulations")
        ax.legend(fontsize=8, loc="upper left")
    return fig


def predictive(inputs, output) -> None:
    _save(_figure_predictive(inputs), output)


# ---------------------------------------------------------------- summary table
def summary(inputs, output) -> None:
    """Table 3: mean posterior mean of 100 r and mean half 68% HDI, per set and compression."""
    rows = []
    for path in inputs:
        p = nr.read_posteriors_or_observed(path)
        if p.kind == nr.NPE_POSTERIORS:
            name, truth = (
                p.attrs["set"],
                (f"{100 * p[nr.THETA][0, 0]:.3g}" if "r" in p.attrs["fixed"] else "prior"),
            )
        else:
            name, truth = f"observed:{p.attrs['simulation']}", ""
        rows.append(
            {
                "set": name,
                "compression": p.attrs["compression"],
                "datasets": p[nr.SAMPLES].shape[0],
                "true_100r": truth,
                "mean_100r": f"{100 * p[nr.R_MEAN].mean():.3f}",
                "sigma_100r": f"{100 * _hdi_half_width(p).mean():.3f}",
                "mean_A_lens": f"{p[nr.A_LENS_MEAN].mean():.3f}",
            }
        )
    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(output, text.getvalue().encode())


# ---------------------------------------------------------------- fixed-foreground skies
TABLE3_COLUMNS = ("sky", "compression", "r_true", "mean_r", "mean_sigma_r", "bias_sigma", "n")


def _fixed_foreground_products(inputs) -> list:
    products = [nr.read_r_posteriors(path) for path in inputs]
    for p in products:
        if not p.attrs.get("foreground") or "r" not in p.attrs["fixed"]:
            raise DataError(f"{p.path}: not a fixed-foreground set with r fixed")
    return products


def table3_rows(inputs) -> list[dict[str, str]]:
    """duivenvoorden2025 Table 3 per sky, compression and true r: the posterior mean of r
    and the half width of its 68% HDI averaged over the set's datasets, and the bias
    (mean r - r_true) in units of that mean width."""
    rows = []
    for p in _fixed_foreground_products(inputs):
        r_true = float(p[nr.THETA][0, 0])
        mean_r = float(p[nr.R_MEAN].mean())
        sigma = float(_hdi_half_width(p).mean())
        rows.append(
            {
                "sky": str(p.attrs["sky"]),
                "compression": str(p.attrs["compression"]),
                "r_true": f"{r_true:.6g}",
                "mean_r": f"{mean_r:.6g}",
                "mean_sigma_r": f"{sigma:.6g}",
                "bias_sigma": f"{(mean_r - r_true) / sigma:.3f}",
                "n": str(p[nr.R_MEAN].size),
            }
        )
    return sorted(rows, key=lambda r: (r["sky"], r["compression"], -float(r["r_true"])))


def table3(inputs, output) -> None:
    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(TABLE3_COLUMNS))
    writer.writeheader()
    writer.writerows(table3_rows(inputs))
    write_bytes_atomic(output, text.getvalue().encode())


def _figure_fixed_foreground(inputs) -> Figure:
    """Figs. 5-6 style: the posterior means of r of every dataset, per sky (rows) and
    compression (colours), one panel per true r; bars: mean +- the mean half 68% HDI."""
    products = _fixed_foreground_products(inputs)
    skies = sorted({str(p.attrs["sky"]) for p in products})
    compressions = sorted({str(p.attrs["compression"]) for p in products})
    r_values = sorted({float(p[nr.THETA][0, 0]) for p in products}, reverse=True)
    fig, axes = plt.subplots(
        1,
        len(r_values),
        figsize=(4.6 * len(r_values), 0.55 * len(skies) * len(compressions) + 1.6),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    rng = np.random.default_rng(0)  # jitter of the dots only
    step = 0.8 / len(compressions)
    for ax, r_true in zip(axes[0], r_values, strict=True):
        for p in products:
            if float(p[nr.THETA][0, 0]) != r_true:
                continue
            k = compressions.index(str(p.attrs["compression"]))
            y = skies.index(str(p.attrs["sky"])) + (k - (len(compressions) - 1) / 2) * step
            means = p[nr.R_MEAN]
            ax.plot(
                means,
                y + rng.uniform(-0.25, 0.25, means.size) * step,
                ".",
                ms=2,
                color=f"C{k}",
                alpha=0.4,
            )
            ax.errorbar(
                means.mean(),
                y,
                xerr=_hdi_half_width(p).mean(),
                fmt="o",
                ms=4,
                color=f"C{k}",
                capsize=2,
            )
        ax.axvline(r_true, color="gray", ls="--", lw=0.8)
        ax.set_title(f"true $r$ = {r_true:g}")
        ax.set_xlabel("posterior mean $r$")
    axes[0, 0].set_yticks(range(len(skies)), skies)
    axes[0, 0].invert_yaxis()
    handles = [
        plt.Line2D([], [], color=f"C{k}", marker="o", ls="") for k in range(len(compressions))
    ]
    fig.legend(
        handles, compressions, loc="outside lower center", ncol=len(compressions), frameon=False
    )
    return fig


def fixed_foreground(inputs, output) -> None:
    _save(_figure_fixed_foreground(inputs), output)


# ---------------------------------------------------------------- SBI against the likelihood
def _figure_likelihood(posteriors, likelihood) -> Figure:
    """Figs. 2 and 3: left, the r posterior of the set's first dataset from each SBI
    compression and from the power-spectrum likelihood; right, r (mean, 68% HDI) of every
    dataset against the index power SBI infers, both methods, lines joining the same data."""
    sbi = [nr.read_posteriors(p) for p in posteriors]
    like = nr.read_ps_likelihood(likelihood)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    r_index = list(like.attrs["sampled"]).index("r")
    for k, p in enumerate(sbi):
        left.hist(
            p[nr.SAMPLES][0, :, 0],
            bins=40,
            density=True,
            histtype="step",
            color=f"C{k}",
            label=f"SBI {p.attrs['compression']}",
        )
    left.hist(
        like[nr.SAMPLES][0, :, r_index],
        bins=40,
        density=True,
        histtype="step",
        color="k",
        label="power-spectrum likelihood",
    )
    r_true = float(like[nr.THETA][0, 0]) if "r" in like.attrs["fixed"] else None
    if r_true is not None:
        left.axvline(r_true, color="gray", ls="--", lw=0.8)
    left.set_xlabel("$r$")
    left.set_ylabel("posterior density (first dataset)")
    left.legend(fontsize=8)
    ref = sbi[0]
    n = min(ref[nr.R_MEAN].size, like[nr.R_MEAN].size)
    sb = ref[nr.SIGMA_BETA_MEAN][:n]
    for k, p in enumerate(sbi):
        hdi = p[nr.R_HDI][:n]
        right.vlines(sb, hdi[:, 0], hdi[:, 1], color=f"C{k}", alpha=0.5, lw=0.8)
        right.plot(
            sb, p[nr.R_MEAN][:n], "o", ms=3, color=f"C{k}", label=f"SBI {p.attrs['compression']}"
        )
    hdi = like[nr.R_HDI][:n]
    right.vlines(sb * 1.03, hdi[:, 0], hdi[:, 1], color="k", alpha=0.5, lw=0.8)
    right.plot(sb * 1.03, like[nr.R_MEAN][:n], "s", ms=3, color="k", label="likelihood")
    right.vlines(sb, ref[nr.R_MEAN][:n], like[nr.R_MEAN][:n], color="gray", lw=0.4)
    if r_true is not None:
        right.axhline(r_true, color="gray", ls="--", lw=0.8)
    if np.all(sb > 0) and sb.max() > 3 * sb.min():
        right.set_xscale("log")
    right.set_xlabel(f"inferred {SIGMA_BETA} (SBI {ref.attrs['compression']})")
    right.set_ylabel("posterior mean $r$ (68% HDI)")
    right.legend(fontsize=8)
    fig.suptitle(f"set '{like.attrs['set']}': SBI against the power-spectrum likelihood")
    return fig


def likelihood(posteriors, likelihood_path, output) -> None:
    _save(_figure_likelihood(posteriors, likelihood_path), output)


# ---------------------------------------------------------------- coverage against training size
def _figure_training_size(coverage, estimators) -> Figure:
    """Fig. 1: joint TARP coverage of estimators trained on nested subsets."""
    if len(coverage) != len(estimators):
        raise DataError(f"{len(coverage)} coverage products for {len(estimators)} estimators")
    runs = []
    for c_path, e_path in zip(coverage, estimators, strict=True):
        cov, est = nr.read_coverage(c_path), nr.read_estimator(e_path)
        runs.append((int(est.attrs["training_simulations"]), cov))
    runs.sort(key=lambda run: run[0])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(runs)))
    for (n, cov), colour in zip(runs, colours, strict=True):
        alpha, ecp, std = cov[nr.CREDIBILITY], cov[nr.ECP][0], cov[nr.ECP_STD][0]
        left.fill_between(alpha, ecp - 2 * std, ecp + 2 * std, color=colour, alpha=0.15, lw=0)
        left.plot(alpha, ecp, color=colour, label=f"{n} simulations")
    left.plot([0, 1], [0, 1], "k--", lw=0.8)
    left.set_xlabel("credibility level")
    left.set_ylabel("expected coverage (joint)")
    left.legend(fontsize=8)
    sizes = [n for n, _ in runs]
    right.plot(sizes, [float(cov[nr.DEVIATION_SIGMA][0]) for _, cov in runs], "o-")
    right.axhline(3.0, color="gray", ls="--", lw=0.8)
    right.set_xscale("log")
    right.set_xlabel("training simulations")
    right.set_ylabel(r"largest TARP deviation ($\sigma$)")
    compression = runs[0][1].attrs["compression"]
    fig.suptitle(f"coverage against training-set size, {compression}")
    return fig


def training_size(coverage, estimators, output) -> None:
    _save(_figure_training_size(coverage, estimators), output)
