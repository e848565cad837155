"""Figures of kabalan2025 from the stage products, one function per figure.

grid_search (variance and NLL against patch counts), patches (Figs. 1, 7, 8),
residual_maps (Fig. 9), residual_spectra (Fig. 10), metrics (Fig. 11),
r_likelihood (Fig. 12), r_hat_vs_k (Fig. 13).  Each reads small HDF5 products only,
through the checked readers of :mod:`bmodesep.products.compsep` and
:mod:`bmodesep.products.rlike`.  ``NAME(inputs, output, ...)`` saves the figure;
``_figure_NAME(inputs, ...)`` builds and returns it (for tests).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import healpy as hp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from bmodesep.core.seds import SPECTRAL_PARAMETERS as PARAMETERS
from bmodesep.errors import DataError
from bmodesep.products import compsep as cp
from bmodesep.products import rlike as rl
from bmodesep.products import sims
from bmodesep.products.io import write_bytes_atomic, write_csv_atomic

LABELS = {"beta_d": r"$\beta_d$", "temperature_d": r"$T_d$", "beta_s": r"$\beta_s$"}
MAX_COUNT_TICKS = 8
RESIDUAL_RANGE_UK = 0.5  # colour range of the residual maps, +- uK


def _save(fig, output) -> None:
    """Write the figure atomically (a failed write leaves nothing at ``output``)."""
    buffer = BytesIO()
    fig.savefig(buffer, format=Path(output).suffix[1:] or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(output, buffer.getvalue())


def count_ticks(counts, max_ticks: int = MAX_COUNT_TICKS) -> list[int]:
    """Patch counts to label on a log axis: all of them, or ``max_ticks`` spread in log."""
    counts = sorted({int(c) for c in np.ravel(counts)})
    if len(counts) <= max_ticks:
        return counts
    logs = np.log(counts)
    targets = np.linspace(logs[0], logs[-1], max_ticks)
    return sorted({counts[int(np.argmin(np.abs(logs - t)))] for t in targets})


def patch_count_axis(ax, counts) -> None:
    """Log x axis labelled with plain integers at the patch counts (no 2x10^0 ticks)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(count_ticks(counts)))
    ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:.0f}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    lo, hi = min(counts), max(counts)
    ax.set_xlim(lo / 1.25, hi * 1.25)


# ---------------------------------------------------------------- grid search
def _figure_grid_search(inputs) -> Figure:
    sel = cp.read_grid_selection(inputs[0])
    conf = sel[cp.CONFIGURATION]
    syst = sel[cp.SYSTEMATIC_RESIDUAL]
    nll = sel[cp.NLL_MEAN]
    nll_min = float(nll.min())
    rows = (
        (sel[cp.CMB_VARIANCE], r"$\sigma^2_{\rm CMB}$ [uK$^2$]"),
        (nll - nll_min, f"mean $-\\ln L$ minus its minimum\n(minimum {nll_min:.8g})"),
    )
    best = int(sel.attrs["best_index"])
    norm = matplotlib.colors.LogNorm(vmin=max(syst.min(), 1e-12), vmax=max(syst.max(), 1e-11))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex="col", constrained_layout=True)
    for col, name in enumerate(PARAMETERS):
        for row, (values, label) in enumerate(rows):
            ax = axes[row, col]
            sc = ax.scatter(conf[:, col], values, c=syst, s=18, cmap="viridis", norm=norm)
            ax.scatter(conf[best, col], values[best], marker="*", s=200, c="red", label="selected")
            patch_count_axis(ax, conf[:, col])
            ax.yaxis.set_major_formatter(ticker.ScalarFormatter(useOffset=False))
            ax.set_ylabel(label)
            if row == 1:
                ax.set_xlabel(f"number of patches of {LABELS[name]}")
    fig.colorbar(sc, ax=axes, label="systematic residual [uK$^2$]")
    axes[0, 0].legend()
    fig.suptitle(
        f"grid search, zone {sel.attrs['zone']}: selected {tuple(int(k) for k in conf[best])}"
    )
    return fig


def grid_search(inputs, output, **_) -> None:
    _save(_figure_grid_search(inputs), output)


