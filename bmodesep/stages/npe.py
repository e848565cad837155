"""Simulation-based inference: simulations, training, posteriors, coverage (``npe.smk``).


    bmodesep npe npe_chunk     --config C --set S --chunk I --spectra CAMB --output F.h5
    bmodesep npe npe_train     --config C --compression K --chunks F... --output E.h5
    bmodesep npe npe_tune      --config C --compression K --chunks F... --output T.h5
    bmodesep npe npe_posterior --config C --estimator E.h5 --chunks F... --output P.h5
    bmodesep npe npe_coverage  --config C --posteriors P.h5 --output V.h5
    bmodesep npe npe_yardstick --config C --compression K --chunks F... --coverage F...
                               --output Y.csv
    bmodesep npe npe_observed  --config C --estimator E.h5 --nilc N.h5 --spectra S.h5
                               --simulation SIM --output O.h5

``npe_chunk`` simulates one chunk of a simulation set (``train``: prior draws for
training; ``coverage``: held-out prior draws for TARP; each of ``npe.test_sets``: a prior
with some parameters fixed).  Chunk I of set S draws its parameter vectors with the stream
``("npe-theta:S", I)`` of ``npe.seed`` and simulates each with its own seed
(:mod:`bmodesep.core.npe.sets`), so any chunk can be regenerated alone; every
``CHECKPOINT_EVERY`` simulations are checkpointed, so a killed chunk resumes at its last
full block.  Each simulated sky and its noise go through every one of
``npe.compressions`` (``x/<compression>``).

``npe_train`` fits the flow (:mod:`bmodesep.core.npe.flows`) to the training chunks of one
compression and saves its weights with the hyperparameters that rebuild it (from
``npe.hyperparameters`` or, with ``--tuning``, the best trial of ``npe_tune``).
``npe_posterior`` draws ``npe.posterior_samples`` for every data vector of a simulation set
and summarises r, A_lens and the spectral-index field widths (eq. 25).  ``npe_coverage``
runs TARP on the posteriors of the held-out ``coverage`` set.  ``npe_yardstick`` scores
plain regressions of r on the data vector (:mod:`bmodesep.core.npe.yardstick`), trained
on the nested training subsets of ``npe.training_fractions`` and on the whole training
set, tested on the coverage set: what an estimator should at least extract.
``npe_observed`` builds the data vector of a simulation's NILC product (the pipeline's
maps), samples its posterior and runs the posterior predictive chi^2 check of sec. III.3.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bmodesep.config import npe_config
from bmodesep.core import harmonics
from bmodesep.core.nilc import datavector, ilc
from bmodesep.core.npe import coverage, prior, simulator
from bmodesep.core.npe.sets import set_parameters, subset_chunks
from bmodesep.core.npe.sets import simulation_seed as set_simulation_seed
from bmodesep.core.randomness import rng_for
from bmodesep.core.simulate import footprint, foregrounds
from bmodesep.errors import ConfigError, DataError
from bmodesep.log import Progress, timed
from bmodesep.products import checkpoint, io, sims
from bmodesep.products import npe as simulations
from bmodesep.products import npe_results as results
from bmodesep.products.nilc import nilc_alm, read_nilc
from bmodesep.products.npe import read_chunks
from bmodesep.settings import npe_setup, pysm_data_dir, simulation_sets
from bmodesep.steps import File, Name, step

if TYPE_CHECKING:  # torch is imported by the steps that train or sample, not by npe_chunk
    from bmodesep.core.npe import flows

CHECKPOINT_EVERY = 10  # simulations per checkpoint block of a chunk
log = logging.getLogger(__name__)
P = prior.PARAMETERS
SUMMARY_LEVEL = 0.68


def estimator_config(config: Mapping[str, Any], compression: str) -> dict[str, Any]:
    """The provenance of an estimator: what its simulations and training depend on."""
    npe = config["npe"]
    return npe_config(config) | {
        "training": {
            "compression": compression,
            "hyperparameters": npe["hyperparameters"],
            "estimator": npe["estimator"],
            "tune": npe["tune"],
        }
    }


def _hyperparameters(config, tuning_path) -> tuple[flows.Hyperparameters, str]:
    from bmodesep.core.npe import flows

    configured = config["npe"]["hyperparameters"] | config["npe"]["estimator"]
    if tuning_path is None:
        return flows.hyperparameters(configured), "config"
    tuning = results.read_tuning(tuning_path)
    best = json.loads(tuning.attrs["best_hyperparameters"])
    return flows.hyperparameters(configured | best), str(tuning_path)


def npe_footprint(config: Mapping[str, Any]) -> np.ndarray | None:
    """The apodised mask of ``npe.footprint`` at the estimator's nside (None: full sky)."""
    spec, nside = config["npe"]["footprint"], config["npe"]["nside"]
    if spec["source"] == "full":
        return None
    if spec["source"] == "synthetic":
        return footprint.synthetic_footprint(
            nside,
            spec["fsky"],
            spec["apodisation_deg"],
            spec["centre_deg"],
            spec["galactic_cut_deg"],
        )
    hits = sims.read_hits_map(spec["hits_file"], spec["hits_field"])
    return footprint.footprint_from_hits(
        hits, nside, spec["hits_threshold"], spec["apodisation_deg"], spec["hits_file"]
    )


