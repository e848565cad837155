"""SBI benchmarks: the forward simulator and the training of the MAF."""

from __future__ import annotations

import numpy as np

from benchmarks.common import register, time_operation, timing_fields


@register("npe-sim")
def bench_npe_sim(args):
    """One (theta, x) pair at nside 128: GRF sky, SO-SAT-like data, joint NILC, data vector."""
    from bmodesep.config import validate_config
    from bmodesep.core.nilc import ilc
    from bmodesep.core.npe import prior, simulator
    from bmodesep.core.simulate.cmb import compute_camb_spectra
    from bmodesep.settings import cosmology, resolve_instrument

    config = validate_config({"instruments": {"sosat": "sosat"}})
    spectra = compute_camb_spectra(cosmology(config["cmb"]), 383)
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


# (name, footprint, compressions, prior): the default pipeline's simulations (full sky,
# Table 1 prior), and the robustness study's (config/paper2_cpu.yaml: the f_sky 0.21
# footprint, the widened prior), each with one and with two compressions
SIMULATOR_VARIANTS = (
    ("full-joint", "full", ("joint",), "table1"),
    ("full-joint-hilc", "full", ("joint", "hilc_joint"), "table1"),
    ("masked-joint", "synthetic", ("joint",), "widened"),
    ("masked-joint-hilc", "synthetic", ("joint", "hilc_joint"), "widened"),
)
PAIRS_PER_RUN = 8


def simulator_setups(nside: int, footprint: str, compressions) -> dict:
    """The forward models the ``npe_chunk`` stage builds for these settings (SO-SAT-like)."""
    from bmodesep.config import validate_config
    from bmodesep.core.simulate.cmb import compute_camb_spectra
    from bmodesep.settings import cosmology, npe_setup
    from bmodesep.stages.npe import npe_footprint

    config = validate_config(
        {
            "instruments": {"sosat": "sosat"},
            "npe": {
                "nside": nside,
                "chunks": 1,
                "compressions": list(compressions),
                "footprint": {"source": footprint},
            },
        }
    )
    spectra = compute_camb_spectra(cosmology(config["cmb"]), 3 * nside - 1)
    mask = npe_footprint(config)
    return {c: npe_setup(config, spectra, c, mask) for c in compressions}


def simulator_benchmark(name: str, nside: int, args) -> dict:
    """CPU seconds per (theta, x) pair of each variant, timed on blocks of pairs."""
    from bmodesep.core.npe import prior, simulator

    per_pair, wall_per_pair, lengths = {}, {}, {}
    for variant, footprint, compressions, prior_name in SIMULATOR_VARIANTS:
        setups = simulator_setups(nside, footprint, compressions)
        n = (args.repeats + 1) * PAIRS_PER_RUN
        thetas = prior.prior(prior_name).sample(n, np.random.default_rng(0))
        state = {"i": 0}

        def op(setups=setups, thetas=thetas, state=state):
            for _ in range(PAIRS_PER_RUN):
                i = state["i"]
                simulator.simulate_compressions(thetas[i], i, setups)
                state["i"] += 1

        timing = time_operation(op, args.repeats)
        per_pair[variant] = timing.median_cpu_s / PAIRS_PER_RUN
        wall_per_pair[variant] = timing.median_s / PAIRS_PER_RUN
        lengths[variant] = sum(s.data_vector_length for s in setups.values())
        if variant == SIMULATOR_VARIANTS[0][0]:
            main = timing
    return {
        "name": name,
        "median_s": main.median_s / PAIRS_PER_RUN,
        "cpu_s": per_pair[SIMULATOR_VARIANTS[0][0]],
        "runs_s": [w / PAIRS_PER_RUN for w in main.wall_s],
        "unit": "seconds per (theta, x) pair; cpu_s: full sky, Table 1 prior, joint NILC",
        "nside": nside,
        "lmax": 3 * nside - 1,
        "pairs_per_run": PAIRS_PER_RUN,
        "cpu_s_per_pair": per_pair,
        "wall_s_per_pair": wall_per_pair,
        "data_vector_length": lengths,
    }


@register("npe-sim-32")
def bench_npe_sim_32(args):
    """CPU-s per (theta, x) pair at nside 32: full sky / masked, one / two compressions."""
    return simulator_benchmark("npe-sim-32", 32, args)


@register("npe-sim-64")
def bench_npe_sim_64(args):
    """CPU-s per (theta, x) pair at nside 64: full sky / masked, one / two compressions."""
    return simulator_benchmark("npe-sim-64", 64, args)


@register("npe-train")
def bench_npe_train(args):
    """Train the MAF (paper hyperparameters) on 50,000 (theta, x) pairs of 13 x 165 numbers."""
    import torch

    from bmodesep.core.npe import flows, prior

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