# ---------------------------------------------------------------- patches
def patches(inputs, output, **_) -> None:
    fits = [cp.read_compsep_fit(p) for p in inputs]
    fig = plt.figure(figsize=(4.5 * len(fits), 8))
    for col, fit in enumerate(fits):
        for row, name in enumerate(PARAMETERS):
            labels = fit[cp.patches_name(name)].astype(float)
            shown = np.where(labels >= 0, (labels * 0.618034) % 1.0, hp.UNSEEN)
            hp.mollview(
                shown,
                fig=fig.number,
                sub=(3, len(fits), row * len(fits) + col + 1),
                title=f"{fit.attrs['method']} {LABELS[name]}: {int(labels.max()) + 1}",
                cbar=False,
                cmap="tab20",
            )
    _save(fig, output)


# ---------------------------------------------------------------- residual maps
def _figure_residual_maps(inputs, sky=None, nside=None) -> Figure:
    if sky is None or nside is None:
        raise DataError("residual_maps needs the sky product and its nside")
    nside = int(nside)
    product, _ = sims.read_sky(sky, nside)
    fits = [cp.read_compsep_fit(p, nside) for p in inputs]
    methods = sorted({f.attrs["method"] for f in fits})
    # one colour bar for all maps (they share the range), in a strip below them: the
    # per-map bars of healpy put their unit label against the next row's titles
    strip_in = 0.75
    height = 2.9 * len(methods) + strip_in
    fig = plt.figure(figsize=(10, height))
    for row, method in enumerate(methods):
        for stokes in (0, 1):
            full = np.full(hp.nside2npix(nside), hp.UNSEEN)
            mse = []
            for fit in (f for f in fits if f.attrs["method"] == method):
                pix = fit[cp.PIXELS]
                resid = fit[cp.CMB_QU].mean(axis=0)[stokes] - product["cmb/qu"][stokes, pix]
                full[pix] = resid
                mse.append(np.mean(resid**2))
            hp.mollview(
                full,
                fig=fig.number,
                sub=(len(methods), 2, 2 * row + stokes + 1),
                title=f"{method} {'QU'[stokes]} residual, MSE {np.mean(mse):.2e} uK$^2$",
                min=-RESIDUAL_RANGE_UK,
                max=RESIDUAL_RANGE_UK,
                cmap="RdBu_r",
                cbar=False,
            )
    strip = strip_in / height
    for ax in fig.axes:
        box = ax.get_position()
        ax.set_position([box.x0, strip + box.y0 * (1 - strip), box.width, box.height * (1 - strip)])
    mappable = plt.cm.ScalarMappable(
        norm=matplotlib.colors.Normalize(-RESIDUAL_RANGE_UK, RESIDUAL_RANGE_UK), cmap="RdBu_r"
    )
    cax = fig.add_axes([0.3, 0.45 * strip, 0.4, 0.18 * strip])
    fig.colorbar(
        mappable, cax=cax, orientation="horizontal", label="reconstructed minus true CMB [uK]"
    )
    return fig


def residual_maps(inputs, output, sky=None, nside=None, **_) -> None:
    _save(_figure_residual_maps(inputs, sky=sky, nside=nside), output)


# ---------------------------------------------------------------- residual spectra
def residual_spectra(inputs, output, **_) -> None:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    first = rl.read_r_likelihood(inputs[0])
    ell = first[rl.ELL]
    ax.plot(ell, rl.as_dl(first, rl.CL_LENSING), "k:", label="lensing")
    ax.plot(ell, 1e-3 * rl.as_dl(first, rl.CL_TENSOR_R1), "k--", label="r = 1e-3")
    for i, path in enumerate(inputs):
        p = rl.read_r_likelihood(path)
        m, color = p.attrs["method"], f"C{i % 10}"
        if rl.CL_SYSTEMATIC_RESIDUAL in p.data:
            ax.plot(
                ell, rl.as_dl(p, rl.CL_SYSTEMATIC_RESIDUAL), color=color, label=f"{m} systematic"
            )
        else:  # an observation: its spectrum (the systematic residual is unknown)
            ax.plot(ell, rl.as_dl(p, rl.CL_OBSERVED), color=color, label=f"{m} observed")
        ax.plot(
            ell,
            rl.as_dl(p, rl.CL_STATISTICAL_RESIDUAL),
            color=color,
            ls="--",
            label=f"{m} statistical",
        )
    ax.set_yscale("log")
    ax.set_xlabel(r"$\ell$")
    kind = "MASTER band powers" if first.attrs["spectrum"] == "master" else "f_sky-corrected"
    ax.set_ylabel(rf"$D_\ell^{{BB}}$ [uK$^2$], {kind}")
    ax.legend(fontsize=8)
    _save(fig, output)


