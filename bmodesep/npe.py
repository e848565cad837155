"""SBI stages: train the posterior estimator, sample posteriors, test coverage, analyse data.

    python -m bmodesep.npe train     --config C --compression K --chunks F... --output E.h5
    python -m bmodesep.npe tune      --config C --compression K --chunks F... --output T.h5
    python -m bmodesep.npe posterior --config C --estimator E.h5 --chunks F... --output P.h5
    python -m bmodesep.npe coverage  --config C --posteriors P.h5 --output V.h5
    python -m bmodesep.npe observed  --config C --estimator E.h5 --nilc N.h5 --spectra S.h5
                                     --simulation SIM --output O.h5

``train`` fits the flow (:mod:`bmodesep.flows`) to the training chunks of one compression
and saves its weights with the hyperparameters that rebuild it (from ``npe.hyperparameters``
or, with ``--tuning``, the best trial of ``tune``).  ``posterior`` draws
``npe.posterior_samples`` for every data vector of a simulation set and summarises r,
A_lens and the spectral-index field widths (eq. 25).  ``coverage`` runs TARP on the
posteriors of the held-out ``coverage`` set.  ``observed`` builds the data vector of a
simulation's NILC product (the pipeline's maps), samples its posterior and runs the
posterior predictive chi^2 check of sec. III.3.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmodesep import (
    campaign,
    checkpoint,
    coverage,
    datavector,
    flows,
    harmonics,
    io,
    prior,
    simulator,
)
from bmodesep.cli import config_from_args, run_cli, stage_parser, timed
from bmodesep.errors import ConfigError, DataError
from bmodesep.nilc import read_nilc
from bmodesep.randomness import rng_for

D = io.Dataset
P = prior.PARAMETERS
SUMMARY_LEVEL = 0.68


def estimator_config(config: Mapping[str, Any], compression: str) -> dict[str, Any]:
    """The provenance of an estimator: what its simulations and training depend on."""
    npe = config["npe"]
    return campaign.npe_config(config) | {
        "training": {
            "compression": compression,
            "hyperparameters": npe["hyperparameters"],
            "tune": npe["tune"],
        }
    }


def _hyperparameters(config, tuning_path) -> tuple[flows.Hyperparameters, str]:
    if tuning_path is None:
        return flows.hyperparameters(config["npe"]["hyperparameters"]), "config"
    tuning = io.read_product(tuning_path, "npe_tuning", {"validation_loss": ((None,), "nats")})
    best = json.loads(tuning.attrs["best_hyperparameters"])
    return flows.hyperparameters(config["npe"]["hyperparameters"] | best), str(tuning_path)


def train_stage(
    config, chunk_paths, compression: str, output, tuning_path=None, gpus: int = 0
) -> None:
    npe = config["npe"]
    theta, x, _ = campaign.read_chunks(chunk_paths, compression)
    hp, source = _hyperparameters(config, tuning_path)
    device = flows.training_device(gpus)
    print(f"[bmodesep] training on {theta.shape[0]} simulations of {compression} ({device}): {hp}")
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
    print(
        f"[bmodesep] trained {trained.epochs} epochs in {wall:.1f} s wall, {cpu:.1f} s CPU; "
        f"best validation loss {trained.best_validation_loss:.4f}",
        flush=True,
    )
    datasets = {
        f"state/{k}": D(v, "1", "flow weight or buffer")
        for k, v in flows.state_arrays(trained.estimator).items()
    }
    datasets["training_loss"] = D(trained.training_loss, "nats", "mean -log q per epoch")
    datasets["validation_loss"] = D(trained.validation_loss, "nats", "on the held-out fraction")
    io.write_product(
        output,
        "npe_estimator",
        datasets,
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_train"),
        {
            "compression": compression,
            "prior": npe["prior"],
            "parameters": list(P),
            "n_data": x.shape[1],
            "hyperparameters": json.dumps(hp._asdict()),
            "hyperparameters_from": source,
            "epochs": trained.epochs,
            "best_validation_loss": trained.best_validation_loss,
            "training_simulations": theta.shape[0],
            "train_wall_s": wall,
            "train_cpu_s": cpu,
        },
    )


def load_posterior(path) -> tuple[flows.Posterior, io.Product]:
    """The saved estimator rebuilt, with its prior (no pickles: weights + hyperparameters)."""
    product = io.read_product(path, "npe_estimator")
    hp = flows.hyperparameters(json.loads(product.attrs["hyperparameters"]))
    state = {k.removeprefix("state/"): v for k, v in product.data.items() if k.startswith("state/")}
    estimator = flows.rebuild(state, hp, len(P), int(product.attrs["n_data"]))
    return flows.Posterior(estimator, prior.prior(product.attrs["prior"])), product


def _sample_all(post: flows.Posterior, x: np.ndarray, n: int, seed: int) -> np.ndarray:
    out = np.empty((x.shape[0], n, len(P)), dtype=np.float64)
    batch = max(1, 200_000 // n)
    for start in range(0, x.shape[0], batch):
        out[start : start + batch] = post.sample(x[start : start + batch], n, seed + start)
    return out


def summarise(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Posterior means and 68% HDIs of r, A_lens and the index-field widths (eq. 25)."""
    i = {p: P.index(p) for p in P}
    sig_d = coverage.index_field_sigma(samples[..., i["B_d"]], samples[..., i["gamma_d"]])
    sig_s = coverage.index_field_sigma(samples[..., i["B_s"]], samples[..., i["gamma_s"]])
    quantities = {
        "r": samples[..., i["r"]],
        "A_lens": samples[..., i["A_lens"]],
        "sigma_beta": np.sqrt(sig_d**2 + sig_s**2),
    }
    out = {}
    for name, q in quantities.items():
        out[f"{name}_mean"] = q.mean(axis=-1)
        out[f"{name}_hdi"] = np.array([coverage.hdi(row, SUMMARY_LEVEL) for row in q])
    return out


