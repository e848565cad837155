"""Figures of kabalan2025 from the stage products, one function per figure.

    python -m bmodesep.figures NAME --inputs F... --output PNG [--sky SKY --nside N]
        [--rlike R...]

NAME: grid_search (variance and NLL against patch counts), patches (Figs. 1, 7, 8),
residual_maps (Fig. 9), residual_spectra (Fig. 10), metrics (Fig. 11),
r_likelihood (Fig. 12), r_hat_vs_k (Fig. 13).  Each reads small HDF5 products only.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import healpy as hp
import matplotlib.pyplot as plt
import numpy as np

from bmodesep import io, sim_io
from bmodesep.cli import run_cli
from bmodesep.compsep import PARAMETERS
from bmodesep.errors import DataError

LABELS = {"beta_d": r"$\beta_d$", "temperature_d": r"$T_d$", "beta_s": r"$\beta_s$"}


def _save(fig, output) -> None:
    fig.savefig(output, dpi=110, bbox_inches="tight")
    plt.close(fig)


def grid_search(inputs, output, **_) -> None:
    sel = io.read_product(inputs[0], "grid_selection")
    conf = sel["configuration"]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), sharex="col", constrained_layout=True)
    for col, name in enumerate(PARAMETERS):
        for row, (key, label) in enumerate(
            (("cmb_variance", r"$\sigma^2_{\rm CMB}$ [uK$^2$]"), ("nll_mean", r"mean $-\ln L$"))
        ):
            ax = axes[row, col]
            sc = ax.scatter(
                conf[:, col],
                sel[key],
                c=sel["systematic_residual"],
                s=18,
                cmap="viridis",
                norm=matplotlib.colors.LogNorm(
                    vmin=max(sel["systematic_residual"].min(), 1e-12),
                    vmax=max(sel["systematic_residual"].max(), 1e-11),
                ),
            )
            best = sel.attrs["best_index"]
            ax.scatter(
                conf[best, col], sel[key][best], marker="*", s=200, c="red", label="selected"
            )
            ax.set_xscale("log")
            ax.set_ylabel(label)
            if row == 1:
                ax.set_xlabel(f"K {LABELS[name]}")
    fig.colorbar(sc, ax=axes, label="systematic residual [uK$^2$]")
    axes[0, 0].legend()
    fig.suptitle(
        f"grid search, zone {sel.attrs['zone']}: selected "
        f"{tuple(int(k) for k in conf[sel.attrs['best_index']])}"
    )
    _save(fig, output)


def _full(fit, values):
    out = np.full(hp.nside2npix(hp.npix2nside(fit["patches/beta_d"].size)), hp.UNSEEN)
    out[fit["pixels"]] = values
    return out


def patches(inputs, output, **_) -> None:
    fits = [io.read_product(p, "compsep_fit") for p in inputs]
    fig = plt.figure(figsize=(4.5 * len(fits), 8))
    for col, fit in enumerate(fits):
        for row, name in enumerate(PARAMETERS):
            labels = fit[f"patches/{name}"].astype(float)
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


def residual_maps(inputs, output, sky=None, nside=None, **_) -> None:
    product, _ = sim_io.read_sky(sky, int(nside))
    fits = [io.read_product(p, "compsep_fit") for p in inputs]
    methods = sorted({f.attrs["method"] for f in fits})
    fig = plt.figure(figsize=(10, 3.2 * len(methods)))
    for row, method in enumerate(methods):
        for stokes in (0, 1):
            full = np.full(hp.nside2npix(int(nside)), hp.UNSEEN)
            mse = []
            for fit in (f for f in fits if f.attrs["method"] == method):
                resid = (
                    fit["cmb_qu"].mean(axis=0)[stokes] - product["cmb/qu"][stokes, fit["pixels"]]
                )
                full[fit["pixels"]] = resid
                mse.append(np.mean(resid**2))
            hp.mollview(
                full,
                fig=fig.number,
                sub=(len(methods), 2, 2 * row + stokes + 1),
                title=f"{method} {'QU'[stokes]} residual, MSE {np.mean(mse):.2e}",
                unit="uK",
                min=-0.5,
                max=0.5,
                cmap="RdBu_r",
            )
    _save(fig, output)


def _as_dl(product: io.Product, key: str) -> np.ndarray:
    """A spectrum of an r_likelihood product as D_l (master band powers already are)."""
    if product.attrs["spectrum"] == "master":
        return product[key]
    ell = product["ell"]
    return ell * (ell + 1) / (2 * np.pi) * product[key]


def residual_spectra(inputs, output, **_) -> None:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    first = io.read_product(inputs[0], "r_likelihood")
    ell = first["ell"]
    ax.plot(ell, _as_dl(first, "cl_lensing"), "k:", label="lensing")
    ax.plot(ell, 1e-3 * _as_dl(first, "cl_tensor_r1"), "k--", label="r = 1e-3")
    for i, path in enumerate(inputs):
        p = io.read_product(path, "r_likelihood")
        m, color = p.attrs["method"], f"C{i % 10}"
        ax.plot(ell, _as_dl(p, "cl_systematic_residual"), color=color, label=f"{m} systematic")
        ax.plot(
            ell,
            _as_dl(p, "cl_statistical_residual"),
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


def metrics(inputs, output, rlike=(), **_) -> None:
    """Distributions over noise realisations of the CMB spatial variance, -ln L and the
    total BB power of the reconstructed CMB (Fig. 11), per method over all zones."""
    fits = [io.read_product(p, "compsep_fit") for p in inputs]
    powers = {}
    for path in rlike:
        p = io.read_product(path, "r_likelihood")
        powers[p.attrs["method"]] = p["zones/total_bb_power"].sum(axis=0)
    methods = sorted({f.attrs["method"] for f in fits})
    missing = set(methods) - set(powers)
    if missing:
        raise DataError(f"metrics: no r_likelihood product for {', '.join(sorted(missing))}")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, method in enumerate(methods):
        sel = [f for f in fits if f.attrs["method"] == method]
        var = np.concatenate([f["spatial_variance"] for f in sel])
        nll = np.concatenate([f["nll"] - f["nll"].mean() for f in sel])
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
    axes[0].legend()
    _save(fig, output)


def r_likelihood(inputs, output, **_) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in inputs:
        p = io.read_product(path, "r_likelihood")
        a = p.attrs
        ax.plot(
            p["r_grid"],
            p["likelihood"],
            label=f"{a['method']}: r = {a['r_hat']:.2e} "
            f"+{a['r_high'] - a['r_hat']:.1e} -{a['r_hat'] - a['r_low']:.1e}",
        )
        ax.axvline(a["r_simulated"], color="gray", ls=":")
    ax.set_xlabel("r")
    ax.set_ylabel(r"$L(r)/L_{\max}$")
    ax.legend(fontsize=8)
    _save(fig, output)


def r_hat_vs_k(inputs, output, rlike=(), **_) -> None:
    """r-hat of every grid configuration against K_beta_d, one panel per zone (Fig. 13),
    with the multi-resolution and single-patch fits of the same zone as labelled points."""
    sels = [io.read_product(p, "grid_selection") for p in inputs]
    others = [io.read_product(p, "r_likelihood") for p in rlike]
    fig, axes = plt.subplots(1, len(sels), figsize=(6 * len(sels), 4.5), squeeze=False)
    for ax, sel in zip(axes[0], sels, strict=True):
        conf = sel["configuration"]
        for td, bs in sorted({(int(a), int(b)) for a, b in conf[:, 1:]}):
            rows = (conf[:, 1] == td) & (conf[:, 2] == bs)
            order = np.argsort(conf[rows, 0])
            ax.plot(
                conf[rows, 0][order],
                sel["r_hat"][rows][order],
                "o-",
                ms=3,
                label=f"K T_d {td}, K beta_s {bs}",
            )
        best = sel.attrs["best_index"]
        ax.plot(conf[best, 0], sel["r_hat"][best], "r*", ms=14, label="selected")
        markers = iter("sDP^vX<>")
        for p in others:
            if p.attrs["method"] == "kmeans" or sel.attrs["zone"] not in p.attrs["zones"]:
                continue
            z = list(p.attrs["zones"]).index(sel.attrs["zone"])
            k = p["zones/configuration"][z]
            ax.plot(
                k[0],
                p["zones/r_hat"][z],
                next(markers, "o"),
                color="k",
                mfc="none",
                ms=9,
                label=f"{p.attrs['method']} {tuple(int(x) for x in k)}",
            )
        ax.set_xscale("log")
        ax.set_xlabel(r"K $\beta_d$")
        ax.set_ylabel(r"$\hat r$")
        ax.set_title(sel.attrs["zone"])
        ax.legend(fontsize=7)
    _save(fig, output)


FIGURES = {
    f.__name__: f
    for f in (
        grid_search,
        patches,
        residual_maps,
        residual_spectra,
        metrics,
        r_likelihood,
        r_hat_vs_k,
    )
}


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bmodesep.figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(FIGURES))
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--sky")
    parser.add_argument("--nside")
    parser.add_argument("--rlike", nargs="+", default=(), help="r_likelihood products")
    args = parser.parse_args(argv)
    FIGURES[args.name](args.inputs, args.output, sky=args.sky, nside=args.nside, rlike=args.rlike)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
