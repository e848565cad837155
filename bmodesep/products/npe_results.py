"""SBI result products: one writer and one checked reader each.

``npe_estimator`` (``npe/{compression}/estimator.h5``, written by
:func:`bmodesep.stages.npe.npe_train`): the weights and buffers of a trained flow
(``state/<name>``), its training and validation losses, and the hyperparameters (JSON) that
rebuild it.

``npe_tuning`` (``npe/{compression}/tuning.h5``, :func:`~bmodesep.stages.npe.npe_tune`): the
hyperparameters and best validation loss of each completed trial, and the best trial's
hyperparameters (JSON).

``npe_posteriors`` (``npe/{compression}/posteriors/{set}.h5``,
:func:`~bmodesep.stages.npe.npe_posterior`): posterior samples of every data vector of a
test set, the true parameters and summaries (means and 68% HDIs of r, A_lens and the
spectral-index power sigma_beta).

``npe_coverage`` (``npe/{compression}/coverage.h5``, :func:`~bmodesep.stages.npe.npe_coverage`):
TARP expected coverage, joint (row 0) then per parameter, at each credibility level.

``npe_observed`` (``npe/{compression}/observed/{sim}.h5``,
:func:`~bmodesep.stages.npe.npe_observed`): posteriors of a simulation's NILC maps (one
per noise realisation) and the posterior predictive chi^2 check of the first.

``ps_likelihood`` (``npe/ps_likelihood/posteriors/{set}.h5``,
:func:`~bmodesep.stages.npe.npe_ps_likelihood`): emcee samples of the multi-frequency
power-spectrum likelihood's nine parameters (App. E) for every dataset of a test set,
the best fits and the r and A_lens summaries, with the set's attributes as
``npe_posteriors`` has them (``compression`` = ``ps_likelihood``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bmodesep.core.npe.prior import PARAMETERS
from bmodesep.errors import DataError
from bmodesep.products import io

D = io.Dataset

NPE_ESTIMATOR = "npe_estimator"
NPE_TUNING = "npe_tuning"
NPE_POSTERIORS = "npe_posteriors"
NPE_COVERAGE = "npe_coverage"
NPE_OBSERVED = "npe_observed"
PS_LIKELIHOOD = "ps_likelihood"
BEST_FIT = "best_fit"  # [dataset, sampled parameter]
CHI2_BEST = "chi2_best"  # [dataset]
ACCEPTANCE = "acceptance"  # [dataset] mean acceptance fraction of the walkers

STATE_PREFIX = "state/"  # state/<name>: a weight or buffer of the flow (torch state_dict)
TRAINING_LOSS = "training_loss"  # [epoch] nats
VALIDATION_LOSS = "validation_loss"  # [epoch] nats (estimator), [trial] nats (tuning)
TRIAL_VALUES = "values"  # [trial, searched hyperparameter]
TRIAL_EPOCHS = "epochs"  # [trial]


def state_name(key: str) -> str:
    """Dataset of the flow weight or buffer ``key`` of an estimator."""
    return f"{STATE_PREFIX}{key}"


SAMPLES = "samples"  # [dataset, sample, parameter], parameters in prior.PARAMETERS order
THETA = "theta"  # [dataset, parameter] true parameters
X = "x"  # [dataset, n] data vectors, uK_CMB^2
SEED = "seed"  # [dataset]
TRUE_SIGMA_BETA = "true_sigma_beta"  # [dataset] (sigma_beta_d^2 + sigma_beta_s^2)^1/2
SUMMARY_QUANTITIES = ("r", "A_lens", "sigma_beta")


def summary_mean(quantity: str) -> str:
    """Dataset ``[dataset]`` of the posterior mean of ``quantity`` (SUMMARY_QUANTITIES)."""
    return f"summary/{quantity}_mean"


def summary_hdi(quantity: str) -> str:
    """Dataset ``[dataset, 2]`` of the 68% HDI (low, high) of ``quantity``."""
    return f"summary/{quantity}_hdi"


R_MEAN, R_HDI = summary_mean("r"), summary_hdi("r")
A_LENS_MEAN = summary_mean("A_lens")
SIGMA_BETA_MEAN, SIGMA_BETA_HDI = summary_mean("sigma_beta"), summary_hdi("sigma_beta")

CREDIBILITY = "credibility"  # [level] 1 - alpha
ECP = "ecp"  # [joint + parameter, level]
ECP_STD = "ecp_std"  # [joint + parameter, level] bootstrap std
DEVIATION_SIGMA = "deviation_sigma"  # [joint + parameter]

CHI2_PREDICTIVE = "ppc/chi2_predictive"  # [draw]
X_PREDICTIVE = "ppc/x_predictive"  # [draw, n]
X_COVARIANCE_SIMS = "ppc/x_covariance_sims"  # [simulation, n]

_NP = len(PARAMETERS)


# ---------------------------------------------------------------- estimator
def write_estimator(
    path,
    state: Mapping[str, np.ndarray],
    training_loss: np.ndarray,
    validation_loss: np.ndarray,
    provenance: Mapping[str, Any],
    *,
    compression: str,
    prior: str,
    n_data: int,
    hyperparameters: Mapping[str, Any],
    hyperparameters_from: str,
    epochs: int,
    best_validation_loss: float,
    training_simulations: int,
    train_wall_s: float,
    train_cpu_s: float,
) -> Path:
    """A trained flow: ``state`` (weights and buffers by name), its losses per epoch and the
    ``hyperparameters`` that rebuild it (stored as JSON)."""
    datasets = {state_name(k): D(v, "1", "flow weight or buffer") for k, v in state.items()}
    datasets[TRAINING_LOSS] = D(training_loss, "nats", "mean -log q per epoch")
    datasets[VALIDATION_LOSS] = D(validation_loss, "nats", "on the held-out fraction")
    return io.write_product(
        path,
        NPE_ESTIMATOR,
        datasets,
        provenance,
        {
            "compression": compression,
            "prior": prior,
            "parameters": list(PARAMETERS),
            "n_data": n_data,
            "hyperparameters": json.dumps(dict(hyperparameters)),
            "hyperparameters_from": hyperparameters_from,
            "epochs": epochs,
            "best_validation_loss": best_validation_loss,
            "training_simulations": training_simulations,
            "train_wall_s": train_wall_s,
            "train_cpu_s": train_cpu_s,
        },
    )


def read_estimator(path) -> io.Product:
    """A trained flow; its weights by name with :func:`estimator_state`, attribute
    ``hyperparameters`` (JSON), ``n_data``, ``prior``, ``compression``."""
    p = io.read_product(path, NPE_ESTIMATOR)
    _check_attrs(p, ("compression", "prior", "parameters", "n_data", "hyperparameters", "epochs"))
    _check_parameters(p)
    _check_json(p, "hyperparameters")
    for name in (TRAINING_LOSS, VALIDATION_LOSS):
        _check_dataset(p, name, 1, "nats")
    state = [name for name in p.data if name.startswith(STATE_PREFIX)]
    if not state:
        raise DataError(f"{p.path}: no flow weights ('{STATE_PREFIX}*' datasets)")
    for name in state:
        _check_dataset(p, name, None, "1")
    return p


def estimator_state(p: io.Product) -> dict[str, np.ndarray]:
    """The flow weights and buffers of an estimator read by :func:`read_estimator`, by name."""
    return {
        k.removeprefix(STATE_PREFIX): v for k, v in p.data.items() if k.startswith(STATE_PREFIX)
    }


# ---------------------------------------------------------------- tuning
def write_tuning(
    path,
    validation_loss: np.ndarray,
    values: np.ndarray,
    epochs: np.ndarray,
    provenance: Mapping[str, Any],
    *,
    searched: Sequence[str],
    best_hyperparameters: Mapping[str, Any],
    compression: str,
) -> Path:
    """Completed trials of a hyperparameter search: best validation loss, hyperparameters
    (``values``, columns as ``searched``) and epochs of each, and the best trial's values."""
    return io.write_product(
        path,
        NPE_TUNING,
        {
            VALIDATION_LOSS: D(validation_loss, "nats", "best per trial"),
            TRIAL_VALUES: D(values, "1", "trial hyperparameters, columns as attribute 'searched'"),
            TRIAL_EPOCHS: D(epochs, "1", "per trial"),
        },
        provenance,
        {
            "searched": list(searched),
            "best_hyperparameters": json.dumps(dict(best_hyperparameters)),
            "compression": compression,
        },
    )