# ---------------------------------------------------------------- metrics
def metrics(inputs, output, rlike=(), **_) -> None:
    """Distributions over noise realisations of the CMB spatial variance, -ln L and the
    total BB power of the reconstructed CMB (Fig. 11), per method over all zones."""
    fits = [cp.read_compsep_fit(p) for p in inputs]
    powers = {}
    for path in rlike:
        p = rl.read_r_likelihood(path)
        powers[p.attrs["method"]] = p[rl.ZONE_TOTAL_BB_POWER].sum(axis=0)
    methods = sorted({f.attrs["method"] for f in fits})
    missing = set(methods) - set(powers)
    if missing:
        raise DataError(f"metrics: no r_likelihood product for {', '.join(sorted(missing))}")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, method in enumerate(methods):
        sel = [f for f in fits if f.attrs["method"] == method]
        var = np.concatenate([f[cp.SPATIAL_VARIANCE] for f in sel])
        nll = np.concatenate([f[cp.NLL] - f[cp.NLL].mean() for f in sel])
        for ax, values in zip(axes, (var, nll, powers[method]), strict=True):
            ax.hist(values, bins=15, alpha=0.5, label=method, color=f"C{i % 10}")
            ax.axvline(values.mean(), ls="--", color=f"C{i % 10}")
    for ax, title in zip(
        axes,
        (
            "spatial variance of the CMB [uK$^2$]",
            r"$-\ln L$ minus its mean",
            r"total $C_\ell^{BB}$ power of the CMB, summed over zones [uK$^2$]",
        ),
        strict=True,
    ):
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("noise realisations")
    axes[0].legend()
    _save(fig, output)


# ---------------------------------------------------------------- r likelihood
def r_ranges(products, pad: float = 1.5, zoom_ratio: float = 0.3):
    """x limits of the r-likelihood figure: ``(full, zoom)``, ``zoom`` None when not needed.

    Each method spans its 68% interval padded by ``pad`` widths.  ``full`` covers every
    method and the simulated r.  Methods whose spans overlap form a group; when there are
    several groups, ``zoom`` covers the one nearest the simulated r if it is narrower
    than ``zoom_ratio`` of ``full`` (the unbiased methods, squeezed by a biased one).
    """
    grid = products[0][rl.R_GRID]
    step = float(np.min(np.diff(grid)))
    r_sim = float(products[0].attrs["r_simulated"])
    spans = []
    for p in products:
        a = p.attrs
        w = max(a["r_high"] - a["r_low"], step)
        spans.append((max(a["r_low"] - pad * w, grid[0]), min(a["r_high"] + pad * w, grid[-1])))
    full = (
        min(lo for lo, _ in [*spans, (r_sim, r_sim)]),
        max(hi for _, hi in [*spans, (r_sim, r_sim)]),
    )
    groups: list[list[float]] = []
    for lo, hi in sorted(spans):
        if groups and lo <= groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], hi)
        else:
            groups.append([lo, hi])
    if len(groups) < 2:
        return full, None
    near = min(
        groups,
        key=lambda g: 0.0 if g[0] <= r_sim <= g[1] else min(abs(g[0] - r_sim), abs(g[1] - r_sim)),
    )
    zoom = (min(near[0], r_sim), max(near[1], r_sim))
    return full, zoom if zoom[1] - zoom[0] < zoom_ratio * (full[1] - full[0]) else None


def _figure_r_likelihood(inputs) -> Figure:
    products = [rl.read_r_likelihood(path) for path in inputs]
    full, zoom = r_ranges(products)
    ncol = 1 if zoom is None else 2
    fig, axes = plt.subplots(
        1, ncol, figsize=(6.5 * ncol, 4.5), squeeze=False, constrained_layout=True
    )
    axes = axes[0]
    for ax in axes:
        for i, p in enumerate(products):
            a = p.attrs
            ax.plot(
                p[rl.R_GRID],
                p[rl.LIKELIHOOD],
                color=f"C{i % 10}",
                label=f"{a['method']}: r = {a['r_hat']:.2e} "
                f"+{a['r_high'] - a['r_hat']:.1e} -{a['r_hat'] - a['r_low']:.1e}",
            )
        for r_sim in sorted({p.attrs["r_simulated"] for p in products}):
            ax.axvline(r_sim, color="gray", ls=":", label=f"simulated r = {r_sim:g}")
        ax.set_xlabel("r")
        ax.set_ylim(0, 1.05)
    axes[0].set_xlim(*full)
    axes[0].set_ylabel(r"$L(r)/L_{\max}$")
    if zoom is not None:
        axes[1].set_xlim(*zoom)
        axes[1].set_title(f"zoom on r in [{zoom[0]:.2g}, {zoom[1]:.2g}]", fontsize=10)
        axes[0].axvspan(*zoom, color="gray", alpha=0.15, lw=0)
        axes[0].set_title("all methods (shaded: zoomed on the right)", fontsize=10)
    for ax in axes:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(6))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 2), fontsize=8)
    return fig


