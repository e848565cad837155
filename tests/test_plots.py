"""Figures of the compsep and NPE products (bmodesep.plots) and their product readers.

Each figure is drawn from the smallest products that the stages would write (same kinds,
datasets, units and attributes), built here with ``io.write_product``.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys

import h5py
import matplotlib

matplotlib.use("Agg")

import healpy as hp
import matplotlib.pyplot
import numpy as np
import pytest

from bmodesep.core.compsep.likelihood import PARAMETERS as COMPSEP_PARAMETERS
from bmodesep.core.npe import coverage
from bmodesep.core.npe.prior import PARAMETERS as NPE_PARAMETERS
from bmodesep.errors import DataError
from bmodesep.plots import compsep as cplots
from bmodesep.plots import npe as nplots
from bmodesep.products import compsep as cp
from bmodesep.products import io, sims
from bmodesep.products import npe_results as nr
from bmodesep.products import rlike as rl

D = io.Dataset
P = NPE_PARAMETERS
GRID = {"beta_d": [5, 10, 20], "temperature_d": [1, 3], "beta_s": [1, 3]}
CONFIGURATIONS = {"single": [1, 1, 1], "kmeans": [10, 3, 1], "multires": [12, 3, 1]}
NLL_LEVEL = -2.0757e7  # -ln L of a LiteBIRD zone: large, nearly constant over the grid


def _prov(stage: str) -> dict:
    return io.provenance({"test": stage}, 1, stage)


# ---------------------------------------------------------------- compsep products
def write_grid_selection(path, zone="GAL020_U", grid=GRID, r_hat=True, seed=0):
    """A ``grid_selection`` product as ``run_select`` writes it (one row per configuration)."""
    rng = np.random.default_rng(seed)
    conf = np.array(
        [(a, b, c) for a in grid["beta_d"] for b in grid["temperature_d"] for c in grid["beta_s"]]
    )
    n = conf.shape[0]
    k = conf.sum(axis=1).astype(float)
    table = {
        "configuration": D(conf, "1"),
        "cmb_variance": D(0.02 + 1e-3 * k * (1 + 0.05 * rng.standard_normal(n)), "uK_CMB^2"),
        "systematic_residual": D(1e-3 / k**2 * (1 + 0.1 * rng.random(n)), "uK_CMB^2"),
        "nll_mean": D(NLL_LEVEL - 3.0 * k + rng.standard_normal(n), "1"),
        "nll_std": D(np.full(n, 30.0), "1"),
        "iterations_median": D(np.full(n, 40.0), "1"),
        "iterations_max": D(np.full(n, 80), "1"),
        "converged_fraction": D(np.ones(n), "1"),
        "at_bound_count": D(np.zeros(n, dtype=int), "1"),
    }
    if r_hat:
        table["r_hat"] = D(2e-2 / k + 1e-4 * rng.standard_normal(n), "1")
    best = int(np.argmin(table["cmb_variance"].data))
    return io.write_product(
        path,
        "grid_selection",
        table,
        _prov("grid_selection"),
        {
            "zone": zone,
            "best_index": best,
            "best_configuration": conf[best].tolist(),
            "rule": "threshold",
            "threshold_honoured": True,
        },
    )


def zone_pixels(nside: int, zone: str) -> np.ndarray:
    """Pixels of a stand-in zone: |b| > 30 deg, upper (``_U``) or lower hemisphere."""
    theta, _ = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)))
    lat = 90 - np.degrees(theta)
    return np.flatnonzero(lat > 30 if zone.endswith("_U") else lat < -30)


def cmb_map(nside: int, seed: int = 3) -> np.ndarray:
    """A smooth CMB-like Q/U map [2, npix] in uK (E and B with C_l ~ l^-2)."""
    rng = np.random.default_rng(seed)
    lmax = 3 * nside - 1
    ell, _ = hp.Alm.getlm(lmax)
    amp = np.where(ell >= 2, 0.1 / np.maximum(ell, 1), 0.0)
    alm = [
        amp * (rng.standard_normal(ell.size) + 1j * rng.standard_normal(ell.size)) for _ in "TEB"
    ]
    return np.array(hp.alm2map(alm, nside, lmax=lmax, pol=True)[1:])


def write_sky(path, nside: int, cmb_qu: np.ndarray) -> None:
    """A CMB-only ``sky`` product (what ``residual_maps`` reads of it)."""
    nalm = hp.Alm.getsize(3 * nside - 1)
    sims.write_sky(path, None, np.zeros((2, nalm)), cmb_qu, {"test": "sky"}, 1, {})


def write_compsep_fit(
    path, method="multires", zone="GAL020_U", nside=4, n_real=3, cmb_true=None, noise=0.1, seed=0
):
    """A ``compsep_fit`` product as ``run_fit`` writes it."""
    rng = np.random.default_rng(seed)
    npix = hp.nside2npix(nside)
    pix = zone_pixels(nside, zone)
    n = pix.size
    configuration = CONFIGURATIONS.get(method, [12, 3, 1])
    patches = {}
    for name, k in zip(COMPSEP_PARAMETERS, configuration, strict=True):
        labels = np.full(npix, -1)
        labels[pix] = np.arange(n) * k // n
        patches[f"patches/{name}"] = D(labels, "1", "patch labels, -1 outside the zone")
    truth = np.zeros((2, n)) if cmb_true is None else cmb_true[:, pix]
    cmb = truth[None] + noise * rng.standard_normal((n_real, 2, n))
    data = {
        "pixels": D(pix, "1"),
        **patches,
        "params": D(np.tile([1.54, 20.0, -3.0], (n_real, 1)), "1"),
        "parameter_maps": D(np.ones((n_real, 3, n)), "1"),
        "at_bound": D(np.zeros((n_real, 3), dtype=np.uint8), "1"),
        "nll": D(NLL_LEVEL + 30 * rng.standard_normal(n_real), "1", "-ln L"),
        "iterations": D(np.full(n_real, 40), "1"),
        "converged": D(np.ones(n_real, dtype=np.uint8), "1"),
        "cmb_qu": D(cmb, "uK_CMB"),
        "spatial_variance": D(cmb.var(axis=(1, 2)), "uK_CMB^2"),
        "foreground_params": D(np.array([1.54, 20.0, -3.0]), "1"),
        "systematic_components": D(1e-3 * rng.standard_normal((3, 2, n)), "uK_CMB"),
    }
    return io.write_product(
        path,
        "compsep_fit",
        data,
        _prov("compsep_fit"),
        {
            "zone": zone,
            "method": method,
            "configuration": configuration,
            "cmb_variance": 0.02,
            "systematic_residual": 1e-5,
            "n_at_bound": 0,
        },
    )


def write_r_likelihood(
    path,
    method="multires",
    r_hat=1e-3,
    sigma=2e-3,
    zones=("GAL020_U", "GAL060_L"),
    spectrum="fsky",
    r_max=0.5,
    r_points=501,
    n_ell=20,
    n_real=3,
    seed=0,
):
    """An ``r_likelihood`` product as ``stages.rlike.run`` writes it (Gaussian in r)."""
    rng = np.random.default_rng(seed)
    units = "uK_CMB^2" if spectrum == "fsky" else "uK_CMB^2 (D_l band powers)"
    ell = np.arange(30, 30 + n_ell, dtype=float)
    grid = np.linspace(0.0, r_max, r_points)
    like = np.exp(-0.5 * ((grid - r_hat) / sigma) ** 2)
    like /= like.max()
    nz = len(zones)
    tensor = 1e-3 * np.ones(n_ell) / ell**2
    lensing = 2e-2 / ell**2
    syst = 50 * r_hat * tensor
    data = {
        "ell": D(ell, "1"),
        "zones/fsky": D(np.full(nz, 0.1), "1"),
        "zones/configuration": D(np.tile(CONFIGURATIONS.get(method, [12, 3, 1]), (nz, 1)), "1"),
        "zones/r_hat": D(r_hat * (1 + 0.1 * rng.standard_normal(nz)), "1"),
        "zones/total_residual": D(np.tile(2 * syst, (nz, 1)), units),
        "zones/systematic_residual": D(np.tile(syst, (nz, 1)), units),
        "zones/likelihood": D(np.tile(like, (nz, 1)), "1"),
        "zones/total_bb_power": D(0.1 + 1e-3 * rng.standard_normal((nz, n_real)), units),
        "cl_total_residual": D(2 * syst, units),
        "cl_systematic_residual": D(syst, units),
        "cl_statistical_residual": D(syst, units),
        "cl_tensor_r1": D(tensor, units),
        "cl_lensing": D(lensing, units),
        "cl_observed": D(lensing + 2 * syst, units),
        "r_grid": D(grid, "1"),
        "likelihood": D(like, "1"),
        "zones_mean_likelihood": D(like, "1"),
        "r_hat_per_realisation": D(r_hat + sigma * rng.standard_normal(n_real), "1"),
    }
    return io.write_product(
        path,
        "r_likelihood",
        data,
        _prov("r_likelihood"),
        {
            "method": method,
            "spectrum": spectrum,
            "zones": list(zones),
            "fsky_union": 0.2,
            "r_hat": r_hat,
            "r_low": max(r_hat - sigma, 0.0),
            "r_high": r_hat + sigma,
            "sigma_r": sigma,
            "r_simulated": 0.0,
            "r_hat_at_grid_edge": False,
            "stat_residual_floored_multipoles": 0,
        },
    )


# ---------------------------------------------------------------- NPE products
ISOTROPIC = {"r": 0.01, "A_lens": 0.45, "A_d": 29.0, "alpha_d": -0.3, "beta_d": 1.55}
ISOTROPIC |= {"B_d": 0.0, "A_s": 1.5, "alpha_s": -0.6, "beta_s": -2.8, "B_s": 0.0, "rho_ds": 0.1}
ANISOTROPY = {k: v for k, v in ISOTROPIC.items() if k not in ("B_d", "B_s")}
WIDTHS = {"r": 0.004, "A_lens": 0.1, "B_d": 0.08, "gamma_d": 0.8, "B_s": 0.1, "gamma_s": 0.9}


def _theta(n: int, fixed: dict, rng) -> np.ndarray:
    theta = np.empty((n, len(P)))
    for i, name in enumerate(P):
        if name in fixed:
            theta[:, i] = fixed[name]
        elif name in ("B_d", "B_s"):
            theta[:, i] = rng.uniform(0.0, 0.5, n)
        elif name.startswith("gamma"):
            theta[:, i] = rng.uniform(-5.5, -2.5, n)
        else:
            theta[:, i] = rng.normal(0.0, 1.0, n)
    return theta


def _samples(theta: np.ndarray, n_samples: int, rng) -> np.ndarray:
    widths = np.array([WIDTHS.get(p, 0.2) for p in P])
    s = theta[:, None, :] + widths * rng.standard_normal((theta.shape[0], n_samples, len(P)))
    for name in ("r", "A_lens", "B_d", "B_s"):
        s[..., P.index(name)] = np.abs(s[..., P.index(name)])
    return s


def _sigma_beta(theta: np.ndarray) -> np.ndarray:
    i = {p: P.index(p) for p in P}
    sd = coverage.index_field_sigma(theta[..., i["B_d"]], theta[..., i["gamma_d"]])
    ss = coverage.index_field_sigma(theta[..., i["B_s"]], theta[..., i["gamma_s"]])
    return np.sqrt(sd**2 + ss**2)


def _summary(samples: np.ndarray) -> dict:
    i = {p: P.index(p) for p in P}
    quantities = {
        "r": samples[..., i["r"]],
        "A_lens": samples[..., i["A_lens"]],
        "sigma_beta": _sigma_beta(samples),
    }
    out = {}
    for name, q in quantities.items():
        out[f"summary/{name}_mean"] = D(q.mean(axis=-1), "1")
        out[f"summary/{name}_hdi"] = D(np.array([coverage.hdi(row, 0.68) for row in q]), "1")
    return out


def write_posteriors(
    path,
    set_name="isotropic",
    fixed=None,
    compression="joint",
    n=4,
    n_samples=200,
    seed=0,
    sky="",
    summary=None,
):
    """An ``npe_posteriors`` product as ``posterior_stage`` writes it (``sky``: a
    fixed-foreground set of that sky; ``summary``: r means and HDIs to store instead)."""
    rng = np.random.default_rng(seed)
    fixed = ISOTROPIC if fixed is None else fixed
    theta = _theta(n, fixed, rng)
    samples = _samples(theta, n_samples, rng)
    data = {
        "samples": D(samples.astype(np.float32), "1"),
        "theta": D(theta, "1"),
        "x": D(rng.random((n, 60)), "uK_CMB^2"),
        "seed": D(np.arange(n), "1"),
        "true_sigma_beta": D(_sigma_beta(theta), "1"),
        **_summary(samples),
    }
    if summary is not None:
        data["summary/r_mean"] = D(np.asarray(summary[0], float), "1")
        data["summary/r_hdi"] = D(np.asarray(summary[1], float), "1")
    return io.write_product(
        path,
        "npe_posteriors",
        data,
        _prov("npe_posterior"),
        {
            "set": set_name,
            "fixed": list(fixed),
            "compression": compression,
            "parameters": list(P),
            "estimator": "estimator.h5",
            "foreground": f"sim_{sky}" if sky else "",
            "sky": sky,
            "fsky": 0.21,
        },
    )


def write_coverage(path, compression="joint", levels=21, seed=0):
    """An ``npe_coverage`` product as ``coverage_stage`` writes it."""
    rng = np.random.default_rng(seed)
    names = ["joint", *P]
    alpha = np.linspace(0, 1, levels)
    ecp = np.clip(alpha + 0.02 * rng.standard_normal((len(names), levels)), 0, 1)
    std = np.full_like(ecp, 0.03)
    dev = np.abs(ecp - alpha).max(axis=1) / 0.03
    return io.write_product(
        path,
        "npe_coverage",
        {
            "credibility": D(alpha, "1"),
            "ecp": D(ecp, "1"),
            "ecp_std": D(std, "1"),
            "deviation_sigma": D(dev, "1"),
        },
        _prov("npe_coverage"),
        {
            "names": names,
            "flagged": [bool(d > 3) for d in dev],
            "compression": compression,
            "test_simulations": 100,
        },
    )


def write_observed(
    path,
    simulation="sosat_grf",
    compression="joint",
    chi2_observed=75.0,
    chi2_scale=1.0,
    n_real=2,
    n_samples=200,
    draws=60,
    seed=0,
):
    """An ``npe_observed`` product as ``observed_stage`` writes it."""
    rng = np.random.default_rng(seed)
    theta = _theta(n_real, ANISOTROPY | {"B_d": 0.2, "gamma_d": -3.0}, rng)
    theta[:, P.index("B_s")], theta[:, P.index("gamma_s")] = 0.1, -3.5
    samples = _samples(theta, n_samples, rng)
    chi2 = chi2_scale * rng.chisquare(60, draws)
    p_value = float(np.mean(chi2 >= chi2_observed))
    data = {
        "samples": D(samples.astype(np.float32), "1"),
        "x": D(rng.random((n_real, 60)), "uK_CMB^2"),
        "ppc/x_predictive": D(rng.random((draws, 60)), "uK_CMB^2"),
        "ppc/chi2_predictive": D(chi2, "1"),
        "ppc/x_covariance_sims": D(rng.random((80, 60)), "uK_CMB^2"),
        **_summary(samples),
    }
    return io.write_product(
        path,
        "npe_observed",
        data,
        _prov("npe_observed"),
        {
            "simulation": simulation,
            "compression": compression,
            "parameters": list(P),
            "chi2_observed": chi2_observed,
            "ppc_p_value": p_value,
            "nilc": "nilc.h5",
        },
    )


# ---------------------------------------------------------------- helpers


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _extent(artist, renderer):
    return artist.get_window_extent(renderer)


def _tick_gaps(ax, renderer) -> list[float]:
    """Pixels between neighbouring visible x tick labels (negative: they overlap)."""
    boxes = sorted(
        (_extent(t, renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()),
        key=lambda b: b.x0,
    )
    return [b.x0 - a.x1 for a, b in itertools.pairwise(boxes)]


@pytest.fixture
def compsep_products(tmp_path):
    """Selections, fits, sky and r likelihoods of two zones and three methods (nside 4)."""
    nside, zones = 4, ("GAL020_U", "GAL060_L")
    cmb = cmb_map(nside)
    write_sky(tmp_path / "sky.h5", nside, cmb)
    out = {"sky": tmp_path / "sky.h5", "nside": nside, "fits": [], "rlike": [], "selections": []}
    for z in zones:
        out["selections"].append(write_grid_selection(tmp_path / f"sel_{z}.h5", z))
    for i, method in enumerate(("kmeans", "multires", "single")):
        for z in zones:
            out["fits"].append(
                write_compsep_fit(
                    tmp_path / f"fit_{method}_{z}.h5", method, z, nside, cmb_true=cmb, seed=i
                )
            )
    for method, r_hat, sigma in (("kmeans", 1.5e-3, 1.8e-3), ("multires", 8e-4, 1.2e-3)):
        out["rlike"].append(write_r_likelihood(tmp_path / f"rl_{method}.h5", method, r_hat, sigma))
    out["rlike"].append(write_r_likelihood(tmp_path / "rl_single.h5", "single", 0.21, 0.012))
    return out


@pytest.fixture
def npe_products(tmp_path):
    return {
        "isotropic": [
            write_posteriors(tmp_path / "iso_joint.h5"),
            write_posteriors(tmp_path / "iso_hilc.h5", compression="hilc_joint", seed=1),
        ],
        "anisotropy": [
            write_posteriors(tmp_path / "an_joint.h5", "anisotropy", ANISOTROPY, n=6),
            write_posteriors(
                tmp_path / "an_hilc.h5", "anisotropy", ANISOTROPY, "hilc_joint", n=6, seed=1
            ),
        ],
        "coverage": write_coverage(tmp_path / "coverage.h5"),
        "observed": [
            write_observed(tmp_path / "obs_a.h5"),
            write_observed(tmp_path / "obs_b.h5", "sosat_pysm", chi2_observed=1e4, seed=1),
        ],
    }


def _non_empty(path) -> bool:
    return path.exists() and path.stat().st_size > 1000


# ---------------------------------------------------------------- every figure is written
COMPSEP_FIGURES = {
    "grid_search": lambda p: ([p["selections"][0]], {}),
    "patches": lambda p: (p["fits"][:2], {}),
    "residual_maps": lambda p: (p["fits"], {"sky": p["sky"], "nside": p["nside"]}),
    "residual_spectra": lambda p: (p["rlike"], {}),
    "metrics": lambda p: (p["fits"], {"rlike": p["rlike"]}),
    "r_likelihood": lambda p: (p["rlike"], {}),
    "r_hat_vs_k": lambda p: (p["selections"], {"rlike": p["rlike"]}),
}


@pytest.mark.parametrize("name", sorted(COMPSEP_FIGURES))
def test_compsep_figure_written(name, compsep_products, tmp_path):
    inputs, kwargs = COMPSEP_FIGURES[name](compsep_products)
    output = tmp_path / f"{name}.png"
    getattr(cplots, name)(inputs, output, **kwargs)
    assert _non_empty(output)


NPE_FIGURES = {
    "tarp": lambda p: [p["coverage"]],
    "corner": lambda p: p["isotropic"][:1],
    "r_vs_sigma_beta": lambda p: p["anisotropy"],
    "sigma_r": lambda p: p["anisotropy"],
    "predictive": lambda p: p["observed"],
}


@pytest.mark.parametrize("name", sorted(NPE_FIGURES))
def test_npe_figure_written(name, npe_products, tmp_path):
    output = tmp_path / f"{name}.png"
    getattr(nplots, name)(NPE_FIGURES[name](npe_products), output)
    assert _non_empty(output)


def test_summary_table(npe_products, tmp_path):
    free = write_posteriors(tmp_path / "free.h5", "free", fixed={}, n=2)
    inputs = [*npe_products["isotropic"], free, npe_products["observed"][0]]
    nplots.summary(inputs, tmp_path / "summary.csv")
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("set,compression,datasets,true_100r")
    assert len(lines) == 1 + len(inputs)
    assert lines[1].startswith("isotropic,joint,4,1,")  # 100 r = 1 fixed
    assert lines[3].startswith("free,joint,2,prior,")
    assert lines[-1].startswith("observed:sosat_grf,joint,2,,")


def test_table3_averages_means_and_half_widths_and_states_the_bias(tmp_path):
    # two datasets: means 0.012 and 0.016, HDIs of half width 0.002 and 0.004
    hdi = [[0.010, 0.014], [0.012, 0.020]]
    a = write_posteriors(
        tmp_path / "a.h5",
        "lay",
        {"r": 0.01, "A_lens": 0.5},
        n=2,
        sky="layered",
        summary=([0.012, 0.016], hdi),
    )
    b = write_posteriors(
        tmp_path / "b.h5",
        "lay0",
        {"r": 0.0, "A_lens": 0.5},
        n=3,
        sky="layered",
        compression="hilc_joint",
    )
    nplots.table3([b, a], tmp_path / "table3.csv")
    lines = (tmp_path / "table3.csv").read_text().splitlines()
    assert lines[0] == "sky,compression,r_true,mean_r,mean_sigma_r,bias_sigma,n"
    # mean r 0.014, mean half width 0.003: bias (0.014 - 0.01) / 0.003 = 1.333 widths
    assert lines[2] == "layered,joint,0.01,0.014,0.003,1.333,2"
    assert lines[1].startswith("layered,hilc_joint,0,") and lines[1].endswith(",3")
    nplots.fixed_foreground([a, b], tmp_path / "fixed.png")
    assert _non_empty(tmp_path / "fixed.png")
    plain = write_posteriors(tmp_path / "plain.h5")
    with pytest.raises(DataError, match="not a fixed-foreground set"):
        nplots.table3([plain], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


# ---------------------------------------------------------------- a wrong product is refused
def _wrong(tmp_path):
    """A valid product of a kind no figure reads."""
    return io.write_product(
        tmp_path / "wrong.h5", "patch_map", {"labels": D(np.zeros(12), "1")}, _prov("patches")
    )


WRONG_COMPSEP = {
    "grid_search": lambda p, w: ([w], {}),
    "patches": lambda p, w: ([w], {}),
    "residual_maps": lambda p, w: ([w], {"sky": p["sky"], "nside": p["nside"]}),
    "residual_spectra": lambda p, w: ([w], {}),
    "metrics": lambda p, w: (p["fits"], {"rlike": [w]}),
    "r_likelihood": lambda p, w: ([w], {}),
    "r_hat_vs_k": lambda p, w: (p["selections"], {"rlike": [w]}),
}


@pytest.mark.parametrize("name", sorted(WRONG_COMPSEP))
def test_compsep_figure_refuses_wrong_kind(name, compsep_products, tmp_path):
    wrong = _wrong(tmp_path)
    inputs, kwargs = WRONG_COMPSEP[name](compsep_products, wrong)
    with pytest.raises(DataError, match=re.escape("wrong.h5")) as err:
        getattr(cplots, name)(inputs, tmp_path / "out.png", **kwargs)
    assert "patch_map" in str(err.value)
    assert not (tmp_path / "out.png").exists()


def test_residual_maps_refuse_a_wrong_sky(compsep_products, tmp_path):
    wrong = _wrong(tmp_path)
    with pytest.raises(DataError, match=re.escape("wrong.h5")):
        cplots.residual_maps(compsep_products["fits"], tmp_path / "o.png", sky=wrong, nside=4)


@pytest.mark.parametrize(
    "name", ["tarp", "corner", "r_vs_sigma_beta", "sigma_r", "predictive", "summary"]
)
def test_npe_figure_refuses_wrong_kind(name, tmp_path):
    wrong = _wrong(tmp_path)
    with pytest.raises(DataError, match=re.escape("wrong.h5")) as err:
        getattr(nplots, name)([wrong], tmp_path / "out.png")
    assert "patch_map" in str(err.value)
    assert not (tmp_path / "out.png").exists()


def test_figures_name_a_missing_file(tmp_path):
    with pytest.raises(DataError, match=re.escape("missing.h5")):
        cplots.grid_search([tmp_path / "missing.h5"], tmp_path / "o.png")
    with pytest.raises(DataError, match=re.escape("missing.h5")):
        nplots.corner([tmp_path / "missing.h5"], tmp_path / "o.png")


# ---------------------------------------------------------------- readability
def test_grid_search_nll_axis_has_no_offset_and_integer_patch_ticks(compsep_products):
    fig = cplots._figure_grid_search([compsep_products["selections"][0]])
    renderer = _drawn(fig)
    panels = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(panels) == 6
    for ax in panels:
        assert ax.yaxis.get_offset_text().get_text() == ""
    nll_panels = [ax for ax in panels if "minimum" in ax.get_ylabel()]
    assert len(nll_panels) == 3
    assert min(nll_panels[0].get_ylim()) <= 0 < max(nll_panels[0].get_ylim()) < 1e3
    for ax, name in zip(panels[3:], COMPSEP_PARAMETERS, strict=True):
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels == [str(k) for k in GRID[name]]
        assert not ax.xaxis.get_minorticklocs().size
        assert min(_tick_gaps(ax, renderer)) > 0
    matplotlib.pyplot.close(fig)


def test_patch_count_ticks_are_thinned_integers():
    counts = list(range(100, 5001, 100))
    ticks = cplots.count_ticks(counts)
    assert len(ticks) <= cplots.MAX_COUNT_TICKS
    assert ticks[0] == 100 and ticks[-1] == 5000
    assert set(ticks) <= set(counts)
    assert cplots.count_ticks([1, 3, 3, 1]) == [1, 3]


def test_r_hat_vs_k_has_integer_patch_ticks(compsep_products):
    fig = cplots._figure_r_hat_vs_k(compsep_products["selections"], rlike=compsep_products["rlike"])
    _drawn(fig)
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(s.isdigit() for s in labels)
    matplotlib.pyplot.close(fig)


def test_r_hat_vs_k_needs_r_hat_per_configuration(tmp_path):
    path = write_grid_selection(tmp_path / "sel.h5", r_hat=False)
    with pytest.raises(DataError, match=re.escape("no r_hat")):
        cplots.r_hat_vs_k([path], tmp_path / "o.png")


def test_predictive_has_y_label_and_separate_x_tick_labels(tmp_path):
    paths = [
        write_observed(tmp_path / "a.h5", chi2_observed=1.3e5, chi2_scale=2000.0),
        write_observed(tmp_path / "b.h5", "sosat_pysm", chi2_observed=14200.0, chi2_scale=4.4),
    ]
    fig = nplots._figure_predictive(paths)
    renderer = _drawn(fig)
    for ax in fig.axes:
        assert ax.get_ylabel()
        gaps = _tick_gaps(ax, renderer)
        font = ax.get_xticklabels()[0].get_fontsize()
        assert min(gaps) >= 0.5 * font, gaps  # at least half a character between labels
    # an observed value far outside the draws keeps their histogram readable
    _, hi = fig.axes[1].get_xlim()
    assert hi < 1000
    assert any("observed" in t.get_text() for t in fig.axes[1].texts)
    matplotlib.pyplot.close(fig)


def test_sigma_r_drops_the_colour_scale_when_the_index_power_is_zero(npe_products):
    fig = nplots._figure_sigma_r(npe_products["isotropic"])
    assert len(fig.axes) == 2  # the panels, no colour bar
    assert "= 0 in every dataset" in fig.get_suptitle()
    matplotlib.pyplot.close(fig)
    fig = nplots._figure_sigma_r(npe_products["anisotropy"])
    assert len(fig.axes) == 3
    bar = fig.axes[-1]
    truth = np.concatenate(
        [nr.read_posteriors(p)[nr.TRUE_SIGMA_BETA] for p in npe_products["anisotropy"]]
    )
    lo, hi = bar.get_ylim()
    assert lo == pytest.approx(truth.min()) and hi == pytest.approx(truth.max())
    matplotlib.pyplot.close(fig)


@pytest.mark.filterwarnings("ignore::matplotlib.MatplotlibDeprecationWarning")  # GetDist ticks
@pytest.mark.parametrize("which", ["isotropic", "observed"])
def test_corner_legend_and_title_sit_in_the_empty_triangle(which, npe_products):
    inputs = npe_products[which][:1] if which == "isotropic" else npe_products["observed"]
    fig = nplots._figure_corner(inputs)
    renderer = _drawn(fig)
    (legend,) = fig.legends
    (title,) = fig.texts
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 21  # the lower triangle of 6 x 6
    boxes = [ax.get_tightbbox(renderer) for ax in shown]
    for artist in (legend, title):
        box = _extent(artist, renderer)
        assert not any(box.overlaps(b) for b in boxes)
        assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
    assert not _extent(legend, renderer).overlaps(_extent(title, renderer))
    assert max(ax.get_position().y1 for ax in shown) > 0.95  # no empty band at the top
    matplotlib.pyplot.close(fig)


def test_residual_map_colour_bar_clears_the_titles(compsep_products):
    p = compsep_products
    fig = cplots._figure_residual_maps(p["fits"], sky=p["sky"], nside=p["nside"])
    renderer = _drawn(fig)
    texts = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(texts) == 6  # 3 methods x Q, U
    bars = [ax for ax in fig.axes if ax.get_xlabel()]
    assert len(bars) == 1
    texts += [bars[0].xaxis.label, *bars[0].get_xticklabels()]
    boxes = [_extent(t, renderer) for t in texts if t.get_text()]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    maps = [ax for ax in fig.axes if ax.get_title()]
    assert all(not _extent(bars[0], renderer).overlaps(ax.get_tightbbox(renderer)) for ax in maps)
    matplotlib.pyplot.close(fig)


def test_r_likelihood_zooms_so_every_curve_is_readable(compsep_products):
    fig = cplots._figure_r_likelihood(compsep_products["rlike"])
    assert len(fig.axes) == 2  # all methods, and the zoom
    for path in compsep_products["rlike"]:
        a = rl.read_r_likelihood(path).attrs
        width = a["r_high"] - a["r_low"]
        # some panel shows the method's 68% interval over at least 5% of its width
        assert any(
            ax.get_xlim()[0] <= a["r_low"]
            and a["r_high"] <= ax.get_xlim()[1]
            and width >= 0.05 * np.ptp(ax.get_xlim())
            for ax in fig.axes
        ), a["method"]
    matplotlib.pyplot.close(fig)


def test_r_likelihood_without_a_biased_method_has_one_panel(compsep_products):
    fig = cplots._figure_r_likelihood(compsep_products["rlike"][:2])
    assert len(fig.axes) == 1
    assert (
        fig.axes[0].get_xlim()[1] < 0.02
    )  # zoomed on the intervals, not the whole r grid up to 0.5
    matplotlib.pyplot.close(fig)


# ---------------------------------------------------------------- readers
def test_grid_selection_reader(tmp_path):
    sel = cp.read_grid_selection(write_grid_selection(tmp_path / "sel.h5"))
    assert sel[cp.CONFIGURATION].shape == (12, 3)
    assert cp.R_HAT in sel.data
    sel = cp.read_grid_selection(write_grid_selection(tmp_path / "no_r.h5", r_hat=False))
    assert cp.R_HAT not in sel.data


def test_grid_selection_reader_checks_best_index_and_units(tmp_path):
    path = write_grid_selection(tmp_path / "sel.h5")
    with h5py.File(path, "a") as f:
        f.attrs["best_index"] = 12
    with pytest.raises(DataError, match=re.escape("best_index 12")):
        cp.read_grid_selection(path)
    path = write_grid_selection(tmp_path / "sel2.h5")
    with h5py.File(path, "a") as f:
        f["cmb_variance"].attrs["units"] = "K"
    with pytest.raises(DataError, match=re.escape("sel2.h5: dataset 'cmb_variance' is in 'K'")):
        cp.read_grid_selection(path)


def test_compsep_fit_reader(tmp_path):
    path = write_compsep_fit(tmp_path / "fit.h5", nside=4, n_real=2)
    fit = cp.read_compsep_fit(path, nside=4)
    assert cp.fit_nside(fit) == 4
    assert fit[cp.CMB_QU].shape == (2, 2, fit[cp.PIXELS].size)
    with pytest.raises(DataError, match=re.escape("fit.h5: dataset 'patches/beta_d' has shape")):
        cp.read_compsep_fit(path, nside=8)


def test_r_likelihood_reader_checks_units_against_the_spectrum(tmp_path):
    master = rl.read_r_likelihood(write_r_likelihood(tmp_path / "m.h5", spectrum="master"))
    assert np.array_equal(rl.as_dl(master, rl.CL_LENSING), master[rl.CL_LENSING])
    path = write_r_likelihood(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        f.attrs["spectrum"] = "master"
    with pytest.raises(DataError, match=r"f\.h5: dataset .* is in 'uK_CMB\^2', expected"):
        rl.read_r_likelihood(path)


def test_npe_readers(npe_products, tmp_path):
    post = nr.read_posteriors(npe_products["isotropic"][0])
    assert post[nr.SAMPLES].shape == (4, 200, len(P))
    assert nr.read_coverage(npe_products["coverage"])[nr.ECP].shape == (len(P) + 1, 21)
    assert nr.read_observed(npe_products["observed"][0])[nr.CHI2_PREDICTIVE].size == 60
    assert nr.read_posteriors_or_observed(npe_products["observed"][0]).kind == "npe_observed"
    with pytest.raises(DataError, match=re.escape("wrong.h5 holds a 'patch_map' product")):
        nr.read_posteriors_or_observed(_wrong(tmp_path))


def test_npe_reader_refuses_other_parameters(tmp_path):
    path = write_posteriors(tmp_path / "p.h5")
    with h5py.File(path, "a") as f:
        f.attrs["parameters"] = list(reversed(P))
    with pytest.raises(DataError, match=re.escape("p.h5: parameters")):
        nr.read_posteriors(path)


def _panels(fig) -> dict:
    """The shown axes of a triangle plot by (row, column), read from their positions."""
    shown = [ax for ax in fig.axes if ax.axison]
    x0 = sorted({round(ax.get_position().x0, 4) for ax in shown})
    y1 = sorted({round(ax.get_position().y1, 4) for ax in shown}, reverse=True)
    return {
        (y1.index(round(ax.get_position().y1, 4)), x0.index(round(ax.get_position().x0, 4))): ax
        for ax in shown
    }


def _truth_lines(ax) -> tuple[list[float], list[float]]:
    """x of the dashed vertical lines (axvline) and y of the dashed horizontal ones."""
    xs, ys = [], []
    for line in ax.get_lines():
        if line.get_linestyle() != "--":
            continue
        x, y = (np.asarray(v, float) for v in line.get_data())
        if x[0] == x[-1] and list(y) == [0.0, 1.0]:
            xs.append(float(x[0]))
        elif y[0] == y[-1] and list(x) == [0.0, 1.0]:
            ys.append(float(y[0]))
        else:
            raise AssertionError(f"a dashed line that is not a truth marker: {x}, {y}")
    return xs, ys


def _density(ax) -> tuple[np.ndarray, np.ndarray]:
    """The 1D density GetDist draws in a diagonal panel (its solid line)."""
    (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    return tuple(np.asarray(v, float) for v in line.get_data())


GAUSS_NAMES = ("r", "A_lens", "gamma_d")
GAUSS_MEAN = np.array([0.05, 0.45, -4.0])
GAUSS_SIGMA = np.array([0.004, 0.1, 0.8])
# gamma_d's true value 8 sigma off: beyond GetDist's own axis range, which must widen
GAUSS_TRUTH = {"r": 0.05, "A_lens": 0.47, "gamma_d": -4.0 + 8 * 0.8}


@pytest.fixture(scope="module")
def gaussian_corner():
    """The GetDist corner of 100,000 draws of a known 3-parameter Gaussian (the scatter
    of the densities' peaks is then ~1.6% of sigma, of the 68% limits ~0.5%)."""
    rng = np.random.default_rng(2025)
    samples = GAUSS_MEAN + GAUSS_SIGMA * rng.standard_normal((100_000, 3))
    fig = nplots._triangle_figure([samples], ["gauss"], GAUSS_NAMES, GAUSS_TRUTH, "known")
    yield fig, samples
    matplotlib.pyplot.close(fig)


def test_getdist_corner_of_a_gaussian_peaks_at_the_means_with_68_limits_at_one_sigma(
    gaussian_corner,
):
    fig, samples = gaussian_corner
    panels = _panels(fig)
    assert sorted(panels) == [(i, j) for i in range(3) for j in range(i + 1)]
    stats = nplots._getdist_samples(samples, GAUSS_NAMES, GAUSS_NAMES).getMargeStats()
    assert list(stats.limits) == [pytest.approx(0.68), pytest.approx(0.95)]
    for k, name in enumerate(GAUSS_NAMES):
        mean, sigma = GAUSS_MEAN[k], GAUSS_SIGMA[k]
        x, density = _density(panels[k, k])  # as drawn
        assert abs(x[np.argmax(density)] - mean) < 0.05 * sigma
        lim = stats.parWithName(name).limits[0]  # 68%
        assert lim.twotail
        assert abs(lim.lower - (mean - sigma)) < 0.03 * sigma
        assert abs(lim.upper - (mean + sigma)) < 0.03 * sigma


def test_getdist_corner_marks_the_true_values_in_every_panel(gaussian_corner):
    fig, _ = gaussian_corner
    truth = [GAUSS_TRUTH[n] for n in GAUSS_NAMES]
    for (i, j), ax in _panels(fig).items():
        xs, ys = _truth_lines(ax)
        assert xs == [pytest.approx(truth[j])]
        assert ys == ([] if i == j else [pytest.approx(truth[i])])
        lo, hi = ax.get_xlim()
        assert lo < truth[j] < hi  # in view, though gamma_d's lies beyond its samples
        if i != j:
            lo, hi = ax.get_ylim()
            assert lo < truth[i] < hi
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["gauss", "true value"]


def test_corner_of_a_fixed_foreground_set_marks_only_the_known_parameters(tmp_path):
    """Only r and A_lens are true values of a fixed-foreground set: of the 21 panels of
    the 6 x 6 lower triangle, the 6 + 5 of their two columns carry truth lines, at the
    set's values; a test set without a fixed foreground marks every panel."""

    def lines(path):
        fig = nplots._figure_corner([path])
        out = {key: _truth_lines(ax) for key, ax in _panels(fig).items()}
        matplotlib.pyplot.close(fig)
        return out

    fixed = write_posteriors(
        tmp_path / "fixed.h5", "lay", {"r": 0.01, "A_lens": 0.5}, sky="layered"
    )
    plain = write_posteriors(tmp_path / "plain.h5", "lay", {"r": 0.01, "A_lens": 0.5})
    marked = lines(fixed)
    assert sum(bool(xs or ys) for xs, ys in marked.values()) == 11
    for (i, j), (xs, ys) in marked.items():
        assert xs == {0: [0.01], 1: [0.5]}.get(j, [])
        assert ys == ([0.5] if i == 1 and j == 0 else [])
    theta = nr.read_posteriors(plain)[nr.THETA][0]
    truth = [theta[P.index(n)] for n in nplots.CORNER]
    for (i, j), (xs, ys) in lines(plain).items():
        assert xs == [pytest.approx(truth[j])]
        assert ys == ([] if i == j else [pytest.approx(truth[i])])


def test_corner_of_observed_skies_marks_no_truth_and_writes_the_png(npe_products, tmp_path):
    fig = nplots._figure_corner(npe_products["observed"])
    assert len(_panels(fig)) == 21
    assert all(_truth_lines(ax) == ([], []) for ax in fig.axes)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["sosat_grf", "sosat_pysm"]  # one sample set per sky, no truth entry
    nplots._save(fig, tmp_path / "corner_observed.png")  # what corner() does
    assert _non_empty(tmp_path / "corner_observed.png")


@pytest.mark.slow
def test_corner_of_observed_simulations_marks_the_cmb_they_were_drawn_with(npe_products, tmp_path):
    """Simulated skies record r and A_lens (npe_observed copies them from the NILC product):
    both are marked, the foreground parameters are not; skies that disagree mark none."""
    paths = []
    for i, src in enumerate(npe_products["observed"]):
        paths.append(tmp_path / f"o{i}.h5")
        shutil.copy(src, paths[-1])
        with h5py.File(paths[-1], "a") as f:
            f.attrs["true_r"], f.attrs["true_A_lens"] = 0.01, 1.0
    fig = nplots._figure_corner(paths)
    panels = _panels(fig)
    truth = {"r": 0.01, "A_lens": 1.0}
    for j, name in enumerate(nplots.CORNER):
        xs, _ = _truth_lines(panels[j, j])
        assert xs == ([pytest.approx(truth[name])] if name in truth else [])
    matplotlib.pyplot.close(fig)
    with h5py.File(paths[-1], "a") as f:
        f.attrs["true_r"] = 0.02
    fig = nplots._figure_corner(paths)
    assert all(_truth_lines(ax) == ([], []) for ax in fig.axes)
    matplotlib.pyplot.close(fig)


def test_corner_bounds_the_densities_at_the_prior_edges_the_product_names(tmp_path):
    """r of a posterior piled up at r = 0: with the prior's bound r >= 0 from the
    product's provenance, GetDist's density starts at 0 at (near) its peak instead of
    spilling below 0 at half height."""
    path = write_posteriors(tmp_path / "p.h5", n=1, n_samples=4000)
    half_normal = np.abs(np.random.default_rng(3).normal(0.0, 0.004, 4000))
    with h5py.File(path, "a") as f:
        f["samples"][0, :, 0] = half_normal
        f.attrs["config"] = json.dumps({"npe": {"prior": "table1"}})
    first = nr.read_posteriors(path)
    corner = [first[nr.SAMPLES][0][:, [P.index(n) for n in nplots.CORNER]]]
    ranges = nplots._prior_ranges(first, list(nplots.CORNER), corner)
    assert ranges["r"] == (0.0, None) and ranges["A_lens"] == (0.0, 10.0)
    fig = nplots._figure_corner([path])
    x, density = _density(_panels(fig)[0, 0])
    assert x[0] == 0.0 and density[0] > 0.8
    matplotlib.pyplot.close(fig)
    with h5py.File(path, "a") as f:  # a product that names no prior: GetDist's own range
        f.attrs["config"] = json.dumps({"test": "npe_posterior"})
    fig = nplots._figure_corner([path])
    x, density = _density(_panels(fig)[0, 0])
    assert x[0] < 0.0 and density[np.searchsorted(x, 0.0)] < 0.7
    matplotlib.pyplot.close(fig)


def test_getdist_prints_and_logs_nothing_into_the_job_log(tmp_path):
    """GetDist prints 'Removed no burn in' and logs warnings on the root logger (here:
    two 100% correlated parameters); a job's log, configured as the command line does,
    gets none of it."""
    script = (
        "import numpy as np\n"
        "from bmodesep import log\n"
        "from bmodesep.plots import npe\n"
        "log.configure()\n"
        "a = np.random.default_rng(0).standard_normal(2000)\n"
        "s = np.stack([a, 2 * a], axis=1)\n"
        "fig = npe._triangle_figure([s], ['x'], ('r', 'A_lens'), {'r': 0.0}, 'title')\n"
        f"npe._save(fig, {str(tmp_path / 'c.png')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    assert _non_empty(tmp_path / "c.png")