def read_tuning(path) -> io.Product:
    """A hyperparameter search; attribute ``best_hyperparameters`` (JSON) holds the best
    trial's values of the ``searched`` hyperparameters."""
    p = io.read_product(
        path,
        NPE_TUNING,
        {
            VALIDATION_LOSS: ((None,), "nats"),
            TRIAL_VALUES: ((None, None), "1"),
            TRIAL_EPOCHS: ((None,), "1"),
        },
    )
    _check_attrs(p, ("searched", "best_hyperparameters", "compression"))
    _check_json(p, "best_hyperparameters")
    trials, searched = p[VALIDATION_LOSS].size, len(p.attrs["searched"])
    if p[TRIAL_VALUES].shape != (trials, searched):
        raise DataError(
            f"{p.path}: dataset '{TRIAL_VALUES}' has shape {p[TRIAL_VALUES].shape}, expected "
            f"({trials}, {searched}) for {trials} trials of {searched} hyperparameters"
        )
    _same_rows(p, trials, (TRIAL_EPOCHS,), "trials")
    return p


# ---------------------------------------------------------------- posteriors
def _summary_datasets(summary: Mapping[str, np.ndarray]) -> dict[str, io.Dataset]:
    """``summary/*`` datasets of ``summary`` (``<quantity>_mean`` [dataset] and
    ``<quantity>_hdi`` [dataset, 2] of each of SUMMARY_QUANTITIES)."""
    out = {}
    for q in SUMMARY_QUANTITIES:
        out[summary_mean(q)] = D(summary[f"{q}_mean"], "1", f"posterior mean of {q}")
        out[summary_hdi(q)] = D(summary[f"{q}_hdi"], "1", f"68% highest-density interval of {q}")
    return out