def r_likelihood(inputs, output, **_) -> None:
    _save(_figure_r_likelihood(inputs), output)


# ---------------------------------------------------------------- r summary table
R_SUMMARY_COLUMNS = (
    "method",
    "patches",
    "r_true",
    "r_hat",
    "lo68",
    "hi68",
    "upper68",
    "sigma_r",
)


def r_summary(inputs, output, **_) -> None:
    """One row per method: patch counts per zone, r-hat, its 68% interval, the 68% upper
    limit on r >= 0 and sigma(r) = half the 68% interval (kabalan2025 Table 6 style)."""
    from bmodesep.core.rlike.likelihood import upper_limit

    rows = []
    for path in inputs:
        p = rl.read_r_likelihood(path)
        a = p.attrs
        patches = "; ".join(
            f"{zone} {'/'.join(str(int(k)) for k in conf)}"
            for zone, conf in zip(a["zones"], p[rl.ZONE_CONFIGURATION], strict=True)
        )
        rows.append(
            {
                "method": a["method"],
                "patches": patches,
                "r_true": f"{a['r_simulated']:g}",
                "r_hat": f"{a['r_hat']:.3e}",
                "lo68": f"{a['r_low']:.3e}",
                "hi68": f"{a['r_high']:.3e}",
                "upper68": f"{upper_limit(p[rl.R_GRID], p[rl.LIKELIHOOD]):.3e}",
                "sigma_r": f"{0.5 * (a['r_high'] - a['r_low']):.3e}",
            }
        )
    write_csv_atomic(output, rows, R_SUMMARY_COLUMNS)


# ---------------------------------------------------------------- r-hat against K
def _figure_r_hat_vs_k(inputs, rlike=()) -> Figure:
    sels = [cp.read_grid_selection(p) for p in inputs]
    others = [rl.read_r_likelihood(p) for p in rlike]
    fig, axes = plt.subplots(
        1, len(sels), figsize=(6 * len(sels), 5.5), squeeze=False, layout="constrained"
    )
    smallest = np.inf
    for ax, sel in zip(axes[0], sels, strict=True):
        if cp.R_HAT not in sel.data:
            raise DataError(
                f"{sel.path}: no r_hat per configuration (select the grid with --spectra)"
            )
        conf, r_hat = sel[cp.CONFIGURATION], sel[cp.R_HAT]
        nonzero = np.abs(r_hat[r_hat != 0])
        smallest = min(smallest, float(nonzero.min()) if nonzero.size else np.inf)
        for td, bs in sorted({(int(a), int(b)) for a, b in conf[:, 1:]}):
            rows = (conf[:, 1] == td) & (conf[:, 2] == bs)
            order = np.argsort(conf[rows, 0])
            ax.plot(
                conf[rows, 0][order],
                r_hat[rows][order],
                "o-",
                ms=3,
                label=f"K T_d {td}, K beta_s {bs}",
            )
        best = int(sel.attrs["best_index"])
        ax.plot(conf[best, 0], r_hat[best], "r*", ms=14, label="selected")
        markers = iter("sDP^vX<>")
        counts = list(conf[:, 0])
        for p in others:
            if p.attrs["method"] == "kmeans" or sel.attrs["zone"] not in p.attrs["zones"]:
                continue
            z = list(p.attrs["zones"]).index(sel.attrs["zone"])
            k = p[rl.ZONE_CONFIGURATION][z]
            counts.append(k[0])
            ax.plot(
                k[0],
                p[rl.ZONE_R_HAT][z],
                next(markers, "o"),
                color="k",
                mfc="none",
                ms=9,
                label=f"{p.attrs['method']} {tuple(int(x) for x in k)}",
            )
        patch_count_axis(ax, counts)
        ax.set_xlabel(r"number of patches of $\beta_d$")
        ax.set_ylabel(r"$\hat r$ (symmetric log)")
        ax.set_title(sel.attrs["zone"])
        ax.axhline(0.0, color="gray", lw=0.8)
        # the grid's lines in one legend below the panels, the marked fits in each panel
        lines = [h for h in ax.get_lines() if h.get_label().startswith("K T_d")]
        marked = [h for h in ax.get_lines() if h not in lines and not h.get_label().startswith("_")]
        ax.legend(handles=marked, fontsize=7, loc="upper right")
    # log scale down to the smallest |r-hat| of the grid (small biases stay visible)
    linthresh = 1e-5 if not np.isfinite(smallest) else max(smallest, 1e-6)
    for ax in axes[0]:
        ax.set_yscale("symlog", linthresh=linthresh)
        values = np.concatenate([np.asarray(h.get_ydata(), float) for h in ax.get_lines()])
        if values.min() >= 0:  # nothing negative: no empty negative decades
            ax.set_ylim(bottom=-linthresh)
    fig.legend(handles=lines, loc="outside lower center", ncol=8, fontsize=7)
    return fig


