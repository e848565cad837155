"""Benchmarks: ``python -m bmodesep.bench <name> [--repeats N]``; ``--list`` names them.

Each benchmark prepares its inputs (excluded from timing), runs the operation once to
warm up (imports, caches, JIT compilation), then times ``repeats`` runs.  The last line
printed is one JSON object with at least ``name``, ``median_s`` (median wall seconds),
``cpu_s`` (median CPU seconds of one run), ``peak_rss_mb``; where a benchmark has a
baseline (the same work done another way), it is timed in the same process and the
ratio reported, since these machines are shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def register(name: str):
    def deco(fn):
        BENCHMARKS[name] = fn
        return fn

    return deco


@dataclass
class Timing:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)


def time_operation(op: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    for _ in range(warmup):
        op()
    t = Timing()
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        op()
        t.wall_s.append(time.perf_counter() - w0)
        t.cpu_s.append(time.process_time() - c0)
    return t


def timing_fields(timing: Timing) -> dict[str, Any]:
    """The timing entries every benchmark reports."""
    return {"median_s": timing.median_s, "cpu_s": timing.median_cpu_s, "runs_s": timing.wall_s}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict[str, Any]:
    return {
        "machine": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


# ---------------------------------------------------------------- healpy baseline
@contextmanager
def healpy_transforms():
    """Route bmodesep.harmonics' transforms through healpy (the common reference code)."""
    import healpy as hp

    from bmodesep import harmonics

    saved = harmonics.synthesis, harmonics.analysis

    def synthesis(alm, nside, lmax, spin, nthreads=1):
        alm = np.atleast_2d(alm)
        if spin == 0:
            return hp.alm2map(alm[0], nside, lmax=lmax)[None]
        return np.asarray(hp.alm2map_spin(list(alm), nside, 2, lmax))

    def analysis(maps, nside, lmax, spin, n_iter=3, nthreads=1):
        maps = np.atleast_2d(maps)
        if spin == 0:
            return hp.map2alm(maps[0], lmax=lmax, iter=n_iter)[None]
        return hp.map2alm(np.stack([np.zeros_like(maps[0]), *maps]), lmax=lmax, iter=n_iter)[1:]

    harmonics.synthesis, harmonics.analysis = synthesis, analysis
    try:
        yield
    finally:
        harmonics.synthesis, harmonics.analysis = saved


# ---------------------------------------------------------------- simulation benchmarks
def _simulation_setup(instrument_name: str, nside: int, sky_overrides: dict):
    from bmodesep.cmb import compute_camb_spectra
    from bmodesep.config import validate_config
    from bmodesep.instrument import resolve_instrument

    sky = {
        "kind": "grf",
        "seed": 1,
        "dust": {
            "beta": {"mean": 1.54, "amplitude": 0.3},
            "temperature_k": {"mean": 20.0, "amplitude": 60.0},
        },
        "synchrotron": {"beta": {"mean": -3.0, "amplitude": 0.25}},
        "rho_ds": 0.1,
    }
    sky.update(sky_overrides)
    config = validate_config(
        {
            "skies": {"sky": sky},
            "instruments": {"inst": instrument_name},
            "simulations": {"sim": {"sky": "sky", "instrument": "inst", "nside": nside}},
        }
    )
    lmax = 3 * nside - 1
    spectra = compute_camb_spectra(config["cmb"]["cosmology"], lmax)  # cached for the runs
    return config, config["skies"]["sky"], resolve_instrument(config, "inst"), spectra, lmax


def _simulation_benchmark(name, instrument_name, nside, sky_overrides, args):
    from bmodesep.config import simulation_analysis_iterations
    from bmodesep.instrument import observe_signal, simulate_noise
    from bmodesep.sky import foreground_maps, simulate_parametric_sky

    config, sky_cfg, inst, spectra, lmax = _simulation_setup(instrument_name, nside, sky_overrides)
    n_iter = simulation_analysis_iterations(config["simulations"]["sim"])

    def op():
        sky = simulate_parametric_sky(sky_cfg, config["cmb"], spectra, nside, lmax)
        fg = foreground_maps(sky, inst.frequencies_ghz)
        observe_signal(inst, sky.cmb_alm, sky.cmb_qu, fg, nside, lmax, n_iter)
        simulate_noise(inst, nside, lmax, seed=7, realisation=0)

    timing = time_operation(op, args.repeats)
    out = {
        "name": name,
        **timing_fields(timing),
        "nside": nside,
        "bands": inst.n_freq,
        "splits": inst.splits,
        "analysis_iterations": n_iter,
    }
    if not args.no_baseline:
        with healpy_transforms():
            base = time_operation(op, args.repeats)
        out |= {
            "baseline": "same simulation through healpy transforms",
            "baseline_median_s": base.median_s,
            "baseline_cpu_s": base.median_cpu_s,
            "speedup_vs_baseline": base.median_s / timing.median_s,
        }
    return out