def write_posteriors(
    path,
    samples: np.ndarray,
    theta: np.ndarray,
    x: np.ndarray,
    seeds: np.ndarray,
    true_sigma_beta: np.ndarray,
    summary: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
    *,
    set_name: str,
    fixed: Iterable[str],
    compression: str,
    estimator: str,
    foreground: str = "",
    sky: str = "",
    fsky: float = 1.0,
) -> Path:
    """Posteriors of a test set (``samples`` stored as float32); ``summary`` as
    :func:`bmodesep.stages.npe.summarise` returns it.  ``foreground``/``sky``: the
    simulation and sky of a fixed-foreground set ("" otherwise); its ``true_sigma_beta`` is
    then the sky's index rms over the footprint (negative where unknown)."""
    datasets = {
        SAMPLES: D(np.asarray(samples).astype(np.float32), "1", "[dataset, sample, parameter]"),
        THETA: D(theta, "1", "true parameters"),
        X: D(x, "uK_CMB^2", "data vectors"),
        SEED: D(seeds, "1", "simulation seeds"),
        TRUE_SIGMA_BETA: D(true_sigma_beta, "1", "(sigma_beta_d^2 + sigma_beta_s^2)^1/2"),
        **_summary_datasets(summary),
    }
    return io.write_product(
        path,
        NPE_POSTERIORS,
        datasets,
        provenance,
        {
            "set": set_name,
            "fixed": list(fixed),
            "compression": compression,
            "parameters": list(PARAMETERS),
            "estimator": str(estimator),
            "foreground": foreground,
            "sky": sky,
            "fsky": fsky,
        },
    )


def _summary_expect() -> dict:
    expect = {}
    for q in SUMMARY_QUANTITIES:
        expect[summary_mean(q)] = ((None,), "1")
        expect[summary_hdi(q)] = ((None, 2), "1")
    return expect


