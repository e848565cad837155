"""Posterior validation: TARP expected coverage, highest-density intervals, predictive chi^2.

TARP (Lemos et al. 2023; duivenvoorden2025 eqs. 23-24): for test pairs (theta_i, x_i) and
posterior samples theta_ij of q(theta | x_i), with a reference point theta_r,i,
``f_i = mean_j [d(theta_ij, theta_r,i) < d(theta_i, theta_r,i)]`` and
``ECP(1 - alpha) = mean_i [f_i < 1 - alpha]``.  An exact posterior has ECP equal to the
credibility for every reference distribution.  Distances are Euclidean after scaling each
parameter to the range of the test parameters (the parameters' units differ by 10^4);
references are uniform over that hyperrectangle (the paper's default).  The figure's bands
are the bootstrap spread of the ECP curve over resampled test pairs (as in the paper); the
flag compares the curve with the binomial spread of an exact posterior's ECP.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bmodesep.errors import DataError


class Tarp(NamedTuple):
    credibility: np.ndarray  # 1 - alpha, [levels]
    ecp: np.ndarray  # [levels]
    ecp_std: np.ndarray  # bootstrap standard deviation, [levels]
    fractions: np.ndarray  # f_i, [n_tests]

    @property
    def deviation_sigma(self) -> float:
        """Largest |ECP - credibility| in units of its spread for an exact posterior.

        For an exact posterior ``N ECP(c)`` is binomial(N, c), so the unit is
        ``sqrt(c (1 - c) / N)``; levels 0 and 1 (no spread) are left out.
        """
        c = self.credibility
        inner = (c > 0) & (c < 1)
        null_std = np.sqrt(c[inner] * (1 - c[inner]) / self.fractions.size)
        return float(np.max(np.abs(self.ecp[inner] - c[inner]) / null_std))

    def flagged(self, n_sigma: float = 4.0) -> bool:
        """Whether the ECP curve leaves the +-n_sigma band of an exact posterior anywhere.

        The maximum runs over ~50 correlated levels: an exact posterior reaches about
        3.5 sigma now and then (measured over seeds), hence the default of 4.
        """
        return self.deviation_sigma > n_sigma


def reference_points(theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform draws over the hyperrectangle spanned by the test parameters."""
    lo, hi = theta.min(axis=0), theta.max(axis=0)
    return rng.uniform(lo, hi, size=theta.shape)


