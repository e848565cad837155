"""Component separation benchmarks (issue 3): multi-resolution fits and the K-means grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import register, time_operation
from benchmarks.simulate import simulation_setup

BOUNDS = {"beta_d": (0.5, 5.0), "temperature_d": (5.0, 100.0), "beta_s": (-6.0, -0.5)}
START = {"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0}
REPO_ROOT = Path(__file__).resolve().parents[1]  # where ``import benchmarks`` works


def litebird_problem(nside: int, zone, n_realisations: int, seed: int = 3):
    """A LiteBIRD-like GRF sky (varying beta_d, T_d, beta_s) restricted to ``zone``."""
    from bmodesep.core.compsep import fitting, gridsearch
    from bmodesep.core.compsep import likelihood as compsep
    from bmodesep.core.simulate.instrument import simulate_noise, white_noise_sigma_per_pixel
    from bmodesep.core.simulate.sky import foreground_maps

    setup = simulation_setup("litebird", nside, {"galactic_envelope": {"amplitude": 10.0}})
    inst, lmax = setup.instrument, setup.lmax
    sky = setup.draw(nside)
    pix = np.flatnonzero(zone)
    fg = foreground_maps(sky, inst.frequencies_ghz)[:, :, pix]
    sigma = white_noise_sigma_per_pixel(inst, nside)
    return gridsearch.Problem(
        model=compsep.SpectralModel(inst.frequencies_ghz),
        signal=fg + sky.cmb_qu[None][:, :, pix],
        foreground=fg,
        n_realisations=n_realisations,
        ninv=1.0 / sigma**2,
        start=START,
        bounds=BOUNDS,
        options=fitting.FitOptions(),
        noise=gridsearch.memoised_noise(
            lambda i: simulate_noise(inst, nside, lmax, seed, i).qu[0][:, :, pix], n_realisations
        ),
    )


def multires_setup(n_realisations: int):
    """nside 64, 50% mask (|z| > 1/2), beta_d / T_d / beta_s on nside 8 / 4 / 2 superpixels.

    Patch maps are defined on the full sky (768 + 192 + 48 = 1008 parameters); those of
    patches touching no unmasked pixel carry no data (zero gradient), as in a real run.
    Returns the zone, the cell layout and the ``gridsearch.Problem``.
    """
    import healpy as hp

    from bmodesep.core.compsep import clustering
    from bmodesep.core.compsep import likelihood as compsep

    nside = 64
    zone = np.abs(hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]) > 0.5
    patches = {
        p: clustering.multires_patches(zone, n)
        for p, n in zip(compsep.PARAMETERS, (8, 4, 2), strict=True)
    }
    layout = compsep.cell_layout(patches, zone)
    full_sky = (12 * 8**2, 12 * 4**2, 12 * 2**2)
    layout = compsep.pad_layout(layout, layout.n_cells, full_sky)
    return zone, layout, litebird_problem(nside, zone, n_realisations)


def multires_hard_setup():
    """The multi-resolution problem on an independent sky whose dust is faint over part of
    the mask: D_l^BB(dust) = 1 uK^2 at 353 GHz, l = 80, times a Galactic envelope of 10, so
    that high-latitude T_d patches are weakly constrained and several run to the 100 K
    bound; L-BFGS needs > 2,000 iterations there (``multires_setup`` needs ~200)."""
    import healpy as hp

    from bmodesep.core.compsep import clustering, fitting, gridsearch
    from bmodesep.core.compsep import likelihood as compsep
    from bmodesep.core.simulate.instrument import simulate_noise, white_noise_sigma_per_pixel
    from bmodesep.core.simulate.sky import foreground_maps

    nside = 64
    zone = np.abs(hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]) > 0.5
    faint_dust = {
        "amplitude_uk2": 1.0,
        "beta": {"mean": 1.54, "amplitude": 0.3},
        "temperature_k": {"mean": 20.0, "amplitude": 60.0},
    }
    setup = simulation_setup(
        "litebird",
        nside,
        {"seed": 11, "dust": faint_dust, "galactic_envelope": {"amplitude": 10.0, "scale": 0.3}},
    )
    inst, lmax = setup.instrument, setup.lmax
    sky = setup.draw(nside)
    pix = np.flatnonzero(zone)
    fg = foreground_maps(sky, inst.frequencies_ghz)[:, :, pix]
    problem = gridsearch.Problem(
        model=compsep.SpectralModel(inst.frequencies_ghz),
        signal=fg + sky.cmb_qu[None][:, :, pix],
        foreground=fg,
        n_realisations=1,
        ninv=1.0 / white_noise_sigma_per_pixel(inst, nside) ** 2,
        start=START,
        bounds=BOUNDS,
        options=fitting.FitOptions(),
        noise=lambda i: simulate_noise(inst, nside, lmax, 3, i).qu[0][:, :, pix],
    )
    patches = {
        p: clustering.multires_patches(zone, n)
        for p, n in zip(compsep.PARAMETERS, (8, 4, 2), strict=True)
    }
    layout = compsep.cell_layout(patches, zone)
    layout = compsep.pad_layout(layout, layout.n_cells, (12 * 8**2, 12 * 4**2, 12 * 2**2))
    return zone, layout, problem


def fit_once(layout, problem, data, options=None):
    """One fit of ``data``, waited for (JAX dispatches asynchronously)."""
    from bmodesep.core.compsep import gridsearch

    res = gridsearch.fit_data(layout, problem, data, options)
    res.nll.block_until_ready()
    return res


def _methods_fields(name, layout, problem, data, repeats):
    """One converged fit of ``data`` timed with each method (Newton, the default, and the
    L-BFGS baseline, in this process), and a 20,000-iteration L-BFGS reference."""
    from bmodesep.core.compsep import fitting

    out = {"name": name, "parameters": layout.n_params}
    long = fit_once(
        layout, problem, data, fitting.FitOptions(method="lbfgs", rtol=0.0, max_iterations=20000)
    )
    for method in ("newton", "lbfgs"):
        options = fitting.FitOptions(method=method, max_iterations=5000)
        res = fit_once(layout, problem, data, options)  # compile
        timing = time_operation(
            lambda o=options: fit_once(layout, problem, data, o), repeats, warmup=0
        )
        out |= {
            f"{method}_median_s": timing.median_s,
            f"{method}_cpu_s": timing.median_cpu_s,
            f"{method}_iterations": int(res.iterations),
            f"{method}_converged": bool(res.converged),
            f"{method}_at_bound": int(np.asarray(res.at_bound).sum()),
            f"{method}_nll_gap": float(res.nll - long.nll),
        }
    out |= {
        "median_s": out["newton_median_s"],
        "cpu_s": out["newton_cpu_s"],
        "speedup_cpu_vs_lbfgs": out["lbfgs_cpu_s"] / out["newton_cpu_s"],
        "long_lbfgs_iterations": int(long.iterations),
    }
    return out


@register("compsep-multires")
def bench_compsep_multires(args):
    """One converged fit: nside 64, 15 bands, 50% mask, ~1,000 multi-resolution parameters."""
    _, layout, problem = multires_setup(1)
    data = problem.signal + problem.noise(0)
    out = _methods_fields("compsep-multires", layout, problem, data, args.repeats)
    return out | {
        "parameters_touching_mask": int(np.unique(layout.cell_params).size),
        "cells": layout.n_cells,
        "note": "from the configured start (cold); statistics of the data included",
    }


@register("compsep-multires-hard")
def bench_compsep_multires_hard(args):
    """One converged fit of the hard multi-resolution problem: Newton, and L-BFGS as baseline."""
    _, layout, problem = multires_hard_setup()
    data = problem.signal + problem.noise(0)
    return _methods_fields("compsep-multires-hard", layout, problem, data, args.repeats)


COLD_START_SCRIPT = """
import sys, time
t_import, c_import = time.perf_counter(), time.process_time()
from bmodesep import jaxcache
jaxcache.enable(sys.argv[1])
import jax, optax
from benchmarks import compsep as bench
from bmodesep.core.compsep import fitting, gridsearch, likelihood
t_import, c_import = time.perf_counter() - t_import, time.process_time() - c_import
zone, layout, problem = bench.multires_setup(1)
data = problem.signal + problem.noise(0)
t, c = time.perf_counter(), time.process_time()
res = bench.fit_once(layout, problem, data)
t, c = time.perf_counter() - t, time.process_time() - c
print("COLD", t_import, t, c_import + c, int(res.iterations))
"""


def cold_start(cache: str = "off") -> dict[str, float]:
    """Wall time of import + compile + first fit in a fresh process (data simulation
    excluded), with the compilation cache folder ``cache`` (``off``: none).

    The child runs in the repository root (so that ``import benchmarks`` finds this
    package) with this process's environment, thread settings included.
    """
    out = subprocess.run(
        [sys.executable, "-c", COLD_START_SCRIPT, cache],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("COLD")]
    if not line:
        raise RuntimeError(f"cold-start child failed: {out.stderr[-2000:]}")
    _, t_import, t_fit, cpu, _ = line[0].split()
    return {
        "cold_import_s": float(t_import),
        "cold_compile_and_fit_s": float(t_fit),
        "cold_start_s": float(t_import) + float(t_fit),
        "cold_start_cpu_s": float(cpu),
    }


@register("compsep-cold")
def bench_compsep_cold(args):
    """A fresh process with a warm compilation cache: import + one multires fit (wall)."""
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        first = cold_start(cache)  # fills the cache
        runs = [cold_start(cache) for _ in range(max(1, args.repeats))]
        size_mb = sum(f.stat().st_size for f in Path(cache).rglob("*")) / 1e6
    no_cache = cold_start("off")
    wall = [r["cold_start_s"] for r in runs]
    return {
        "name": "compsep-cold",
        "median_s": statistics.median(wall),
        "cpu_s": statistics.median(r["cold_start_cpu_s"] for r in runs),
        "runs_s": wall,
        "import_s": statistics.median(r["cold_import_s"] for r in runs),
        "compile_and_fit_s": statistics.median(r["cold_compile_and_fit_s"] for r in runs),
        "first_run_filling_cache_s": first["cold_start_s"],
        "without_cache_s": no_cache["cold_start_s"],
        "cache_mb": size_mb,
        "note": "wall of the child's import + first fit; its data simulation is excluded",
    }


def _evaluate_methods(layout, problem, repeats, methods=("newton", "lbfgs")):
    """Time ``evaluate_configuration`` (all realisations + the noiseless fit, CMB variance)
    with each method; noise is drawn once beforehand, as a grid-search job keeps it for all
    its configurations (``gridsearch.memoised_noise``)."""
    from bmodesep.core.compsep import fitting, gridsearch

    for i in range(problem.n_realisations):
        problem.noise(i)
    out, results = {}, {}
    for method in methods:
        p = problem._replace(options=fitting.FitOptions(method=method))
        gridsearch.evaluate_configuration(layout, p._replace(n_realisations=2))  # compile
        runs: list = []
        timing = time_operation(
            lambda p=p, runs=runs: runs.append(gridsearch.evaluate_configuration(layout, p)),
            max(1, min(repeats, 3)),
            warmup=0,
        )
        res = results[method] = runs[-1]
        out |= {
            f"{method}_s": timing.median_s,
            f"{method}_cpu_s": timing.median_cpu_s,
            f"{method}_runs_s": timing.wall_s,
            f"{method}_converged_fraction": float(res.converged.mean()),
            f"{method}_iterations_median": float(np.median(res.iterations)),
            f"{method}_iterations_max": int(res.iterations.max()),
            f"{method}_cmb_variance_uk2": res.cmb_variance,
        }
    if "lbfgs" in results:
        out["max_nll_difference_newton_minus_lbfgs"] = float(
            (results["newton"].nll - results["lbfgs"].nll).max()
        )
        out["speedup_vs_lbfgs"] = out["lbfgs_s"] / out["newton_s"]
    return out


@register("compsep-multires-100")
def bench_compsep_multires_100(args):
    """The multires configuration on 100 realisations + the noiseless fit, as the grid does."""
    _, layout, problem = multires_setup(100)
    t = time_operation(lambda: problem.noise(0), 1, warmup=0)  # before it is kept
    out = _evaluate_methods(layout, problem, args.repeats)
    return {
        "name": "compsep-multires-100",
        "median_s": out["newton_s"],
        "cpu_s": out["newton_cpu_s"],
        "realisations": 100,
        "parameters": layout.n_params,
        "noise_draw_s_per_realisation": t.median_s,
    } | out


@register("compsep-kmeans")
def bench_compsep_kmeans(args):
    """Fits/s of K-means configurations 100/20/20 (10% zone) and 3,000/40/40 (20% zone)."""
    import healpy as hp

    from bmodesep.core.compsep import clustering
    from bmodesep.core.compsep import likelihood as compsep

    nside = 64
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    kmeans_s = {}
    for k in (20, 100, 500, 3000):
        clustering.kmeans_patches(z > 0.6, k, 0)  # compile
        t = time_operation(lambda k=k: clustering.kmeans_patches(z > 0.6, k, 0), 3, warmup=0)
        kmeans_s[str(k)] = t.median_s

    def configuration(zone, counts):
        patches = {
            param: clustering.kmeans_patches(zone, k, 0)
            for param, k in zip(compsep.PARAMETERS, counts, strict=True)
        }
        return compsep.cell_layout(patches, zone)

    zone = z > 0.8  # 10% of the sky: one half of a GAL020-like mask
    layout = configuration(zone, (100, 20, 20))
    problem = litebird_problem(nside, zone, 10)
    out = _evaluate_methods(layout, problem, args.repeats)
    fits = problem.n_realisations + 1  # realisations + the foreground-only fit
    big_zone = z > 0.6  # 20% of the sky
    big = configuration(big_zone, (3000, 40, 40))
    big_out = _evaluate_methods(big, litebird_problem(nside, big_zone, 10), 1, ("newton",))
    rate = fits / out["newton_s"]
    rate_big = fits / big_out["newton_s"]
    return {
        "name": "compsep-kmeans",
        "median_s": out["newton_s"] / fits,
        "cpu_s": out["newton_cpu_s"] / fits,
        "fits_per_s": rate,
        "fits_per_s_lbfgs": fits / out["lbfgs_s"],
        "zone_pixels": int(zone.sum()),
        "cells": layout.n_cells,
        "parameters": layout.n_params,
        "large_zone_pixels": int(big_zone.sum()),
        "large_cells": big.n_cells,
        "large_parameters": big.n_params,
        "large_fits_per_s": rate_big,
        "large_converged_fraction": big_out["newton_converged_fraction"],
        "large_iterations_median": big_out["newton_iterations_median"],
        "kmeans_s_per_K_20pct_zone": kmeans_s,
        "paper_fits": 1_920_000,
        "paper_grid_hours_at_this_rate": 1_920_000 / rate / 3600,
        "paper_grid_hours_at_large_rate": 1_920_000 / rate_big / 3600,
    } | out


def paper1_cpu_zone_problem(sky: str = "grf_hard", n_realisations: int = 20):
    """One zone of ``config/paper1_cpu.yaml``: its sky (``grf_hard`` by default, the one
    whose selection sits at the grid's edge), LiteBIRD-like noise, nside 64, the
    highest-latitude 10% of the sky (a GAL020 half: the faintest foregrounds), and its
    6 x 4 x 4 K-means grid.  Returns the zone, the grid's points and the problem."""
    import healpy as hp
    import yaml

    from bmodesep.core.compsep import fitting, gridsearch
    from bmodesep.core.compsep import likelihood as compsep
    from bmodesep.core.simulate.instrument import simulate_noise, white_noise_sigma_per_pixel
    from bmodesep.core.simulate.sky import foreground_maps

    config = yaml.safe_load((REPO_ROOT / "config" / "paper1_cpu.yaml").read_text())
    spec = {k: v for k, v in config["skies"][sky].items() if k != "kind"}
    nside = 64
    setup = simulation_setup("litebird", nside, spec)
    inst, lmax = setup.instrument, setup.lmax
    zone = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2] > 0.8
    drawn = setup.draw(nside)
    pix = np.flatnonzero(zone)
    fg = foreground_maps(drawn, inst.frequencies_ghz)[:, :, pix]
    problem = gridsearch.Problem(
        model=compsep.SpectralModel(inst.frequencies_ghz),
        signal=fg + drawn.cmb_qu[None][:, :, pix],
        foreground=fg,
        n_realisations=n_realisations,
        ninv=1.0 / white_noise_sigma_per_pixel(inst, nside) ** 2,
        start=START,
        bounds=BOUNDS,
        options=fitting.FitOptions(),
        noise=gridsearch.memoised_noise(
            lambda i: simulate_noise(inst, nside, lmax, 4002, i).qu[0][:, :, pix], n_realisations
        ),
    )
    return zone, gridsearch.grid_points(config["compsep"]["grid"]), problem