def read_posteriors(path) -> io.Product:
    """Posteriors of a test set; attributes ``set``, ``fixed``, ``compression``."""
    expect = {
        SAMPLES: ((None, None, _NP), "1"),
        THETA: ((None, _NP), "1"),
        X: ((None, None), "uK_CMB^2"),
        SEED: ((None,), "1"),
        TRUE_SIGMA_BETA: ((None,), "1"),
        **_summary_expect(),
    }
    p = io.read_product(path, NPE_POSTERIORS, expect)
    _check_attrs(p, ("set", "fixed", "compression", "parameters"))
    _check_parameters(p)
    _same_rows(p, p[SAMPLES].shape[0], expect, "datasets")
    return p


# ---------------------------------------------------------------- coverage
def write_coverage(
    path,
    credibility: np.ndarray,
    ecp: np.ndarray,
    ecp_std: np.ndarray,
    deviation_sigma: np.ndarray,
    provenance: Mapping[str, Any],
    *,
    names: Sequence[str],
    flagged: Iterable[bool],
    compression: str,
    test_simulations: int,
) -> Path:
    """TARP coverage; rows of ``ecp``, ``ecp_std``, ``deviation_sigma`` and ``flagged`` as
    ``names`` (``joint``, then the parameters)."""
    return io.write_product(
        path,
        NPE_COVERAGE,
        {
            CREDIBILITY: D(credibility, "1", "1 - alpha"),
            ECP: D(ecp, "1", "[joint + parameter, level]"),
            ECP_STD: D(ecp_std, "1", "bootstrap std"),
            DEVIATION_SIGMA: D(deviation_sigma, "1", "max |ECP - 1 + alpha|/std"),
        },
        provenance,
        {
            "names": list(names),
            "flagged": [bool(f) for f in flagged],
            "compression": compression,
            "test_simulations": int(test_simulations),
        },
    )


def read_coverage(path) -> io.Product:
    """TARP coverage; attribute ``names`` labels the rows (``joint``, then parameters)."""
    expect = {
        CREDIBILITY: ((None,), "1"),
        ECP: ((None, None), "1"),
        ECP_STD: ((None, None), "1"),
        DEVIATION_SIGMA: ((None,), "1"),
    }
    p = io.read_product(path, NPE_COVERAGE, expect)
    _check_attrs(p, ("names", "compression", "test_simulations"))
    rows, levels = len(p.attrs["names"]), p[CREDIBILITY].size
    for name in (ECP, ECP_STD):
        if p[name].shape != (rows, levels):
            raise DataError(
                f"{p.path}: dataset '{name}' has shape {p[name].shape}, expected "
                f"({rows}, {levels}) for {rows} names and {levels} levels"
            )
    if p[DEVIATION_SIGMA].size != rows:
        raise DataError(f"{p.path}: {p[DEVIATION_SIGMA].size} deviations for {rows} names")
    return p


# ---------------------------------------------------------------- observed sky
def write_observed(
    path,
    samples: np.ndarray,
    x: np.ndarray,
    x_predictive: np.ndarray,
    chi2_predictive: np.ndarray,
    x_covariance_sims: np.ndarray,
    summary: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
    *,
    simulation: str,
    compression: str,
    chi2_observed: float,
    ppc_p_value: float,
    nilc: str,
    truth: Mapping[str, float] | None = None,
) -> Path:
    """Posteriors of an observed sky (``samples`` stored as float32) and its posterior
    predictive check; ``summary`` as :func:`bmodesep.stages.npe.summarise` returns it;
    ``truth`` the parameters a simulated sky was drawn with (attributes ``true_<name>``;
    none for a user's maps)."""
    datasets = {
        SAMPLES: D(np.asarray(samples).astype(np.float32), "1", "[realisation, sample, parameter]"),
        X: D(x, "uK_CMB^2", "observed data vectors, one per noise realisation"),
        X_PREDICTIVE: D(x_predictive, "uK_CMB^2", "posterior predictive data vectors"),
        CHI2_PREDICTIVE: D(chi2_predictive, "1", "x^T C^-1 x of the draws"),
        X_COVARIANCE_SIMS: D(x_covariance_sims, "uK_CMB^2", "simulations at the posterior mean"),
        **_summary_datasets(summary),
    }
    return io.write_product(
        path,
        NPE_OBSERVED,
        datasets,
        provenance,
        {
            "simulation": simulation,
            "compression": compression,
            "parameters": list(PARAMETERS),
            "chi2_observed": chi2_observed,
            "ppc_p_value": ppc_p_value,
            "nilc": str(nilc),
            **{f"true_{name}": float(v) for name, v in (truth or {}).items()},
        },
    )