@register("simulate-litebird")
def bench_simulate_litebird(args):
    """nside 64, 15 LiteBIRD bands, Q/U: CMB + GRF foregrounds + white noise, one realisation."""
    return _simulation_benchmark("simulate-litebird", "litebird", 64, {}, args)


@register("simulate-sosat")
def bench_simulate_sosat(args):
    """nside 128, 8 SO-SAT bands x 2 splits: beams, high-pass, 1/f noise, B maps."""
    return _simulation_benchmark("simulate-sosat", "sosat", 128, {"b_modes_only": True}, args)


# ---------------------------------------------------------------- component separation
BOUNDS = {"beta_d": (0.5, 5.0), "temperature_d": (5.0, 100.0), "beta_s": (-6.0, -0.5)}
START = {"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0}


def _litebird_problem(nside: int, zone, n_realisations: int, seed: int = 3):
    """A LiteBIRD-like GRF sky (varying beta_d, T_d, beta_s) restricted to ``zone``."""
    from bmodesep import compsep, fitting, gridsearch
    from bmodesep.instrument import simulate_noise, white_noise_sigma_per_pixel
    from bmodesep.sky import foreground_maps, simulate_parametric_sky

    config, sky_cfg, inst, spectra, lmax = _simulation_setup(
        "litebird", nside, {"galactic_envelope": {"amplitude": 10.0}}
    )
    sky = simulate_parametric_sky(sky_cfg, config["cmb"], spectra, nside, lmax)
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
        noise=lambda i: simulate_noise(inst, nside, lmax, seed, i).qu[0][:, :, pix],
    )


def _multires_setup(n_realisations: int):
    """nside 64, 50% mask (|z| > 1/2), beta_d / T_d / beta_s on nside 8 / 4 / 2 superpixels.

    Patch maps are defined on the full sky (768 + 192 + 48 = 1008 parameters); those of
    patches touching no unmasked pixel carry no data (zero gradient), as in a real run.
    """
    import healpy as hp

    from bmodesep import clustering, compsep

    nside = 64
    zone = np.abs(hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]) > 0.5
    patches = {
        p: clustering.multires_patches(zone, n)
        for p, n in zip(compsep.PARAMETERS, (8, 4, 2), strict=True)
    }
    layout = compsep.cell_layout(patches, zone)
    full_sky = (12 * 8**2, 12 * 4**2, 12 * 2**2)
    layout = compsep.pad_layout(layout, layout.n_cells, full_sky)
    return zone, layout, _litebird_problem(nside, zone, n_realisations)


def _fit_once(layout, problem, data, options=None):
    import jax.numpy as jnp

    from bmodesep import gridsearch

    stats = gridsearch._compiled_statistics(layout.n_cells)
    x0, lower, upper = gridsearch.parameter_vectors(layout, problem.start, problem.bounds)
    roots = stats(jnp.asarray(data), jnp.asarray(layout.cell_of_pixel))
    res = gridsearch.fit_cells(
        problem.model, options or problem.options, roots, layout, problem.ninv, x0, lower, upper
    )
    res.nll.block_until_ready()
    return res


@register("compsep-multires")
def bench_compsep_multires(args):
    """One converged fit: nside 64, 15 bands, 50% mask, ~1,000 multi-resolution parameters."""
    from bmodesep import fitting

    _, layout, problem = _multires_setup(1)
    data = problem.signal + problem.noise(0)
    res = _fit_once(layout, problem, data)
    timing = time_operation(lambda: _fit_once(layout, problem, data), args.repeats, warmup=0)
    long = _fit_once(layout, problem, data, fitting.FitOptions(rtol=0.0, max_iterations=20000))
    out = {
        "name": "compsep-multires",
        "median_s": timing.median_s,
        "cpu_s": timing.median_cpu_s,
        "runs_s": timing.wall_s,
        "parameters": layout.n_params,
        "parameters_touching_mask": int(np.unique(layout.cell_params).size),
        "cells": layout.n_cells,
        "iterations": int(res.iterations),
        "converged": bool(res.converged),
        "nll": float(res.nll),
        "nll_long_run": float(long.nll),
        "long_run_iterations": int(long.iterations),
        "nll_gap": float(res.nll - long.nll),
    }
    out |= _cold_start()
    return out


