"""Rules that pick one patch configuration from a grid search (kabalan2025 secs. 5.1, 6).

Every rule reads per-configuration summaries of the grid (:class:`Criteria`) and returns
the selected index and whether its condition could be met:

``variance``
    least sigma^2_CMB (eq. 9).  A deterministic foreground residual is the same in every
    noise realisation, so it never enters this variance: alone, the rule tolerates
    configurations with too few patches (our validation; the paper's sec. 6).
``threshold``
    the paper's sec. 6 rule: least sigma^2_CMB among the configurations whose systematic
    residual (the CMB reconstructed from the noiseless foregrounds, mean square over the
    zone) is at most ``relative_threshold`` x sigma^2_CMB.  None eligible: the least
    systematic / variance ratio, flagged (the paper does not say; falling back to eq. 9
    alone, as we first did, picked the coarsest configurations of GRF skies, where no
    configuration meets a 1e-2 threshold).
``variance_plus_systematic``
    least sigma^2_CMB + systematic residual, the mean squared error of the CMB map.
    Dominated by white noise, it accepts a systematic as large as the noise variance
    changes between configurations: a pixel-space rule that tolerates r bias.
``nll``
    least mean -ln L over the realisations.  More patches never fit worse, so the
    likelihood alone tends to the largest configurations (it has no complexity penalty).
``r_aware``
    least sigma^2_CMB among the configurations whose systematic BB residual, summed over
    the r-likelihood multipoles with the mode counts of eq. 15, is at most ``fraction`` of a
    reference: the statistical residual of the same configuration (``statistical``) or
    the tensor spectrum at ``reference_r`` (``tensor``; fraction f then bounds the r bias
    to about f x reference_r).  The quantity that biases r is the systematic BB power
    where r is measured, not a pixel-space mean square.  None eligible: the smallest
    ratio, flagged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bmodesep.errors import ConfigError, DataError

RULES = ("variance", "threshold", "variance_plus_systematic", "nll", "r_aware")
REFERENCES = ("statistical", "tensor")


class Criteria(NamedTuple):
    """Per-configuration summaries of a grid, arrays ``[n_config]``."""

    cmb_variance: np.ndarray  # eq. 9, uK^2
    systematic_residual: np.ndarray  # mean square of W(d_fg)_CMB, uK^2
    nll_mean: np.ndarray | None = None  # mean -ln L over realisations
    systematic_bb: np.ndarray | None = None  # bb_power of C_l(W(d_fg)) on r's multipoles
    statistical_bb: np.ndarray | None = None  # the same of <C_l(s - s_true)> - C_l(W(d_fg))
    tensor_bb: float | None = None  # the same of the r = 1 tensor spectrum

    def take(self, index) -> Criteria:
        """The criteria of the configurations ``index`` only (a screened search's)."""
        rows = {
            f: None if v is None else np.asarray(v)[index]
            for f, v in self._asdict().items()
            if f != "tensor_bb"
        }
        return self._replace(**rows)


class Rule(NamedTuple):
    """A selection rule and its settings (``compsep.selection`` of the config)."""

    name: str = "threshold"
    relative_threshold: float = 1.0e-2  # threshold: max systematic / sigma^2_CMB
    fraction: float = 0.1  # r_aware: max systematic BB / reference
    reference: str = "statistical"  # r_aware: statistical or tensor
    reference_r: float = 1.0e-3  # r_aware, tensor reference


def bb_power(cl: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """sum of ``modes`` x C_l over the elements (``modes``: f_sky sum (2l + 1) per element,
    the weights of eq. 15) for spectra ``[..., n]``: the BB power the r likelihood sees."""
    return np.sum(np.asarray(modes) * np.asarray(cl), axis=-1)


def select(criteria: Criteria, rule: Rule) -> tuple[int, bool]:
    """Index of the configuration ``rule`` selects, and whether its condition was met."""
    variance = np.asarray(criteria.cmb_variance, dtype=float)
    syst = np.asarray(criteria.systematic_residual, dtype=float)
    if variance.size == 0:
        raise ConfigError("no configuration to select from")
    if not (np.all(np.isfinite(variance)) and np.all(np.isfinite(syst))) or np.any(variance <= 0):
        raise DataError(
            "the grid's CMB variances must be finite and positive and its systematic "
            "residuals finite (a configuration fitted on fewer than 2 realisations?)"
        )
    if rule.name == "variance":
        return int(np.argmin(variance)), True
    if rule.name == "variance_plus_systematic":
        return int(np.argmin(variance + syst)), True
    if rule.name == "nll":
        if criteria.nll_mean is None:
            raise ConfigError("selection rule nll needs the mean -ln L of each configuration")
        return int(np.argmin(np.asarray(criteria.nll_mean, dtype=float))), True
    if rule.name == "threshold":
        ratio = syst / variance
        return _least_eligible(variance, ratio, rule.relative_threshold, ratio)
    if rule.name == "r_aware":
        if criteria.systematic_bb is None:
            raise ConfigError(
                "selection rule r_aware needs residual BB spectra: give grid_select the "
                "CMB spectra (the workflow does)"
            )
        if rule.reference not in REFERENCES:
            raise ConfigError(
                f"unknown r_aware reference '{rule.reference}' (known: {', '.join(REFERENCES)})"
            )
        if rule.reference == "tensor":
            if criteria.tensor_bb is None:
                raise ConfigError("the r_aware tensor reference needs the tensor spectrum")
            reference = rule.reference_r * float(criteria.tensor_bb) * np.ones_like(variance)
        else:
            if criteria.statistical_bb is None:
                raise ConfigError(
                    "the r_aware statistical reference needs the statistical residual BB "
                    "(a screen whose pass 1 ran under another rule: re-run it)"
                )
            reference = np.asarray(criteria.statistical_bb, dtype=float)
        ratio = np.asarray(criteria.systematic_bb, dtype=float) / reference
        return _least_eligible(variance, ratio, rule.fraction, ratio)
    raise ConfigError(f"unknown selection rule '{rule.name}' (known: {', '.join(RULES)})")


def _least_eligible(score, ratio, limit: float, fallback) -> tuple[int, bool]:
    """Least ``score`` where ``ratio <= limit``; none eligible: least ``fallback``, False."""
    eligible = ratio <= limit
    if not eligible.any():
        return int(np.argmin(fallback)), False
    return int(np.argmin(np.where(eligible, score, np.inf))), True