def read_observed(path) -> io.Product:
    """Posteriors of an observed sky; attributes ``simulation``, ``chi2_observed``,
    ``ppc_p_value``."""
    expect = {
        SAMPLES: ((None, None, _NP), "1"),
        X: ((None, None), "uK_CMB^2"),
        CHI2_PREDICTIVE: ((None,), "1"),
        X_PREDICTIVE: ((None, None), "uK_CMB^2"),
        X_COVARIANCE_SIMS: ((None, None), "uK_CMB^2"),
        **_summary_expect(),
    }
    p = io.read_product(path, NPE_OBSERVED, expect)
    _check_attrs(p, ("simulation", "compression", "parameters", "chi2_observed", "ppc_p_value"))
    _check_parameters(p)
    _same_rows(p, p[SAMPLES].shape[0], (SAMPLES, X, *_summary_expect()), "realisations")
    if p[CHI2_PREDICTIVE].size == 0:
        raise DataError(f"{p.path}: no posterior predictive draws")
    return p


# ---------------------------------------------------------------- power-spectrum likelihood
def write_ps_likelihood(
    path,
    samples: np.ndarray,
    best_fit: np.ndarray,
    chi2_best: np.ndarray,
    acceptance: np.ndarray,
    theta: np.ndarray,
    summary: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
    *,
    sampled: Sequence[str],
    set_name: str,
    fixed: Iterable[str],
    foreground: str,
    sky: str,
    fsky: float,
    n_data: int,
) -> Path:
    """Posterior samples ``[dataset, sample, sampled]`` of the likelihood of a test set;
    ``summary``: ``r_mean``, ``r_hdi``, ``A_lens_mean``, ``A_lens_hdi``."""
    datasets = {
        SAMPLES: D(np.asarray(samples).astype(np.float32), "1", "[dataset, sample, sampled]"),
        BEST_FIT: D(best_fit, "1", "maximum posterior, [dataset, sampled]"),
        CHI2_BEST: D(chi2_best, "1", f"chi^2 at the best fit ({n_data} numbers)"),
        ACCEPTANCE: D(acceptance, "1", "mean acceptance fraction of the walkers"),
        THETA: D(theta, "1", "true parameters (prior.PARAMETERS order)"),
    }
    for q in ("r", "A_lens"):
        datasets[summary_mean(q)] = D(summary[f"{q}_mean"], "1", f"posterior mean of {q}")
        datasets[summary_hdi(q)] = D(summary[f"{q}_hdi"], "1", f"68% HDI of {q}")
    return io.write_product(
        path,
        PS_LIKELIHOOD,
        datasets,
        provenance,
        {
            "set": set_name,
            "fixed": list(fixed),
            "compression": "ps_likelihood",
            "parameters": list(PARAMETERS),
            "sampled": list(sampled),
            "foreground": foreground,
            "sky": sky,
            "fsky": fsky,
            "n_data": n_data,
        },
    )


def read_ps_likelihood(path) -> io.Product:
    """The likelihood's posteriors of a test set (attributes as ``npe_posteriors``)."""
    expect = {
        SAMPLES: ((None, None, None), "1"),
        BEST_FIT: ((None, None), "1"),
        CHI2_BEST: ((None,), "1"),
        ACCEPTANCE: ((None,), "1"),
        THETA: ((None, _NP), "1"),
        summary_mean("r"): ((None,), "1"),
        summary_hdi("r"): ((None, 2), "1"),
        summary_mean("A_lens"): ((None,), "1"),
        summary_hdi("A_lens"): ((None, 2), "1"),
    }
    p = io.read_product(path, PS_LIKELIHOOD, expect)
    _check_attrs(p, ("set", "fixed", "compression", "parameters", "sampled"))
    _check_parameters(p)
    _same_rows(p, p[SAMPLES].shape[0], expect, "datasets")
    if p[SAMPLES].shape[2] != len(p.attrs["sampled"]):
        raise DataError(
            f"{p.path}: samples of {p[SAMPLES].shape[2]} parameters, "
            f"{len(p.attrs['sampled'])} named in 'sampled'"
        )
    return p