def true_sigma_beta(theta: np.ndarray) -> np.ndarray:
    i = {p: P.index(p) for p in P}
    sd = coverage.index_field_sigma(theta[:, i["B_d"]], theta[:, i["gamma_d"]])
    ss = coverage.index_field_sigma(theta[:, i["B_s"]], theta[:, i["gamma_s"]])
    return np.sqrt(sd**2 + ss**2)


def _summary_datasets(summary: Mapping[str, np.ndarray]) -> dict[str, D]:
    units = {"r": "1", "A_lens": "1", "sigma_beta": "1"}
    out = {}
    for key, value in summary.items():
        name = key.rsplit("_", 1)[0]
        what = "posterior mean" if key.endswith("mean") else "68% highest-density interval"
        out[f"summary/{key}"] = D(value, units[name], f"{what} of {name}")
    return out


def posterior_stage(config, estimator_path, chunk_paths, output) -> None:
    npe = config["npe"]
    post, est = load_posterior(estimator_path)
    compression = est.attrs["compression"]
    theta, x, seeds = campaign.read_chunks(chunk_paths, compression)
    if x.shape[1] != int(est.attrs["n_data"]):
        raise DataError(
            f"{chunk_paths[0]}: data vectors of length {x.shape[1]}, "
            f"the estimator {estimator_path} takes {est.attrs['n_data']}"
        )
    first = io.read_product(chunk_paths[0], "npe_simulations", {})
    set_name = first.attrs["set"]
    with timed(f"{x.shape[0]} posteriors of {npe['posterior_samples']} samples"):
        samples = _sample_all(post, x, npe["posterior_samples"], npe["seed"])
    datasets = {
        "samples": D(samples.astype(np.float32), "1", "[dataset, sample, parameter]"),
        "theta": D(theta, "1", "true parameters"),
        "x": D(x, "uK_CMB^2", "data vectors"),
        "seed": D(seeds, "1", "simulation seeds"),
        "true_sigma_beta": D(true_sigma_beta(theta), "1", "(sigma_beta_d^2 + sigma_beta_s^2)^1/2"),
    }
    datasets |= _summary_datasets(summarise(samples))
    io.write_product(
        output,
        "npe_posteriors",
        datasets,
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_posterior"),
        {
            "set": set_name,
            "fixed": list(first.attrs["fixed"]) if len(first.attrs["fixed"]) else [],
            "compression": compression,
            "parameters": list(P),
            "estimator": str(estimator_path),
        },
    )


def read_posteriors(path) -> io.Product:
    expect = {
        "samples": ((None, None, len(P)), "1"),
        "theta": ((None, len(P)), "1"),
        "x": ((None, None), "uK_CMB^2"),
        "seed": ((None,), "1"),
        "true_sigma_beta": ((None,), "1"),
    }
    for name in ("r", "A_lens", "sigma_beta"):
        expect[f"summary/{name}_mean"] = ((None,), "1")
        expect[f"summary/{name}_hdi"] = ((None, 2), "1")
    return io.read_product(path, "npe_posteriors", expect)


