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
        "median_s": timing.median_s,
        "cpu_s": timing.median_cpu_s,
        "runs_s": timing.wall_s,
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