def _cold_start() -> dict[str, float]:
    """Wall time of import + compile + first fit in a fresh process (data simulation excluded)."""
    import subprocess

    script = """
import time
t_import = time.perf_counter()
import jax, optax
from bmodesep import bench, compsep, fitting, gridsearch
t_import = time.perf_counter() - t_import
zone, layout, problem = bench._multires_setup(1)
data = problem.signal + problem.noise(0)
t = time.perf_counter()
res = bench._fit_once(layout, problem, data)
print("COLD", t_import, time.perf_counter() - t, int(res.iterations))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("COLD")]
    if not line:
        return {"cold_start_error": out.stderr[-500:]}
    _, t_import, t_fit, _ = line[0].split()
    return {
        "cold_import_s": float(t_import),
        "cold_compile_and_fit_s": float(t_fit),
        "cold_start_s": float(t_import) + float(t_fit),
    }


@register("compsep-multires-100")
def bench_compsep_multires_100(args):
    """The compsep-multires fit on 100 noise realisations, including noise and statistics."""
    from bmodesep import gridsearch

    _, layout, problem = _multires_setup(100)
    gridsearch.evaluate_configuration(layout, problem._replace(n_realisations=2))  # compile

    results = []

    def op():
        results.append(gridsearch.evaluate_configuration(layout, problem))

    timing = time_operation(op, max(1, min(args.repeats, 3)), warmup=0)
    res = results[-1]
    return {
        "name": "compsep-multires-100",
        "median_s": timing.median_s,
        "cpu_s": timing.median_cpu_s,
        "runs_s": timing.wall_s,
        "realisations": 100,
        "parameters": layout.n_params,
        "converged_fraction": float(res.converged.mean()),
        "iterations_median": float(np.median(res.iterations)),
        "iterations_max": int(res.iterations.max()),
        "cmb_variance_uk2": res.cmb_variance,
        "note": "loop of compiled single fits (batched fits measured ~10x slower on CPU)",
    }


@register("compsep-kmeans")
def bench_compsep_kmeans(args):
    """Fits/s, K-means (beta_d 100, T_d 20, beta_s 20) in a GAL020-like zone; K-means s per K."""
    import healpy as hp

    from bmodesep import clustering, compsep, gridsearch

    nside = 64
    z = hp.pix2vec(nside, np.arange(hp.nside2npix(nside)))[2]
    zone = z > 0.8  # 10% of the sky: one half of a GAL020-like mask
    kmeans_s = {}
    patches = {}
    for k in (20, 100, 500):
        clustering.kmeans_patches(zone, k, 0)  # compile
        t = time_operation(lambda k=k: clustering.kmeans_patches(zone, k, 0), 3, warmup=0)
        kmeans_s[str(k)] = t.median_s
    for param, k in zip(compsep.PARAMETERS, (100, 20, 20), strict=True):
        patches[param] = clustering.kmeans_patches(zone, k, 0)
    layout = compsep.cell_layout(patches, zone)
    problem = _litebird_problem(nside, zone, 10)
    gridsearch.evaluate_configuration(layout, problem._replace(n_realisations=2))  # compile
    results = []
    timing = time_operation(
        lambda: results.append(gridsearch.evaluate_configuration(layout, problem)),
        max(1, min(args.repeats, 3)),
        warmup=0,
    )
    fits = problem.n_realisations + 1  # realisations + the foreground-only fit
    return {
        "name": "compsep-kmeans",
        "median_s": timing.median_s / fits,
        "cpu_s": timing.median_cpu_s / fits,
        "fits_per_s": fits / timing.median_s,
        "zone_pixels": int(zone.sum()),
        "cells": layout.n_cells,
        "parameters": layout.n_params,
        "kmeans_s_per_K": kmeans_s,
        "converged_fraction": float(results[-1].converged.mean()),
        "paper_fits": 1_920_000,
        "paper_scan_cpu_hours_at_this_rate": 1_920_000 / (fits / timing.median_s) / 3600,
    }


# ---------------------------------------------------------------- NILC
def _nilc_inputs(nside: int):
    """SO-SAT-like B-mode maps of both splits (GRF sky + noise) and the channel beams."""
    from bmodesep.instrument import observe_signal, simulate_noise
    from bmodesep.nilc import channel_beams
    from bmodesep.sky import foreground_maps, simulate_parametric_sky

    config, sky_cfg, inst, spectra, lmax = _simulation_setup("sosat", nside, {"b_modes_only": True})
    sky = simulate_parametric_sky(sky_cfg, config["cmb"], spectra, nside, lmax)
    fg = foreground_maps(sky, inst.frequencies_ghz)
    signal = observe_signal(inst, sky.cmb_alm, sky.cmb_qu, fg, nside, lmax, 0)
    noise = simulate_noise(inst, nside, lmax, seed=7, realisation=0)
    maps = signal.total_b[None] + noise.b  # [split, freq, pix]
    return inst, maps, channel_beams(inst, lmax), lmax


def _nilc_run(inst, maps, beams, nside, lmax, settings, timings=None):
    from bmodesep import ilc

    joint = ilc.Compression("needlet", ilc.COMPONENTS, "all", ilc.Fiducial())
    out = []
    for split_maps in maps:
        t0 = time.perf_counter()
        alm = ilc.b_mode_alm(split_maps, nside, lmax, 3)
        if timings is not None:
            timings["input analysis"] = (
                timings.get("input analysis", 0.0) + time.perf_counter() - t0
            )
        res = ilc.compress(
            alm, beams, inst.frequencies_ghz, joint, nside, lmax, settings=settings, timings=timings
        )
        out.append(res.alm)
    return out


def _nilc_benchmark(name: str, nside: int, args) -> dict[str, Any]:
    from bmodesep import datavector, harmonics, ilc

    inst, maps, beams, lmax = _nilc_inputs(nside)
    fast = ilc.Settings()
    timing = time_operation(lambda: _nilc_run(inst, maps, beams, nside, lmax, fast), args.repeats)
    phases: dict[str, float] = {}
    result = _nilc_run(inst, maps, beams, nside, lmax, fast, phases)
    out = {
        "name": name,
        **timing_fields(timing),
        "nside": nside,
        "lmax": lmax,
        "bands": inst.n_freq,
        "splits": len(maps),
        "needlet_scales": len(fast.needlet_fwhm_arcmin) + 1,
        "components": len(ilc.COMPONENTS),
        "cost_split_s": {k: round(v, 4) for k, v in phases.items()},
    }
    if args.no_baseline:
        return out
    t0, c0 = time.perf_counter(), time.process_time()
    exact = _nilc_run(inst, maps, beams, nside, lmax, ilc.Settings(exact=True))
    exact_wall, exact_cpu = time.perf_counter() - t0, time.process_time() - c0
    rel = [
        float(np.linalg.norm(f[c] - e[c]) / np.linalg.norm(e[c]))
        for f, e in zip(result, exact, strict=True)
        for c in range(len(ilc.COMPONENTS))
    ]
    top = min(lmax, 200)
    trunc = [ilc.resize_alm(a, lmax, top) for a in (*result, *exact)]
    edges = datavector.bin_edges(30, top, 15)  # 11 bins at nside 128, 10 at nside 64
    x_fast = datavector.data_vector(trunc[0], trunc[1], top, edges)
    x_exact = datavector.data_vector(trunc[2], trunc[3], top, edges)
    sigma = datavector.gaussian_sigma(trunc[2], trunc[3], top, edges)
    out |= {
        "baseline": "the exact path of the same method (all analyses iterated, smoothing at "
        "full lmax), one run",
        "baseline_median_s": exact_wall,
        "baseline_cpu_s": exact_cpu,
        "speedup_vs_baseline": exact_wall / timing.median_s,
        "max_rel_rms_component_map": max(rel),
        "max_data_vector_shift_sigma": float(np.max(np.abs(x_fast - x_exact) / sigma)),
        "data_vector_length": int(x_fast.size),
        "alm_size": harmonics.alm_size(lmax),
    }
    return out


@register("nilc")
def bench_nilc(args):
    """Joint 5-component NILC of both SO-SAT splits at nside 128 (4 needlets, 8 bands)."""
    return _nilc_benchmark("nilc", 128, args)


@register("nilc-64")
def bench_nilc_64(args):
    """The same at nside 64."""
    return _nilc_benchmark("nilc-64", 64, args)


# ---------------------------------------------------------------- SBI simulator
@register("npe-sim")
def bench_npe_sim(args):
    """One (theta, x) pair at nside 128: GRF sky, SO-SAT-like data, joint NILC, data vector."""
    from bmodesep import ilc, prior, simulator
    from bmodesep.cmb import compute_camb_spectra
    from bmodesep.config import validate_config
    from bmodesep.instrument import resolve_instrument

    config = validate_config({"instruments": {"sosat": "sosat"}})
    spectra = compute_camb_spectra(config["cmb"]["cosmology"], 383)
    joint = ilc.Compression("needlet", ilc.COMPONENTS, "all", ilc.Fiducial())
    setup = simulator.make_setup(resolve_instrument(config, "sosat"), spectra, 128, joint)
    thetas = prior.prior().sample(args.repeats + 1, np.random.default_rng(0))
    state = {"i": 0}

    def op():
        simulator.simulate(thetas[state["i"]], state["i"], setup)
        state["i"] += 1

    timing = time_operation(op, args.repeats)
    return {
        "name": "npe-sim",
        **timing_fields(timing),
        "nside": 128,
        "lmax": setup.lmax,
        "data_vector_length": setup.data_vector_length,
        "paper_cpu_s_per_pair": 600,
        "speedup_vs_paper": 600 / timing.median_cpu_s,
    }


@register("npe-train")
def bench_npe_train(args):
    """Train the MAF (paper hyperparameters) on 50,000 (theta, x) pairs of 13 x 165 numbers."""
    import torch

    from bmodesep import flows, prior

    n_pairs, n_data = 50_000, 165
    table1 = prior.prior("table1")
    rng = np.random.default_rng(0)
    theta = table1.sample(n_pairs, rng)
    # a fixed smooth non-linear map of the standardised parameters to 165 positive numbers
    # plus noise: the shapes of the real data vector, generated in seconds (50,000 real
    # simulations at nside 128 are 55 CPU-hours: the training cost depends on the shapes)
    u = flows.ParameterTransform.from_prior(table1).forward(theta)
    z = (u - u.mean(0)) / u.std(0)
    mixing = rng.normal(size=(13, n_data)) / np.sqrt(13)
    x = np.logaddexp(0, z @ mixing) + 0.1 * rng.normal(size=(n_pairs, n_data))
    hp = flows.hyperparameters()
    threads = torch.get_num_threads()
    device = flows.training_device(1)  # the GPU where torch sees one, as npe_train does
    runs = []

    def op():
        runs.append(flows.train(theta, x, table1, hp, seed=len(runs), device=device))

    timing = time_operation(op, args.repeats, warmup=0)
    epochs = [r.epochs for r in runs]
    return {
        "name": "npe-train",
        **timing_fields(timing),
        "pairs": n_pairs,
        "data_vector_length": n_data,
        "torch_threads": threads,
        "device": device,
        "epochs": epochs,
        "s_per_epoch": [w / e for w, e in zip(timing.wall_s, epochs, strict=True)],
        "best_validation_loss": [r.best_validation_loss for r in runs],
        "hyperparameters": hp._asdict(),
        "data": "synthetic: softplus of a fixed linear map of the standardised Table 1 theta",
    }


# ---------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bmodesep.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="benchmark name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (default 7)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for name, fn in BENCHMARKS.items():
            print(f"{name:24s} {(fn.__doc__ or '').strip()}")
        return 0
    if args.name not in BENCHMARKS:
        print(
            f"bmodesep.bench: error: unknown benchmark '{args.name}' (known: "
            f"{', '.join(BENCHMARKS)})",
            file=sys.stderr,
        )
        return 2
    if args.repeats < 1:
        print("bmodesep.bench: error: --repeats must be at least 1", file=sys.stderr)
        return 2
    result = BENCHMARKS[args.name](args)
    result |= {"repeats": args.repeats, "peak_rss_mb": peak_rss_mb(), **machine()}
    for key, value in result.items():
        if key != "runs_s":
            print(f"{key:22s} {value:.4g}" if isinstance(value, float) else f"{key:22s} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