def r_hat_vs_k(inputs, output, rlike=(), **_) -> None:
    """r-hat of every grid configuration against K_beta_d, one panel per zone (Fig. 13),
    with the multi-resolution and single-patch fits of the same zone as labelled points."""
    _save(_figure_r_hat_vs_k(inputs, rlike=rlike), output)


# ---------------------------------------------------------------- recovery (sec. 5.1)
RULE_LABELS = {
    "variance": "eq.9",
    "threshold": "thr",
    "variance_plus_systematic": "var+syst",
    "nll": "nll",
    "r_aware": "r-aware",
}


def recovery(recovery_path, selections, output, **_) -> None:
    """Per zone (two rows) and parameter (columns): the selection objectives along the
    grid line through the true counts (the two other counts at their true values).  Top:
    sigma^2_CMB (eq. 9) and sigma^2_CMB + systematic; bottom: the systematic residual
    (log, floored at 1e-12 of its largest value) and the mean -ln L.  The truth is
    marked and each rule's choice is listed in the titles."""
    rows = cp.read_recovery(recovery_path)
    sels = [cp.read_grid_selection(p) for p in selections]
    fig, axes = plt.subplots(
        2 * len(sels), 3, figsize=(14, 5.6 * len(sels)), squeeze=False, constrained_layout=True
    )
    for z, sel in enumerate(sels):
        zone = sel.attrs["zone"]
        mine = [r for r in rows if r["zone"] == zone]
        if not mine:
            raise DataError(f"{recovery_path}: no row for zone {zone}")
        truth = np.array([int(mine[0][f"true_k_{p}"]) for p in PARAMETERS])
        conf = sel[cp.CONFIGURATION]
        var, syst, nll = sel[cp.CMB_VARIANCE], sel[cp.SYSTEMATIC_RESIDUAL], sel[cp.NLL_MEAN]
        floor = 1e-12 * max(float(syst.max()), 1e-300)
        for col, name in enumerate(PARAMETERS):
            top, bottom = axes[2 * z, col], axes[2 * z + 1, col]
            others = [i for i in range(3) if i != col]
            line = np.all(conf[:, others] == truth[others], axis=1)
            if not line.any():
                top.set_title(f"{zone}: the truth is not on the grid")
                continue
            order = np.argsort(conf[line, col])
            k = conf[line, col][order]
            top.plot(k, var[line][order], "o-", label=r"$\sigma^2_{\rm CMB}$ (eq. 9)")
            top.plot(k, (var + syst)[line][order], "s--", label=r"$\sigma^2_{\rm CMB}$ + syst.")
            top.set_ylabel("uK$^2$")
            bottom.plot(k, np.maximum(syst[line][order], floor), "o-", color="C2", label="syst.")
            bottom.set_yscale("log")
            bottom.set_ylabel("systematic residual [uK$^2$]")
            twin = bottom.twinx()
            twin.plot(k, (nll[line] - nll[line].min())[order], "k:", label=r"$-\ln L$ - min")
            twin.set_ylabel(r"mean $-\ln L$ minus its line minimum")
            for ax in (top, bottom):
                ax.axvline(truth[col], color="red", lw=2, alpha=0.4)
                patch_count_axis(ax, k)
            bottom.set_xlabel(f"number of patches of {LABELS[name]} (truth {truth[col]})")
            picks = ", ".join(
                f"{RULE_LABELS.get(r['rule'], r['rule'])} {int(r[f'selected_k_{name}'])}"
                for r in mine
            )
            top.set_title(f"{zone}, selected: {picks}", fontsize=8)
            if z == 0 and col == 0:
                top.legend(fontsize=7)
                bottom.legend(fontsize=7, loc="upper left")
                twin.legend(fontsize=7, loc="upper right")
    fig.suptitle("selection objectives through the true patch counts (red), kabalan2025 sec. 5.1")
    _save(fig, output)