@register("compsep-screened")
def bench_compsep_screened(args):
    """The exhaustive and the screened grid search on one zone of paper1_cpu (96 x 20)."""
    import statistics

    from bmodesep.core.compsep import clustering, gridsearch, screening, selection
    from bmodesep.core.compsep import likelihood as compsep

    zone, points, problem = paper1_cpu_zone_problem()
    for i in range(problem.n_realisations):  # drawn once, kept, as a grid job does
        problem.noise(i)
    maps = {
        k: clustering.kmeans_patches(zone, k, 0) for k in sorted({k for p in points for k in p})
    }
    layouts = gridsearch.pad_layouts(
        [
            compsep.cell_layout(
                dict(zip(compsep.PARAMETERS, (maps[k] for k in p), strict=True)), zone
            )
            for p in points
        ]
    )
    from bmodesep.config import validate_config

    rule = selection.Rule()  # the paper's sec. 6 rule, the default
    margin = validate_config({})["compsep"]["grid"]["margin"]  # the default margin

    def criteria(rows, variance, nll):
        return selection.Criteria(
            np.array([getattr(r, variance) for r in rows]),
            np.array([r.systematic_residual for r in rows]),
            np.array([nll(r) for r in rows]),
        )

    def exhaustive():
        return [gridsearch.evaluate_configuration(lay, problem) for lay in layouts]

    def screened():
        predicted = [screening.predict_configuration(lay, problem) for lay in layouts]
        pc = criteria(predicted, "cmb_variance", lambda p: p.nll_mean)
        free = np.array([p.free_parameters for p in predicted])
        keep = np.flatnonzero(screening.candidates(pc, free, rule, margin).candidates)
        second = gridsearch.pad_layouts([layouts[j] for j in keep])
        measured = [gridsearch.evaluate_configuration(lay, problem) for lay in second]
        return predicted, keep, measured

    repeats = max(1, min(args.repeats, 3))
    exhaustive()  # compile
    screened()
    ex_runs, sc_runs = [], []
    ex_time = time_operation(lambda: ex_runs.append(exhaustive()), repeats, warmup=0)
    sc_time = time_operation(lambda: sc_runs.append(screened()), repeats, warmup=0)
    full, (predicted, keep, measured) = ex_runs[-1], sc_runs[-1]
    fc = criteria(full, "cmb_variance", lambda r: r.nll.mean())
    pc = criteria(predicted, "cmb_variance", lambda p: p.nll_mean)
    free = np.array([p.free_parameters for p in predicted])
    same = {}
    for name in ("threshold", "variance", "variance_plus_systematic", "nll"):
        r = rule._replace(name=name)
        kept = np.flatnonzero(screening.candidates(pc, free, r, margin).candidates)
        sub = fc.take(kept)
        same[name] = bool(kept[selection.select(sub, r)[0]] == selection.select(fc, r)[0])
    mc = criteria(measured, "cmb_variance", lambda r: r.nll.mean())
    best_screened = int(keep[selection.select(mc, rule)[0]])
    best_exhaustive = selection.select(fc, rule)[0]
    ratio = pc.cmb_variance / fc.cmb_variance
    n_real = problem.n_realisations
    return {
        "name": "compsep-screened",
        "median_s": sc_time.median_s,
        "cpu_s": sc_time.median_cpu_s,
        "runs_s": sc_time.wall_s,
        "exhaustive_s": ex_time.median_s,
        "exhaustive_cpu_s": ex_time.median_cpu_s,
        "speedup_vs_exhaustive": ex_time.median_s / sc_time.median_s,
        "configurations": len(points),
        "realisations": n_real,
        "candidates": int(keep.size),
        "fits_fraction": screening.fits_fraction(len(points), keep.size, n_real),
        "fits_avoided": len(points) * (n_real + 1) - (len(points) + keep.size * (n_real + 1)),
        "same_selection": bool(best_screened == best_exhaustive),
        "selected": list(points[best_exhaustive]),
        "same_selection_by_rule": same,
        "margin": margin,
        "variance_ratio_min": float(ratio.min()),
        "variance_ratio_median": float(statistics.median(ratio)),
        "variance_ratio_max": float(ratio.max()),
        "note": "one zone (10% of the sky, highest latitudes) of paper1_cpu's grf_hard sky, "
        "nside 64; rule threshold 1e-2; r_aware needs spectra (validated in the workflow)",
    }