def read_r_posteriors(path) -> io.Product:
    """An ``npe_posteriors`` or a ``ps_likelihood`` product (both have the r summaries)."""
    if _kind(path) == PS_LIKELIHOOD:
        return read_ps_likelihood(path)
    return read_posteriors(path)


def read_posteriors_or_observed(path) -> io.Product:
    """An ``npe_posteriors`` or an ``npe_observed`` product, whichever the file holds."""
    readers = {NPE_POSTERIORS: read_posteriors, NPE_OBSERVED: read_observed}
    kind = _kind(path)
    if kind not in readers:
        if kind is None:  # missing or unreadable: let the reader say which
            return read_posteriors(path)
        raise DataError(
            f"{path} holds a '{kind}' product, expected '{NPE_POSTERIORS}' or '{NPE_OBSERVED}'"
        )
    return readers[kind](path)


def _kind(path) -> str | None:
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("kind")
    except OSError:
        return None
    return kind.decode() if isinstance(kind, bytes) else kind


def _check_attrs(p: io.Product, names: Iterable[str]) -> None:
    missing = [a for a in names if a not in p.attrs]
    if missing:
        raise DataError(f"{p.path}: attribute(s) {', '.join(missing)} missing")


def _check_json(p: io.Product, name: str) -> None:
    try:
        value = json.loads(p.attrs[name])
    except (TypeError, ValueError) as err:
        raise DataError(f"{p.path}: attribute '{name}' is not JSON text: {err}") from err
    if not isinstance(value, dict):
        raise DataError(f"{p.path}: attribute '{name}' is not a JSON object")


def _check_dataset(p: io.Product, name: str, ndim: int | None, units: str) -> None:
    if name not in p.data:
        raise DataError(f"{p.path}: dataset '{name}' is missing")
    if ndim is not None and p[name].ndim != ndim:
        raise DataError(
            f"{p.path}: dataset '{name}' has shape {p[name].shape}, expected {ndim} axes"
        )
    if p.units[name] != units:
        raise DataError(f"{p.path}: dataset '{name}' is in '{p.units[name]}', expected '{units}'")


def _check_parameters(p: io.Product) -> None:
    got = [str(name) for name in p.attrs["parameters"]]
    if got != list(PARAMETERS):
        raise DataError(
            f"{p.path}: parameters {got} differ from this bmodesep's {list(PARAMETERS)}"
        )


def _same_rows(p: io.Product, n: int, names: Iterable[str], what: str) -> None:
    for name in names:
        if p[name].shape[0] != n:
            raise DataError(
                f"{p.path}: dataset '{name}' has {p[name].shape[0]} rows, expected {n} {what}"
            )


# ---------------------------------------------------------------- npe_yardstick
# npe/{compression}/yardstick.csv (:func:`~bmodesep.stages.npe.npe_yardstick`): how well
# plain regressions of a parameter on the data vector, trained on nested subsets of the
# training set, predict it on the coverage set (core/npe/yardstick.py)
YARDSTICK_COLUMNS = (
    "parameter",
    "method",
    "training_simulations",
    "test_simulations",
    "correlation",
    "rms_error",
)


def write_yardstick(path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """The yardstick table (:data:`YARDSTICK_COLUMNS`), one row per method and subset."""
    if not rows:
        raise ValueError("a yardstick table needs rows")
    return io.write_csv_atomic(path, rows, YARDSTICK_COLUMNS)


def read_yardstick(path) -> list[dict[str, str]]:
    return io.read_csv(path, YARDSTICK_COLUMNS)