def coverage_fractions(samples: np.ndarray, theta: np.ndarray, references: np.ndarray):
    """``f_i`` of eq. 23 for samples ``[n, m, d]``, truths and references ``[n, d]``."""
    samples, theta, references = (np.asarray(a, float) for a in (samples, theta, references))
    if samples.ndim != 3 or theta.shape != (samples.shape[0], samples.shape[2]):
        raise DataError(
            f"TARP needs samples [n, m, d] and truths [n, d]; got {samples.shape}, {theta.shape}"
        )
    if references.shape != theta.shape:
        raise DataError(f"references {references.shape} do not match truths {theta.shape}")
    if not (np.all(np.isfinite(samples)) and np.all(np.isfinite(theta))):
        raise DataError("TARP input contains NaN or inf")
    scale = theta.max(axis=0) - theta.min(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    d_samples = np.linalg.norm((samples - references[:, None]) / scale, axis=-1)
    d_truth = np.linalg.norm((theta - references) / scale, axis=-1)
    return np.mean(d_samples < d_truth[:, None], axis=1)


def ecp_curve(fractions: np.ndarray, credibility: np.ndarray) -> np.ndarray:
    """Eq. 24: the fraction of tests with ``f_i < credibility``."""
    return np.mean(fractions[None, :] < credibility[:, None], axis=1)


def tarp(
    samples: np.ndarray,
    theta: np.ndarray,
    rng: np.random.Generator,
    levels: int = 51,
    bootstrap: int = 200,
    references: np.ndarray | None = None,
) -> Tarp:
    """TARP of the joint posterior (``d`` parameters) with bootstrap errors."""
    theta = np.asarray(theta, float)
    if theta.ndim != 2 or theta.shape[0] < 2:
        raise DataError(f"TARP needs at least two test pairs, got truths of shape {theta.shape}")
    refs = reference_points(theta, rng) if references is None else references
    f = coverage_fractions(samples, theta, refs)
    credibility = np.linspace(0.0, 1.0, levels)
    boot = np.stack(
        [ecp_curve(f[rng.integers(0, f.size, f.size)], credibility) for _ in range(bootstrap)]
    )
    return Tarp(credibility, ecp_curve(f, credibility), boot.std(axis=0), f)


def marginal_tarps(samples, theta, rng, **kwargs) -> list[Tarp]:
    """TARP of each one-dimensional marginal posterior."""
    return [
        tarp(samples[..., i : i + 1], theta[:, i : i + 1], rng, **kwargs)
        for i in range(theta.shape[1])
    ]


def hdi(samples: np.ndarray, level: float = 0.68) -> tuple[float, float]:
    """The shortest interval holding ``level`` of the one-dimensional samples."""
    s = np.sort(np.asarray(samples, float).ravel())
    k = int(np.ceil(level * s.size))
    if not 0 < k <= s.size:
        raise DataError(f"cannot take a {level} interval of {s.size} samples")
    widths = s[k - 1 :] - s[: s.size - k + 1]
    i = int(np.argmin(widths))
    return float(s[i]), float(s[i + k - 1])


def index_field_sigma(b: np.ndarray, gamma: np.ndarray, lmax: int = 200) -> np.ndarray:
    """Eq. 25: ``sigma_beta = sqrt(sum_{l=2}^{lmax} (2l+1) C_l^beta / 4 pi)``, C_l^beta of eq. 7."""
    b, gamma = np.broadcast_arrays(np.asarray(b, float), np.asarray(gamma, float))
    ell = np.arange(2, lmax + 1, dtype=float)
    power = np.sum((2 * ell + 1) * ell ** gamma[..., None], axis=-1)
    return np.sqrt(b * power / (4 * np.pi))


def sigma_beta(b_d, gamma_d, b_s, gamma_s) -> np.ndarray:
    """The spectral-index power of dust and synchrotron together, ``sqrt(sigma_d^2 +
    sigma_s^2)`` with each of :func:`index_field_sigma` (eq. 25)."""
    sig_d = index_field_sigma(b_d, gamma_d)
    sig_s = index_field_sigma(b_s, gamma_s)
    return np.sqrt(sig_d**2 + sig_s**2)


class PredictiveCheck(NamedTuple):
    chi2_observed: float
    chi2_predictive: np.ndarray
    p_value: float  # fraction of predictive chi^2 at least as large as the observed one


def predictive_chi2(
    x_observed: np.ndarray, x_predictive: np.ndarray, x_covariance_sims: np.ndarray
) -> PredictiveCheck:
    """Sec. III.3: ``chi2 = x^T C^-1 x`` of the data against posterior-predictive draws.

    ``C`` is the covariance of a separate set of simulations (at least ``len(x) + 2`` of
    them, so the estimate is invertible); its accuracy does not matter because the same
    statistic is applied to the data and to the draws.
    """
    x_observed = np.asarray(x_observed, float)
    sims = np.asarray(x_covariance_sims, float)
    pred = np.asarray(x_predictive, float)
    n = x_observed.size
    if sims.ndim != 2 or sims.shape[1] != n or pred.ndim != 2 or pred.shape[1] != n:
        raise DataError(
            f"predictive check: data vector of length {n}, covariance sims {sims.shape}, "
            f"predictive draws {pred.shape}"
        )
    if sims.shape[0] < n + 2:
        raise DataError(f"{sims.shape[0]} covariance simulations for {n} numbers: need {n + 2}")
    cov = np.cov(sims, rowvar=False)
    chol = np.linalg.cholesky(cov)

    def chi2(x):
        z = np.linalg.solve(chol, np.atleast_2d(x).T)
        return np.sum(z**2, axis=0)

    observed = float(chi2(x_observed)[0])
    predictive = chi2(pred)
    return PredictiveCheck(observed, predictive, float(np.mean(predictive >= observed)))
