"""Figures and the summary table of duivenvoorden2025 from the SBI products.

tarp (Figs. 1, 11: joint and marginal coverage with +-2 sigma bootstrap bands),
corner (Figs. 2, 5: posteriors of r, A_lens, B_d, gamma_d, B_s, gamma_s for the first
dataset of a test set, or several observed skies overlaid), r_vs_sigma_beta (Fig. 3:
posterior r against the inferred spectral-index power), sigma_r (Fig. 4: posterior width
of r against the inferred index power, one panel per compression), predictive (Fig. 9:
posterior predictive chi^2 against the observed value), summary (Table 3: mean r and mean
half-width of its 68% HDI per set and compression, as CSV).  Products are read through
:mod:`bmodesep.products.npe_results`.  ``NAME(inputs, output)`` saves the figure;
``_figure_NAME(inputs)`` builds and returns it (for tests).
"""

from __future__ import annotations

import csv
import textwrap
from io import BytesIO, StringIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from bmodesep.core.npe.prior import PARAMETERS
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


def _save(fig, output) -> None:
    """Write the figure atomically (a failed write leaves nothing at ``output``)."""
    buffer = BytesIO()
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


# ---------------------------------------------------------------- corner
def _limits(sample_sets, truth, idx) -> list[tuple[float, float]]:
    out = []
    for k in idx:
        values = [s[:, k] for s in sample_sets]
        if truth is not None:
            values.append(np.atleast_1d(truth[k]))
        lo, hi = float(min(v.min() for v in values)), float(max(v.max() for v in values))
        pad = 0.05 * (hi - lo) if hi > lo else 0.5 * max(abs(lo), 1e-3)
        out.append((lo - pad, hi + pad))
    return out


def _corner_figure(sample_sets, labels, truth, title) -> Figure:
    """Lower-triangle corner plot; the title and legend sit in the empty upper triangle."""
    idx = [PARAMETERS.index(p) for p in CORNER]
    n = len(idx)
    fig, axes = plt.subplots(n, n, figsize=(1.8 * n, 1.8 * n))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.98, wspace=0.06, hspace=0.06)
    lims = _limits(sample_sets, truth, idx)
    for k, samples in enumerate(sample_sets):
        s = samples[:, idx]
        for i in range(n):
            for j in range(i + 1):
                ax = axes[i, j]
                if i == j:
                    ax.hist(
                        s[:, i],
                        bins=30,
                        range=lims[i],
                        histtype="step",
                        density=True,
                        color=f"C{k}",
                    )
                else:
                    ax.plot(
                        s[:, j],
                        s[:, i],
                        ".",
                        ms=2,
                        alpha=0.4,
                        color=f"C{k}",
                        mew=0,
                        rasterized=True,
                    )
    for i in range(n):
        for j in range(n):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            ax.set_xlim(lims[j])
            ax.xaxis.set_major_locator(ticker.MaxNLocator(3, prune="both"))
            if truth is not None:
                ax.axvline(truth[idx[j]], color="gray", ls="--", lw=0.8)
            if i == j:
                ax.set_yticks([])
            else:
                ax.set_ylim(lims[i])
                ax.yaxis.set_major_locator(ticker.MaxNLocator(3, prune="both"))
                if truth is not None:
                    ax.axhline(truth[idx[i]], color="gray", ls="--", lw=0.8)
            ax.tick_params(labelsize=7, labelbottom=i == n - 1, labelleft=j == 0 and i > 0)
            if i == n - 1:
                ax.set_xlabel(LABELS[CORNER[j]])
                for t in ax.get_xticklabels():
                    t.set_rotation(45)
            if j == 0 and i > 0:
                ax.set_ylabel(LABELS[CORNER[i]])
    # title block at the top left of the empty triangle, legend at its top right
    top = axes[0, 1].get_position()
    fig.text(top.x0 + 0.01, top.y1, title, ha="left", va="top", fontsize=11, wrap=False)
    corner_box = axes[0, n - 1].get_position()
    handles = [plt.Line2D([], [], color=f"C{k}") for k in range(len(sample_sets))]
    if truth is not None:
        handles.append(plt.Line2D([], [], color="gray", ls="--", lw=0.8))
        labels = [*labels, "true value"]
    fig.legend(
        handles,
        labels,
        loc="upper right",
        bbox_to_anchor=(corner_box.x1, corner_box.y1),
        frameon=False,
    )
    return fig


def _corner(sample_sets, labels, truth, output, title) -> None:
    _save(_corner_figure(sample_sets, labels, truth, title), output)


def _figure_corner(inputs) -> Figure:
    products = [nr.read_posteriors_or_observed(p) for p in inputs]
    first = products[0]
    if first.kind == nr.NPE_POSTERIORS:
        fixed = ", ".join(first.attrs["fixed"]) or "none"
        title = f"set '{first.attrs['set']}', first dataset, {first.attrs['compression']}"
        title += "\n" + textwrap.fill(f"fixed: {fixed}", 48)
        return _corner_figure(
            [first[nr.SAMPLES][0]], [first.attrs["compression"]], first[nr.THETA][0], title
        )
    return _corner_figure(
        [p[nr.SAMPLES][0] for p in products],
        [p.attrs["simulation"] for p in products],
        None,
        f"observed skies, {first.attrs['compression']}\n(first noise realisation)",
    )


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
        title += (
            f": true index power {SIGMA_BETA} = 0 in every dataset"
            if value == 0
            else f": true index power {SIGMA_BETA} = {value:.3g} in every dataset"
        )
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