def _setups(config, spectra_path) -> dict[str, simulator.Setup]:
    """One forward model per configured compression."""
    npe = config["npe"]
    camb = sims.read_spectra(spectra_path, npe["lmax"] or 3 * npe["nside"] - 1)
    mask = npe_footprint(config)
    if mask is not None:
        log.info("footprint %s: f_sky = %.3f", npe["footprint"]["source"], mask.mean())
    return {c: npe_setup(config, camb, c, mask) for c in npe["compressions"]}


def fixed_foreground(config, sim_set, sky_path, setup: simulator.Setup):
    """The B-mode alm ``[freq, nalm]`` of a fixed-foreground set's sky, and the footprint-
    weighted rms of its spectral-index maps (sigma_beta of eq. 25; None for PySM skies)."""
    sky_cfg = config["skies"][config["simulations"][sim_set.foreground]["sky"]]
    _, drawn = sims.read_sky(sky_path, setup.nside)
    qu = foregrounds.foreground_at(
        sky_cfg.get("pysm"), drawn, setup.nside, setup.instrument.frequencies_ghz, pysm_data_dir()
    )
    sigma = None
    if drawn is not None:
        w = np.ones(qu.shape[-1]) if setup.mask is None else setup.mask
        sigma = float(np.hypot(_weighted_std(drawn.beta_d, w), _weighted_std(drawn.beta_s, w)))
    return simulator.foreground_b_alm(qu, setup), sigma


def _weighted_std(x: np.ndarray, w: np.ndarray) -> float:
    mean = np.sum(w * x) / np.sum(w)
    return float(np.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w)))


