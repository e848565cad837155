"""Needlet ILC benchmarks: the joint 5-component NILC of both SO-SAT splits."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import register, time_operation, timing_fields
from benchmarks.simulate import simulation_setup


def nilc_inputs(nside: int):
    """SO-SAT-like B-mode maps of both splits (GRF sky + noise) and the channel beams."""
    from bmodesep.core.nilc import ilc
    from bmodesep.core.simulate.instrument import observe_signal, simulate_noise
    from bmodesep.core.simulate.sky import foreground_maps

    setup = simulation_setup("sosat", nside, {"b_modes_only": True})
    inst, lmax = setup.instrument, setup.lmax
    sky = setup.draw(nside)
    fg = foreground_maps(sky, inst.frequencies_ghz)
    signal = observe_signal(inst, sky.cmb_alm, sky.cmb_qu, fg, nside, lmax, 0)
    noise = simulate_noise(inst, nside, lmax, seed=7, realisation=0)
    maps = signal.total_b[None] + noise.b  # [split, freq, pix]
    return inst, maps, ilc.channel_beams(inst, lmax), lmax


def nilc_run(inst, maps, beams, nside, lmax, settings, timings=None):
    """The joint compression of each split's B maps; component alm per split."""
    from bmodesep.core.nilc import ilc

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


def nilc_benchmark(name: str, nside: int, args) -> dict[str, Any]:
    from bmodesep.core import harmonics
    from bmodesep.core.nilc import datavector, ilc

    inst, maps, beams, lmax = nilc_inputs(nside)
    fast = ilc.Settings()
    timing = time_operation(lambda: nilc_run(inst, maps, beams, nside, lmax, fast), args.repeats)
    phases: dict[str, float] = {}
    result = nilc_run(inst, maps, beams, nside, lmax, fast, phases)
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
    exact = nilc_run(inst, maps, beams, nside, lmax, ilc.Settings(exact=True))
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
    return nilc_benchmark("nilc", 128, args)


@register("nilc-64")
def bench_nilc_64(args):
    """The same at nside 64."""
    return nilc_benchmark("nilc-64", 64, args)


@register("ilc-kernel")
def bench_ilc_kernel(args):
    """The per-pixel ILC algebra of one needlet scale at nside 128 (8 channels, 5 components)."""
    from bmodesep.core.nilc import ilc

    rng = np.random.default_rng(0)
    n, n_c, npix = 8, 5, 12 * 128**2
    mixing = ilc.component_seds(
        [27.0, 39.0, 93.0, 145.0, 225.0, 280.0, 93.0, 145.0][:n], ilc.COMPONENTS, ilc.Fiducial()
    )
    mixing = mixing + 0.01 * rng.normal(size=mixing.shape)  # two bands at one frequency
    root = rng.normal(size=(npix, n, n))
    cov = np.einsum("pik,pjk->ijp", root, root) + 0.1 * np.eye(n)[..., None]
    data = rng.normal(size=(n, npix))
    rows, cols = np.triu_indices(n)
    pairs = np.ascontiguousarray(cov[rows, cols])
    timing = time_operation(lambda: ilc.apply_pairs(pairs, mixing, data), args.repeats)
    out = {
        "name": "ilc-kernel",
        **timing_fields(timing),
        "pixels": npix,
        "channels": n,
        "components": n_c,
        "pixel_block": ilc.PIXEL_BLOCK,
    }
    if args.no_baseline:
        return out

    def numpy_solve():  # s = (A^T C^-1 A)^-1 A^T C^-1 d with numpy's batched solves
        c = np.moveaxis(cov, -1, 0)  # [pixel, f, f]
        rhs = np.concatenate([np.broadcast_to(mixing, (npix, n, n_c)), data.T[..., None]], -1)
        sol = np.linalg.solve(c, rhs)  # C^-1 [A d]
        gram = np.einsum("fc,pfe->pce", mixing, sol[..., :n_c])
        v = np.einsum("fc,pf->pc", mixing, sol[..., n_c])
        return np.linalg.solve(gram, v[..., None])[..., 0].T

    t0, c0 = time.perf_counter(), time.process_time()
    reference = numpy_solve()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    fast = ilc.apply_pairs(pairs, mixing, data)
    return out | {
        "baseline": "numpy batched linalg.solve of the same algebra, one run",
        "baseline_median_s": wall,
        "baseline_cpu_s": cpu,
        "speedup_vs_baseline": wall / timing.median_s,
        "max_rel_difference": float(np.max(np.abs(fast - reference)) / np.max(np.abs(reference))),
    }
