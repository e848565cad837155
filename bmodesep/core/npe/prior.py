"""The prior of duivenvoorden2025 Table 1: 13 independent (truncated / half) normals.

``N(mu, sigma)`` is a normal, ``N[a,b](mu, sigma)`` one truncated to [a, b] (renormalised)
and ``N[0,inf)(0, sigma)`` a half-normal.  ``widened`` gives the variant used for the
PySM tests (sec. III.3): wider A_d, alpha_d, beta_d, A_s, alpha_s, beta_s.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bmodesep.errors import ConfigError

PARAMETERS = (
    "r",
    "A_lens",
    "A_d",
    "alpha_d",
    "beta_d",
    "B_d",
    "gamma_d",
    "A_s",
    "alpha_s",
    "beta_s",
    "B_s",
    "gamma_s",
    "rho_ds",
)
UNITS = {"A_d": "uK^2", "A_s": "uK^2"}


class Normal(NamedTuple):
    """A normal ``N(mu, sigma)`` truncated to ``[low, high]`` (infinite bounds allowed)."""

    mu: float
    sigma: float
    low: float = -np.inf
    high: float = np.inf

    @property
    def _ab(self) -> tuple[float, float]:
        return (self.low - self.mu) / self.sigma, (self.high - self.mu) / self.sigma

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        from scipy import special  # here: scipy.stats costs ~1 s of every command's start

        a, b = self._ab
        # inverse CDF between the bounds: exact for any truncation
        lo, hi = special.ndtr(a), special.ndtr(b)
        u = rng.uniform(lo, hi, size=n)
        return self.mu + self.sigma * special.ndtri(u)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        from scipy import stats

        a, b = self._ab
        x = np.asarray(x, float)
        inside = (x >= self.low) & (x <= self.high)
        logp = stats.truncnorm.logpdf(x, a, b, loc=self.mu, scale=self.sigma)
        return np.where(inside, logp, -np.inf)

    def mean(self) -> float:
        from scipy import stats

        a, b = self._ab
        return float(stats.truncnorm.mean(a, b, loc=self.mu, scale=self.sigma))


TABLE1 = {
    "r": Normal(0.0, 0.02, 0.0),  # half-normal
    "A_lens": Normal(0.4, 0.2, 0.0, 10.0),
    "A_d": Normal(28.0, 4.0, 12.0, 44.0),
    "alpha_d": Normal(-0.2, 0.2),
    "beta_d": Normal(1.59, 0.2),
    "B_d": Normal(0.3, 0.5, 0.0, 1.59),
    "gamma_d": Normal(-4.0, 1.0, -6.0, -2.0),
    "A_s": Normal(1.0, 1.5, 0.0, 20.0),
    "alpha_s": Normal(-0.7, 0.2),
    "beta_s": Normal(-3.0, 0.2),
    "B_s": Normal(0.3, 0.5, 0.0, 0.5),
    "gamma_s": Normal(-4.0, 1.0, -6.0, -2.0),
    "rho_ds": Normal(0.0, 0.2),
}
WIDENED = dict(
    TABLE1,
    A_d=Normal(28.0, 24.0, 12.0, 88.0),
    alpha_d=Normal(-0.2, 0.6),
    beta_d=Normal(1.59, 0.4),
    A_s=Normal(1.0, 3.0, 0.0, 20.0),
    alpha_s=Normal(-0.7, 0.4),
    beta_s=Normal(-3.0, 0.4),
)


class Prior(NamedTuple):
    """Independent one-dimensional priors in the order of ``PARAMETERS``."""

    marginals: tuple[Normal, ...]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([m.sample(n, rng) for m in self.marginals], axis=-1)

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        if theta.shape[-1] != len(self.marginals):
            raise ConfigError(
                f"theta has {theta.shape[-1]} parameters, the prior {len(self.marginals)}"
            )
        return sum(m.log_prob(theta[:, i]) for i, m in enumerate(self.marginals))

    @property
    def low(self) -> np.ndarray:
        return np.array([m.low for m in self.marginals])

    @property
    def high(self) -> np.ndarray:
        return np.array([m.high for m in self.marginals])


def prior(variant: str = "table1") -> Prior:
    """``table1`` (the paper's training prior) or ``widened`` (for PySM skies)."""
    tables = {"table1": TABLE1, "widened": WIDENED}
    if variant not in tables:
        raise ConfigError(f"unknown prior '{variant}' (known: {', '.join(tables)})")
    return Prior(tuple(tables[variant][p] for p in PARAMETERS))