@step
def npe_chunk(
    config, set: Name, chunk: int, spectra: File, output: File, foreground: File | None = None
) -> None:
    """Rule npe_chunk: (theta, x, seed) of one chunk of a simulation set, checkpointed.

    ``foreground``: the sky product of a fixed-foreground set's simulation.
    """
    set_name, spectra_path = set, spectra
    npe = config["npe"]
    sets = simulation_sets(config)
    if set_name not in sets:
        raise ConfigError(
            f"unknown or empty simulation set '{set_name}' (known: {', '.join(sets)})"
        )
    sim_set = sets[set_name]
    if not 0 <= chunk < sim_set.chunks:
        raise DataError(f"chunk {chunk} outside 0..{sim_set.chunks - 1} of set '{set_name}'")
    if sim_set.foreground is not None and foreground is None:
        raise ConfigError(
            f"test set '{set_name}' holds the foreground of '{sim_set.foreground}': "
            "give --foreground SKY.h5"
        )
    setups = _setups(config, spectra_path)
    first = next(iter(setups.values()))
    fg_alm, fg_sigma = None, None
    if sim_set.foreground is not None:  # its sky's config is in npe_config (the fingerprint)
        fg_alm, fg_sigma = fixed_foreground(config, sim_set, foreground, first)
    thetas = set_parameters(sim_set, chunk, npe["seed"])
    n = thetas.shape[0]
    seeds = np.array(
        [set_simulation_seed(npe["seed"], set_name, chunk, i) for i in range(n)], dtype=np.int64
    )
    xs = {c: np.empty((n, s.data_vector_length)) for c, s in setups.items()}
    with_spectra = set_name in npe["ps_likelihood"]["sets"]
    if with_spectra:
        n_f = first.instrument.n_freq
        xs[simulator.FREQUENCY_SPECTRA] = np.empty(
            (n, n_f * (n_f + 1) // 2 * (first.edges.size - 1))
        )
    cost = np.empty(n)
    blocks = [range(lo, min(lo + CHECKPOINT_EVERY, n)) for lo in range(0, n, CHECKPOINT_EVERY)]
    hits = npe["footprint"]["hits_file"] if npe["footprint"]["source"] == "hits" else None
    job = checkpoint.fingerprint(
        npe_config(config), [spectra_path, foreground, hits], chunk=chunk, set=set_name
    )
    parts = checkpoint.Parts(output, simulations.SIMULATION_BLOCK, job)
    provenance = io.provenance(npe_config(config), npe["seed"], "npe_simulations")
    done = parts.done(range(len(blocks)))
    for b in done:
        piece_x, piece_cost = simulations.block_arrays(parts.read(b), list(xs), len(blocks[b]))
        for c in xs:
            xs[c][blocks[b]] = piece_x[c]
        cost[blocks[b]] = piece_cost
    progress = Progress(
        f"{set_name} chunk {chunk}",
        n,
        "simulations",
        already=sum(len(blocks[b]) for b in done),
    )
    for b, block in enumerate(blocks):
        if b in done:
            continue
        for i in block:
            c0 = time.process_time()
            data = simulator.simulate_compressions(
                thetas[i], int(seeds[i]), setups, fg_alm, with_spectra
            )
            for c, x in data.items():
                xs[c][i] = x
            cost[i] = time.process_time() - c0
            progress.step(f"{cost[i]:.2f} CPU-s")
        piece = simulations.block_datasets({c: x[block] for c, x in xs.items()}, cost[block])
        parts.write(b, piece, provenance)
    simulations.write_simulations(
        output,
        thetas,
        seeds,
        cost,
        xs,
        provenance,
        set_name=set_name,
        chunk=chunk,
        fixed=list(sim_set.fixed),
        bin_edges=first.edges,
        nside=first.nside,
        lmax=first.lmax,
        foreground=sim_set.foreground,
        foreground_sigma_beta=fg_sigma,
        fsky=1.0 if first.mask is None else float(first.mask.mean()),
    )
    parts.remove()


@step
def npe_train(
    config,
    compression: Name,
    chunks: list[File],
    output: File,
    tuning: File | None = None,
    gpus: int = 0,
) -> None:
    """Rule npe_train: the posterior estimator of one compression."""
    from bmodesep.core.npe import flows

    chunk_paths, tuning_path = chunks, tuning
    npe = config["npe"]
    theta, x, _ = read_chunks(chunk_paths, compression)
    hp, source = _hyperparameters(config, tuning_path)
    device = flows.training_device(gpus)
    log.info("training on %d simulations of %s (%s): %s", theta.shape[0], compression, device, hp)
    t0, c0 = time.perf_counter(), time.process_time()
    trained = flows.train(
        theta,
        x,
        prior.prior(npe["prior"]),
        hp,
        seed=npe["seed"],
        label=f"training {compression}",
        device=device,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    log.info(
        "trained %d epochs in %.1f s wall, %.1f s CPU; best validation loss %.4f",
        trained.epochs,
        wall,
        cpu,
        trained.best_validation_loss,
    )
    results.write_estimator(
        output,
        flows.state_arrays(trained.estimator),
        trained.training_loss,
        trained.validation_loss,
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_train"),
        compression=compression,
        prior=npe["prior"],
        n_data=x.shape[1],
        hyperparameters=hp._asdict(),
        hyperparameters_from=source,
        epochs=trained.epochs,
        best_validation_loss=trained.best_validation_loss,
        training_simulations=theta.shape[0],
        train_wall_s=wall,
        train_cpu_s=cpu,
    )


def load_posterior(path) -> tuple[flows.Posterior, io.Product]:
    """The saved estimator rebuilt, with its prior (no pickles: weights + hyperparameters)."""
    from bmodesep.core.npe import flows

    product = results.read_estimator(path)
    hp = flows.hyperparameters(json.loads(product.attrs["hyperparameters"]))
    state = results.estimator_state(product)
    estimator = flows.rebuild(state, hp, len(P), int(product.attrs["n_data"]))
    posterior = flows.Posterior(estimator, prior.prior(product.attrs["prior"]), hp.parameters)
    return posterior, product


def _sample_all(post: flows.Posterior, x: np.ndarray, n: int, seed: int) -> np.ndarray:
    out = np.empty((x.shape[0], n, len(P)), dtype=np.float64)
    batch = max(1, 200_000 // n)
    for start in range(0, x.shape[0], batch):
        out[start : start + batch] = post.sample(x[start : start + batch], n, seed + start)
    return out


def summarise(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Posterior means and 68% HDIs of r, A_lens and the index-field widths (eq. 25)."""
    i = {p: P.index(p) for p in P}
    quantities = {
        "r": samples[..., i["r"]],
        "A_lens": samples[..., i["A_lens"]],
        "sigma_beta": true_sigma_beta(samples),
    }
    out = {}
    for name, q in quantities.items():
        out[f"{name}_mean"] = q.mean(axis=-1)
        out[f"{name}_hdi"] = np.array([coverage.hdi(row, SUMMARY_LEVEL) for row in q])
    return out


def true_sigma_beta(theta: np.ndarray) -> np.ndarray:
    """sigma_beta (eq. 25) of parameter vectors ``[..., parameter]``."""
    return coverage.sigma_beta(
        *(theta[..., P.index(p)] for p in ("B_d", "gamma_d", "B_s", "gamma_s"))
    )


@step
def npe_posterior(config, estimator: File, chunks: list[File], output: File) -> None:
    """Rule npe_posterior: posterior samples and summaries for every data vector of a set."""
    estimator_path, chunk_paths = estimator, chunks
    npe = config["npe"]
    post, est = load_posterior(estimator_path)
    compression = est.attrs["compression"]
    theta, x, seeds = read_chunks(chunk_paths, compression)
    if x.shape[1] != int(est.attrs["n_data"]):
        raise DataError(
            f"{chunk_paths[0]}: data vectors of length {x.shape[1]}, "
            f"the estimator {estimator_path} takes {est.attrs['n_data']}"
        )
    first = simulations.read_simulations_head(chunk_paths[0])
    with timed(f"{x.shape[0]} posteriors of {npe['posterior_samples']} samples"):
        samples = _sample_all(post, x, npe["posterior_samples"], npe["seed"])
    fg = str(first.attrs.get("foreground", ""))
    truth = true_sigma_beta(theta)
    if fg:  # the sky's own index rms over the footprint (negative: unknown, a PySM sky)
        truth = np.full(theta.shape[0], float(first.attrs["foreground_sigma_beta"]))
    results.write_posteriors(
        output,
        samples,
        theta,
        x,
        seeds,
        truth,
        summarise(samples),
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_posterior"),
        set_name=first.attrs["set"],
        fixed=first.attrs["fixed"],
        compression=compression,
        estimator=str(estimator_path),
        foreground=fg,
        sky=config["simulations"][fg]["sky"] if fg else "",
        fsky=float(first.attrs.get("fsky", 1.0)),
    )


@step
def npe_coverage(config, posteriors: File, output: File) -> None:
    """Rule npe_coverage: TARP expected coverage, joint and per parameter."""
    posterior_path = posteriors
    npe = config["npe"]
    post = results.read_posteriors(posterior_path)
    samples, theta = post[results.SAMPLES].astype(float), post[results.THETA]
    rng = rng_for(npe["seed"], "tarp")
    joint = coverage.tarp(samples, theta, rng)
    marginals = coverage.marginal_tarps(samples, theta, rng)
    tarps = [joint, *marginals]
    names = ["joint", *P]
    for name, t in zip(names, tarps, strict=True):
        flag = " FLAGGED" if t.flagged() else ""
        log.info("TARP %s: max deviation %.1f sigma%s", name, t.deviation_sigma, flag)
    results.write_coverage(
        output,
        joint.credibility,
        np.stack([t.ecp for t in tarps]),
        np.stack([t.ecp_std for t in tarps]),
        np.array([t.deviation_sigma for t in tarps]),
        io.provenance(
            estimator_config(config, post.attrs["compression"]), npe["seed"], "npe_coverage"
        ),
        names=names,
        flagged=[t.flagged() for t in tarps],
        compression=post.attrs["compression"],
        test_simulations=theta.shape[0],
    )


@step
def npe_yardstick(
    config, compression: Name, chunks: list[File], coverage: list[File], output: File
) -> None:
    """Rule npe_yardstick: regressions of r on x at each training subset, on the coverage set."""
    from bmodesep.core.npe import yardstick

    npe = config["npe"]
    theta, x, _ = read_chunks(chunks, compression)
    theta_test, x_test, _ = read_chunks(coverage, compression)
    sizes = sorted(
        {
            min(subset_chunks(f, len(chunks)) * npe["simulations_per_chunk"], x.shape[0])
            for f in [*npe["training_fractions"], 1.0]  # the subsets and the whole set
        }
    )
    r = P.index("r")
    with timed(f"yardstick of {compression}: {len(sizes)} subsets, {x_test.shape[0]} tests"):
        scores = yardstick.yardstick(x, theta[:, r], x_test, theta_test[:, r], sizes, npe["seed"])
    rows = [
        {
            "parameter": "r",
            "method": method,
            "training_simulations": n,
            "test_simulations": x_test.shape[0],
            "correlation": f"{scores[i, j, 0]:.4f}",
            "rms_error": f"{scores[i, j, 1]:.6g}",
        }
        for i, method in enumerate(yardstick.METHODS)
        for j, n in enumerate(sizes)
    ]
    for row in rows:
        log.info(
            "%(method)s, %(training_simulations)s simulations: r correlation %(correlation)s", row
        )
    results.write_yardstick(output, rows)


def observed_data_vectors(nilc_path, setup: simulator.Setup) -> np.ndarray:
    """``[realisation, n]`` data vectors of a NILC product (the two splits' components)."""
    product = read_nilc(nilc_path)
    alm = nilc_alm(product)  # [real, split, comp, nalm]
    n_comp = len(setup.compression.outputs)
    if alm.shape[1] < 2 or alm.shape[2] != n_comp:
        raise DataError(
            f"{nilc_path}: {alm.shape[1]} splits of {alm.shape[2]} components; the estimator "
            f"needs 2 splits of {n_comp}"
        )
    lmax = harmonics.alm_lmax(alm.shape[-1])
    if setup.edges[-1] - 1 > lmax:
        raise DataError(f"{nilc_path}: alm reach l = {lmax}, the bins l = {setup.edges[-1] - 1}")
    return np.stack([datavector.data_vector(a[0], a[1], lmax, setup.edges) for a in alm])


@step
def npe_observed(
    config, estimator: File, nilc: File, spectra: File, simulation: Name, output: File
) -> None:
    """Rule npe_observed: posterior of a pipeline sky's NILC maps and its predictive check."""
    estimator_path, nilc_path, spectra_path = estimator, nilc, spectra
    npe = config["npe"]
    post, est = load_posterior(estimator_path)
    compression = est.attrs["compression"]
    setup = _setups(config, spectra_path)[compression]
    x_obs = observed_data_vectors(nilc_path, setup)
    if x_obs.shape[1] != int(est.attrs["n_data"]):
        raise DataError(
            f"{nilc_path}: data vectors of length {x_obs.shape[1]}, the estimator takes "
            f"{est.attrs['n_data']} (same nside and bins as npe?)"
        )
    samples = _sample_all(post, x_obs, npe["posterior_samples"], npe["seed"])
    # posterior predictive check of the first realisation (sec. III.3)
    x_pred, x_cov, check = predictive_check(npe, setup, samples[0], x_obs[0], "")
    log.info("%s: chi2 %.1f, p = %.3f", simulation, check.chi2_observed, check.p_value)
    results.write_observed(
        output,
        samples,
        x_obs,
        x_pred,
        check.chi2_predictive,
        x_cov,
        summarise(samples),
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_observed"),
        simulation=simulation,
        compression=compression,
        chi2_observed=check.chi2_observed,
        ppc_p_value=check.p_value,
        nilc=str(nilc_path),
        truth=_observed_truth(nilc_path),
    )


def _observed_truth(nilc_path) -> dict[str, float]:
    """r and A_lens of a simulated sky's CMB, as its NILC product records them."""
    attrs = read_nilc(nilc_path).attrs
    names = {"r": "r_true", "A_lens": "a_lens_true"}
    return {p: float(attrs[a]) for p, a in names.items() if a in attrs}


def predictive_check(npe, setup: simulator.Setup, samples: np.ndarray, x_obs, label: str):
    """Sec. III.3's check of one data vector: simulations of the training model at posterior
    draws and, for the covariance, at the posterior mean; chi^2 of each against the data's.

    ``label`` keeps the seeds of different checks apart ("" for the observed skies).
    """
    pred = npe["predictive"]
    n_cov = pred["covariance_simulations"] or x_obs.shape[0] + 20
    draws = samples[rng_for(npe["seed"], "ppc-draws").permutation(samples.shape[0])]
    draws = draws[: pred["simulations"]]
    mean = samples.mean(axis=0)

    def simulate(theta, stream, i):
        return simulator.simulate(theta, simulation_seed(npe["seed"], label + stream, i), setup)

    with timed(f"posterior predictive check: {len(draws)} + {n_cov} simulations"):
        x_pred = np.stack([simulate(t, "ppc", i) for i, t in enumerate(draws)])
        x_cov = np.stack([simulate(mean, "ppc-cov", i) for i in range(n_cov)])
    return x_pred, x_cov, coverage.predictive_chi2(x_obs, x_pred, x_cov)


@step
def npe_predictive(config, posteriors: File, spectra: File, output: File) -> None:
    """Rule npe_predictive: predictive check of a test set's first dataset (Fig. 9).

    The predictive check (Fig. 9) of a test set's first dataset,
    e.g. a fixed-foreground sky, against the training model."""
    npe = config["npe"]
    post = results.read_posteriors(posteriors)
    compression = post.attrs["compression"]
    setup = _setups(config, spectra)[compression]
    samples, x_obs = post[results.SAMPLES].astype(float), post[results.X]
    set_name = str(post.attrs["set"])
    x_pred, x_cov, check = predictive_check(npe, setup, samples[0], x_obs[0], f"{set_name}:")
    log.info("%s: chi2 %.1f, p = %.3f", set_name, check.chi2_observed, check.p_value)
    label = post.attrs.get("sky") or set_name
    results.write_observed(
        output,
        samples[:1],
        x_obs[:1],
        x_pred,
        check.chi2_predictive,
        x_cov,
        {k: v[:1] for k, v in summarise(samples[:1]).items()},
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_predictive"),
        simulation=f"{set_name} ({label})" if label != set_name else set_name,
        compression=compression,
        chi2_observed=check.chi2_observed,
        ppc_p_value=check.p_value,
        nilc="",
    )


def _likelihood_summary(samples: np.ndarray, sampled) -> dict[str, np.ndarray]:
    """Posterior means and 68% HDIs of r and A_lens from likelihood samples."""
    summary = {}
    for q in ("r", "A_lens"):
        values = samples[..., list(sampled).index(q)]
        summary[f"{q}_mean"] = values.mean(axis=-1)
        summary[f"{q}_hdi"] = np.array([coverage.hdi(row, SUMMARY_LEVEL) for row in values])
    return summary


@step
def npe_ps_likelihood(config, chunks: list[File], spectra: File, output: File) -> None:
    """Rule npe_ps_likelihood: power-spectrum likelihood of a test set (App. E).

    The App. E power-spectrum likelihood on every dataset of a test
    set (the frequency spectra its chunks store), sampled with emcee."""
    from bmodesep.core.npe import ps_likelihood as pl

    npe, spec = config["npe"], config["npe"]["ps_likelihood"]
    theta, x, _ = read_chunks(chunks, simulator.FREQUENCY_SPECTRA)
    first = simulations.read_simulations_head(chunks[0])
    set_name = str(first.attrs["set"])
    setup = next(iter(_setups(config, spectra).values()))
    model = pl.model_from_setup(setup)
    chains = pl.analyse_datasets(
        model,
        x,
        npe["prior"],
        lambda i: rng_for(npe["seed"], f"ps-likelihood:{set_name}", i),
        spec["walkers"],
        spec["steps"],
        spec["burn"],
        npe["posterior_samples"],
        f"ps_likelihood {set_name}",
    )
    samples, best, chi2, accept = (
        chains.samples,
        chains.best_fit,
        chains.chi2_best,
        chains.acceptance,
    )
    summary = _likelihood_summary(samples, pl.SAMPLED)
    fg = str(first.attrs.get("foreground", ""))
    results.write_ps_likelihood(
        output,
        samples,
        best,
        chi2,
        accept,
        theta,
        summary,
        io.provenance(npe_config(config), npe["seed"], "ps_likelihood"),
        sampled=pl.SAMPLED,
        set_name=set_name,
        fixed=first.attrs["fixed"],
        foreground=fg,
        sky=config["simulations"][fg]["sky"] if fg else "",
        fsky=float(first.attrs.get("fsky", 1.0)),
        n_data=x.shape[1],
    )


def observed_frequency_spectra(signal_path, noise_path, setup: simulator.Setup) -> np.ndarray:
    """``[realisation, n]`` frequency spectra of a pipeline simulation's maps (signal plus
    each noise realisation, the two splits; or the observed splits of maps that contain
    their noise), as the likelihood's data."""
    inst, nside = setup.instrument, setup.nside
    n_real, n_split, maps = sims.observed_maps(
        sims.read_signal(signal_path, inst, nside), sims.read_noise(noise_path, inst, nside)
    )
    if n_split < 2:
        raise DataError(f"{noise_path}: {n_split} split(s); the likelihood needs 2")
    out = []
    for i in range(n_real):
        alm = [ilc.b_mode_alm(maps(i, s), nside, setup.lmax, 3, setup.mask) for s in (0, 1)]
        out.append(datavector.data_vector(alm[0], alm[1], setup.lmax, setup.edges))
    return np.stack(out)


@step
def npe_ps_observed(
    config, signal: File, noise: File, spectra: File, simulation: Name, output: File
) -> None:
    """Rule npe_ps_observed: power-spectrum likelihood of a pipeline simulation's maps.

    The power-spectrum likelihood on a pipeline simulation's
    maps, one posterior per noise realisation (the data npe_observed's NILC products
    are made from)."""
    from bmodesep.core.npe import ps_likelihood as pl

    npe, spec = config["npe"], config["npe"]["ps_likelihood"]
    setup = next(iter(_setups(config, spectra).values()))
    x = observed_frequency_spectra(signal, noise, setup)
    model = pl.model_from_setup(setup)
    chains = pl.analyse_datasets(
        model,
        x,
        npe["prior"],
        lambda i: rng_for(npe["seed"], f"ps-observed:{simulation}", i),
        spec["walkers"],
        spec["steps"],
        spec["burn"],
        npe["posterior_samples"],
        f"ps_likelihood observed {simulation}",
    )
    samples = chains.samples
    summary = _likelihood_summary(samples, pl.SAMPLED)
    theta = np.zeros((x.shape[0], len(P)))  # only r and A_lens of the sky are known
    theta[:, 0], theta[:, 1] = config["cmb"]["r"], config["cmb"]["a_lens"]
    results.write_ps_likelihood(
        output,
        samples,
        chains.best_fit,
        chains.chi2_best,
        chains.acceptance,
        theta,
        summary,
        io.provenance(npe_config(config), npe["seed"], "npe_ps_observed"),
        sampled=pl.SAMPLED,
        set_name=f"observed:{simulation}",
        fixed=["r", "A_lens"],
        foreground=simulation,
        sky="",
        fsky=1.0 if setup.mask is None else float(setup.mask.mean()),
        n_data=x.shape[1],
    )


def simulation_seed(base_seed: int, stream: str, index: int) -> int:
    return int(rng_for(base_seed, f"npe-observed:{stream}", index).integers(0, 2**62))


@step
def npe_tune(config, compression: Name, chunks: list[File], output: File, gpus: int = 0) -> None:
    """Rule npe_tune: Optuna multivariate TPE over the Appendix C ranges (best validation loss)."""
    from bmodesep.core.npe import flows

    chunk_paths = chunks
    import optuna

    npe = config["npe"]
    trials = npe["tune"]["trials"]
    if trials < 1:
        raise ConfigError("npe.tune.trials is 0: no hyperparameter search configured")
    theta, x, _ = read_chunks(chunk_paths, compression)
    theta, x = theta[: npe["tune"]["simulations"]], x[: npe["tune"]["simulations"]]  # None: all
    base = flows.hyperparameters(npe["hyperparameters"] | npe["estimator"])
    pr = prior.prior(npe["prior"])
    device = flows.training_device(gpus)
    log.info(
        "tuning %s: %d trials, %d simulations (%s)", compression, trials, theta.shape[0], device
    )

    def objective(trial) -> float:
        values = {}
        for name, (lo, hi, log) in flows.SEARCH_SPACE.items():
            if isinstance(lo, int):
                values[name] = trial.suggest_int(name, lo, hi)
            else:
                values[name] = trial.suggest_float(name, lo, hi, log=log)
        hp = base._replace(max_epochs=npe["tune"]["max_epochs"], **values)
        trained = flows.train(
            theta, x, pr, hp, seed=npe["seed"], label=f"trial {trial.number}", device=device
        )
        trial.set_user_attr("epochs", trained.epochs)
        return trained.best_validation_loss

    # the study lives in a journal file next to the output: a killed tuning job keeps its
    # finished trials and runs only the missing ones (a trial cut off mid-way is redone)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parts = Path(f"{output}.parts")
    parts.mkdir(parents=True, exist_ok=True)
    journal = parts / "study.journal"
    job = checkpoint.fingerprint(estimator_config(config, compression), chunks, tune=npe["tune"])
    stamp = parts / "fingerprint"
    if journal.exists() and (not stamp.exists() or stamp.read_text() != job):
        log.info("discarding the tuning journal of another config: %s", journal)
        journal.unlink()
    stamp.write_text(job)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.create_study(
        study_name=f"npe-{compression}",
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(multivariate=True, seed=npe["seed"]),
    )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    progress = Progress(f"tuning {compression}", trials, "trials", already=len(finished))

    def report(study, trial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            progress.step(
                f"trial {trial.number}: {trial.params} -> {trial.value:.4f} "
                f"(best {study.best_value:.4f})"
            )

    study.optimize(objective, n_trials=max(trials - len(finished), 0), callbacks=[report])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    names = list(flows.SEARCH_SPACE)
    results.write_tuning(
        output,
        np.array([t.value for t in done]),
        np.array([[t.params[n] for n in names] for t in done], float),
        np.array([t.user_attrs["epochs"] for t in done]),
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_tune"),
        searched=names,
        best_hyperparameters=study.best_params,
        compression=compression,
    )
    shutil.rmtree(parts)
