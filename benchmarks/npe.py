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
