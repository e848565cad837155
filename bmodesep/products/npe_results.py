"""SBI result products: checked readers of posteriors, coverage and observed-sky analyses.

``npe_posteriors`` (``npe/{compression}/posteriors/{set}.h5``, written by
:func:`bmodesep.stages.npe.posterior_stage`): posterior samples of every data vector of a
test set, the true parameters and summaries (means and 68% HDIs of r, A_lens and the
spectral-index power sigma_beta).

``npe_coverage`` (``npe/{compression}/coverage.h5``, :func:`~bmodesep.stages.npe.coverage_stage`):
TARP expected coverage, joint (row 0) then per parameter, at each credibility level.

``npe_observed`` (``npe/{compression}/observed/{sim}.h5``,
:func:`~bmodesep.stages.npe.observed_stage`): posteriors of a simulation's NILC maps (one
per noise realisation) and the posterior predictive chi^2 check of the first.
"""

from __future__ import annotations

from collections.abc import Iterable

import h5py

from bmodesep.core.npe.prior import PARAMETERS
from bmodesep.errors import DataError
from bmodesep.products import io

NPE_POSTERIORS = "npe_posteriors"
NPE_COVERAGE = "npe_coverage"
NPE_OBSERVED = "npe_observed"

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