def coverage_stage(config, posterior_path, output) -> None:
    npe = config["npe"]
    post = read_posteriors(posterior_path)
    samples, theta = post["samples"].astype(float), post["theta"]
    rng = rng_for(npe["seed"], "tarp")
    joint = coverage.tarp(samples, theta, rng)
    marginals = coverage.marginal_tarps(samples, theta, rng)
    results = [joint, *marginals]
    names = ["joint", *P]
    for name, t in zip(names, results, strict=True):
        flag = " FLAGGED" if t.flagged() else ""
        print(f"[bmodesep] TARP {name}: max deviation {t.deviation_sigma:.1f} sigma{flag}")
    io.write_product(
        output,
        "npe_coverage",
        {
            "credibility": D(joint.credibility, "1", "1 - alpha"),
            "ecp": D(np.stack([t.ecp for t in results]), "1", "[joint + parameter, level]"),
            "ecp_std": D(np.stack([t.ecp_std for t in results]), "1", "bootstrap std"),
            "deviation_sigma": D(
                np.array([t.deviation_sigma for t in results]), "1", "max |ECP - 1 + alpha|/std"
            ),
        },
        io.provenance(
            estimator_config(config, post.attrs["compression"]), npe["seed"], "npe_coverage"
        ),
        {
            "names": names,
            "flagged": [bool(t.flagged()) for t in results],
            "compression": post.attrs["compression"],
            "test_simulations": int(theta.shape[0]),
        },
    )


def _alm_lmax(nalm: int) -> int:
    lmax = round((np.sqrt(8 * nalm + 1) - 3) / 2)
    if harmonics.alm_size(lmax) != nalm:
        raise DataError(f"{nalm} coefficients are not a triangular alm layout")
    return lmax


def observed_data_vectors(nilc_path, setup: simulator.Setup) -> np.ndarray:
    """``[realisation, n]`` data vectors of a NILC product (the two splits' components)."""
    product = read_nilc(nilc_path)
    alm = product["alm_real"] + 1j * product["alm_imag"]  # [real, split, comp, nalm]
    n_comp = len(setup.compression.outputs)
    if alm.shape[1] < 2 or alm.shape[2] != n_comp:
        raise DataError(
            f"{nilc_path}: {alm.shape[1]} splits of {alm.shape[2]} components; the estimator "
            f"needs 2 splits of {n_comp}"
        )
    lmax = _alm_lmax(alm.shape[-1])
    if setup.edges[-1] - 1 > lmax:
        raise DataError(f"{nilc_path}: alm reach l = {lmax}, the bins l = {setup.edges[-1] - 1}")
    return np.stack([datavector.data_vector(a[0], a[1], lmax, setup.edges) for a in alm])


def observed_stage(config, estimator_path, nilc_path, spectra_path, simulation, output) -> None:
    npe = config["npe"]
    post, est = load_posterior(estimator_path)
    compression = est.attrs["compression"]
    setup = campaign.setups_from_config(config, spectra_path)[compression]
    x_obs = observed_data_vectors(nilc_path, setup)
    if x_obs.shape[1] != int(est.attrs["n_data"]):
        raise DataError(
            f"{nilc_path}: data vectors of length {x_obs.shape[1]}, the estimator takes "
            f"{est.attrs['n_data']} (same nside and bins as npe?)"
        )
    samples = _sample_all(post, x_obs, npe["posterior_samples"], npe["seed"])
    # posterior predictive check of the first realisation (sec. III.3)
    pred = npe["predictive"]
    n_cov = pred["covariance_simulations"] or x_obs.shape[1] + 20
    draws = samples[0][rng_for(npe["seed"], "ppc-draws").permutation(samples.shape[1])]
    draws = draws[: pred["simulations"]]
    mean = samples[0].mean(axis=0)

    def simulate(theta, stream, i):
        return simulator.simulate(theta, simulation_seed(npe["seed"], stream, i), setup)

    with timed(f"posterior predictive check: {len(draws)} + {n_cov} simulations"):
        x_pred = np.stack([simulate(t, "ppc", i) for i, t in enumerate(draws)])
        x_cov = np.stack([simulate(mean, "ppc-cov", i) for i in range(n_cov)])
    check = coverage.predictive_chi2(x_obs[0], x_pred, x_cov)
    print(f"[bmodesep] {simulation}: chi2 {check.chi2_observed:.1f}, p = {check.p_value:.3f}")
    datasets = {
        "samples": D(samples.astype(np.float32), "1", "[realisation, sample, parameter]"),
        "x": D(x_obs, "uK_CMB^2", "observed data vectors, one per noise realisation"),
        "ppc/x_predictive": D(x_pred, "uK_CMB^2", "posterior predictive data vectors"),
        "ppc/chi2_predictive": D(check.chi2_predictive, "1", "x^T C^-1 x of the draws"),
        "ppc/x_covariance_sims": D(x_cov, "uK_CMB^2", "simulations at the posterior mean"),
    }
    datasets |= _summary_datasets(summarise(samples))
    io.write_product(
        output,
        "npe_observed",
        datasets,
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_observed"),
        {
            "simulation": simulation,
            "compression": compression,
            "parameters": list(P),
            "chi2_observed": check.chi2_observed,
            "ppc_p_value": check.p_value,
            "nilc": str(nilc_path),
        },
    )


