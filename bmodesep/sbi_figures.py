"""Figures and the summary table of duivenvoorden2025 from the SBI products.

    python -m bmodesep.sbi_figures NAME --inputs F... --output OUT

NAME: tarp (Figs. 1, 11: joint and marginal coverage with +-2 sigma bootstrap bands),
corner (Figs. 2, 5: posteriors of r, A_lens, B_d, gamma_d, B_s, gamma_s for the first
dataset of a test set, or several observed skies overlaid), r_vs_sigma_beta (Fig. 3:
posterior r against the inferred spectral-index power), sigma_r (Fig. 4: posterior width
of r against the inferred index power, one panel per compression), predictive (Fig. 9:
posterior predictive chi^2 against the observed value), summary (Table 3: mean r and mean
half-width of its 68% HDI per set and compression, as CSV).
"""

from __future__ import annotations

import argparse
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bmodesep import io
from bmodesep.cli import run_cli
from bmodesep.errors import DataError
from bmodesep.prior import PARAMETERS

CORNER = ("r", "A_lens", "B_d", "gamma_d", "B_s", "gamma_s")
LABELS = {
    "r": "$r$",
    "A_lens": r"$A_{\rm lens}$",
    "B_d": "$B_d$",
    "gamma_d": r"$\gamma_d$",
    "B_s": "$B_s$",
    "gamma_s": r"$\gamma_s$",
}


def _save(fig, output) -> None:
    fig.savefig(output, dpi=110, bbox_inches="tight")
    plt.close(fig)