def simulation_seed(base_seed: int, stream: str, index: int) -> int:
    return int(rng_for(base_seed, f"npe-observed:{stream}", index).integers(0, 2**62))


def tune_stage(config, chunk_paths, compression: str, output, gpus: int = 0) -> None:
    """Optuna multivariate TPE over the Appendix C ranges; the best validation loss wins."""
    import optuna

    npe = config["npe"]
    trials = npe["tune"]["trials"]
    if trials < 1:
        raise ConfigError("npe.tune.trials is 0: no hyperparameter search configured")
    theta, x, _ = campaign.read_chunks(chunk_paths, compression)
    base = flows.hyperparameters(npe["hyperparameters"])
    pr = prior.prior(npe["prior"])
    device = flows.training_device(gpus)
    print(
        f"[bmodesep] tuning {compression}: {trials} trials, {theta.shape[0]} simulations ({device})"
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
    job = checkpoint.fingerprint(estimator_config(config, compression), tune=npe["tune"])
    stamp = parts / "fingerprint"
    if journal.exists() and (not stamp.exists() or stamp.read_text() != job):
        print(f"[bmodesep] discarding the tuning journal of another config: {journal}")
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
    progress = checkpoint.Progress(f"tuning {compression}", trials, "trials", already=len(finished))

    def report(study, trial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            progress.step(
                f"trial {trial.number}: {trial.params} -> {trial.value:.4f} "
                f"(best {study.best_value:.4f})"
            )

    study.optimize(objective, n_trials=max(trials - len(finished), 0), callbacks=[report])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    names = list(flows.SEARCH_SPACE)
    io.write_product(
        output,
        "npe_tuning",
        {
            "validation_loss": D(np.array([t.value for t in done]), "nats", "best per trial"),
            "values": D(
                np.array([[t.params[n] for n in names] for t in done], float),
                "1",
                "trial hyperparameters, columns as attribute 'searched'",
            ),
            "epochs": D(np.array([t.user_attrs["epochs"] for t in done]), "1", "per trial"),
        },
        io.provenance(estimator_config(config, compression), npe["seed"], "npe_tune"),
        {
            "searched": names,
            "best_hyperparameters": json.dumps(study.best_params),
            "compression": compression,
        },
    )
    shutil.rmtree(parts)


def _main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": ("compression", "output"),
        "tune": ("compression", "output"),
        "posterior": ("estimator", "output"),
        "coverage": ("posteriors", "output"),
        "observed": ("estimator", "nilc", "spectra", "simulation", "output"),
    }
    if not argv or argv[0] not in commands:
        raise ConfigError(f"first argument must be one of {', '.join(commands)}")
    command = argv.pop(0)
    parser = stage_parser(f"python -m bmodesep.npe {command}", __doc__, commands[command])
    if command in ("train", "tune", "posterior"):
        parser.add_argument("--chunks", nargs="+", required=True)
    if command == "train":
        parser.add_argument("--tuning", help="npe_tuning product whose best trial to use")
    if command in ("train", "tune"):
        parser.add_argument(
            "--gpus", type=int, default=0, help="GPUs of the job: > 0 trains on CUDA if visible"
        )
    args = parser.parse_args(argv)
    config = config_from_args(args)
    if command == "train":
        train_stage(config, args.chunks, args.compression, args.output, args.tuning, args.gpus)
    elif command == "tune":
        tune_stage(config, args.chunks, args.compression, args.output, args.gpus)
    elif command == "posterior":
        posterior_stage(config, args.estimator, args.chunks, args.output)
    elif command == "coverage":
        coverage_stage(config, args.posteriors, args.output)
    else:
        observed_stage(
            config, args.estimator, args.nilc, args.spectra, args.simulation, args.output
        )


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