def tarp(inputs, output) -> None:
    cov = io.read_product(inputs[0], "npe_coverage")
    names = list(cov.attrs["names"])
    alpha, ecp, std = cov["credibility"], cov["ecp"], cov["ecp_std"]
    ncol = 5
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 3 * nrow), sharex=True, sharey=True)
    for ax, name, e, s, dev in zip(
        axes.flat, names, ecp, std, cov["deviation_sigma"], strict=False
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


def _corner(sample_sets, labels, truth, output, title) -> None:
    idx = [PARAMETERS.index(p) for p in CORNER]
    n = len(idx)
    fig, axes = plt.subplots(n, n, figsize=(1.8 * n, 1.8 * n))
    for k, samples in enumerate(sample_sets):
        s = samples[:, idx]
        for i in range(n):
            for j in range(n):
                ax = axes[i, j]
                if j > i:
                    ax.axis("off")
                elif i == j:
                    ax.hist(s[:, i], bins=30, histtype="step", density=True, color=f"C{k}")
                else:
                    ax.plot(s[:, j], s[:, i], ",", alpha=0.3, color=f"C{k}")
    for i in range(n):
        for j in range(i + 1):
            ax = axes[i, j]
            if truth is not None:
                ax.axvline(truth[idx[j]], color="gray", ls="--", lw=0.8)
                if i != j:
                    ax.axhline(truth[idx[i]], color="gray", ls="--", lw=0.8)
            ax.tick_params(labelsize=6)
            if i == n - 1:
                ax.set_xlabel(LABELS[CORNER[j]])
            if j == 0 and i > 0:
                ax.set_ylabel(LABELS[CORNER[i]])
    handles = [plt.Line2D([], [], color=f"C{k}") for k in range(len(sample_sets))]
    fig.legend(handles, labels, loc="upper right")
    fig.suptitle(title)
    _save(fig, output)


def corner(inputs, output) -> None:
    products = [_posterior_or_observed(p) for p in inputs]
    if products[0].kind == "npe_posteriors":
        p = products[0]
        fixed = ", ".join(p.attrs["fixed"]) or "none"
        _corner(
            [p["samples"][0]],
            [p.attrs["compression"]],
            p["theta"][0],
            output,
            f"set '{p.attrs['set']}', first dataset (fixed: {fixed})",
        )
    else:
        _corner(
            [p["samples"][0] for p in products],
            [p.attrs["simulation"] for p in products],
            None,
            output,
            f"observed skies, {products[0].attrs['compression']}",
        )


def _posterior_or_observed(path) -> io.Product:
    for kind in ("npe_posteriors", "npe_observed"):
        try:
            return io.read_product(path, kind)
        except DataError as err:
            if "holds a" not in str(err):
                raise
    raise DataError(f"{path} is neither an npe_posteriors nor an npe_observed product")


def _hdi_half_width(p) -> np.ndarray:
    h = p["summary/r_hdi"]
    return 0.5 * (h[:, 1] - h[:, 0])


def r_vs_sigma_beta(inputs, output) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, path in enumerate(inputs):
        p = io.read_product(path, "npe_posteriors")
        order = np.argsort(p["summary/sigma_beta_mean"])
        r_mean, hdi = p["summary/r_mean"][order], p["summary/r_hdi"][order]
        sb = p["summary/sigma_beta_mean"][order]
        # the mean of a skewed posterior can lie outside its HDI: bars are drawn as intervals
        ax.vlines(sb, hdi[:, 0], hdi[:, 1], color=f"C{k}", alpha=0.5, lw=0.8)
        ax.plot(sb, r_mean, "o", ms=3, color=f"C{k}", label=p.attrs["compression"])
        if "r" in p.attrs["fixed"]:
            ax.axhline(p["theta"][0, 0], color="gray", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(r"inferred $(\sigma_{\beta_d}^2 + \sigma_{\beta_s}^2)^{1/2}$ (posterior mean)")
    ax.set_ylabel("posterior mean $r$ (68% HDI)")
    ax.set_title(f"set '{p.attrs['set']}'")
    ax.legend()
    _save(fig, output)


def sigma_r(inputs, output) -> None:
    products = [io.read_product(path, "npe_posteriors") for path in inputs]
    fig, axes = plt.subplots(
        1, len(products), figsize=(4 * len(products), 3.5), sharey=True, squeeze=False
    )
    truth = np.concatenate([p["true_sigma_beta"] for p in products])
    norm = plt.Normalize(truth.min(), max(truth.max(), truth.min() + 1e-9))
    for ax, p in zip(axes[0], products, strict=True):
        sb_hdi = p["summary/sigma_beta_hdi"]
        sb = p["summary/sigma_beta_mean"]
        ax.hlines(_hdi_half_width(p), sb_hdi[:, 0], sb_hdi[:, 1], color="lightgray", lw=0.8)
        sc = ax.scatter(sb, _hdi_half_width(p), c=p["true_sigma_beta"], norm=norm, s=12, zorder=2)
        ax.set_title(p.attrs["compression"])
        ax.set_xlabel(r"inferred $(\sigma_{\beta_d}^2 + \sigma_{\beta_s}^2)^{1/2}$")
    axes[0, 0].set_ylabel(r"$\sigma_r$ (half 68% HDI)")
    fig.colorbar(sc, ax=axes[0].tolist(), label="true value")
    fig.suptitle(f"set '{products[0].attrs['set']}'")
    _save(fig, output)


def predictive(inputs, output) -> None:
    products = [io.read_product(path, "npe_observed") for path in inputs]
    fig, axes = plt.subplots(1, len(products), figsize=(4 * len(products), 3), squeeze=False)
    for ax, p in zip(axes[0], products, strict=True):
        ax.hist(p["ppc/chi2_predictive"], bins=30, color="C1", alpha=0.7)
        ax.axvline(p.attrs["chi2_observed"], color="gray", ls="--")
        ax.set_title(f"{p.attrs['simulation']}: p = {p.attrs['ppc_p_value']:.2f}")
        ax.set_xlabel(r"$\chi^2$")
    _save(fig, output)


def summary(inputs, output) -> None:
    """Table 3: mean posterior mean of 100 r and mean half 68% HDI, per set and compression."""
    rows = []
    for path in inputs:
        p = _posterior_or_observed(path)
        if p.kind == "npe_posteriors":
            name, truth = (
                p.attrs["set"],
                (f"{100 * p['theta'][0, 0]:.3g}" if "r" in p.attrs["fixed"] else "prior"),
            )
        else:
            name, truth = f"observed:{p.attrs['simulation']}", ""
        rows.append(
            {
                "set": name,
                "compression": p.attrs["compression"],
                "datasets": p["samples"].shape[0],
                "true_100r": truth,
                "mean_100r": f"{100 * p['summary/r_mean'].mean():.3f}",
                "sigma_100r": f"{100 * _hdi_half_width(p).mean():.3f}",
                "mean_A_lens": f"{p['summary/A_lens_mean'].mean():.3f}",
            }
        )
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


FIGURES = {f.__name__: f for f in (tarp, corner, r_vs_sigma_beta, sigma_r, predictive, summary)}


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bmodesep.sbi_figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(FIGURES))
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    FIGURES[args.name](args.inputs, args.output)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
