"""Residual BB spectra against theory and the r likelihood of eq. 15 (kabalan2025 sec. 4).

``C_obs = r_sim C_tens + A_lens C_lens + C_res`` (the theory BB of the simulated sky plus
the total residual), model ``r C_tens + A_lens C_lens + C_stat`` with ``C_stat`` the
statistical residual floored at 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bmodesep.core.rlike import likelihood as rlike
from bmodesep.core.rlike import spectra
from bmodesep.core.simulate.cmb import CMBSpectra


class Theory(NamedTuple):
    """Theory spectra on the estimator's elements."""

    observed: np.ndarray  # BB of the simulated sky: r_sim C_tens + A_lens C_lens
    tensor: np.ndarray  # r = 1
    lensing: np.ndarray  # A_lens C_lens


def theory_spectra(
    camb: CMBSpectra,
    r_sim: float,
    a_lens: float,
    estimator: spectra.BBEstimator,
    transfer: np.ndarray | None = None,
) -> Theory:
    """The estimator's view of the simulated sky's BB, the r = 1 tensor and the lensing BB;
    ``transfer`` (beam x filter of the maps, ``[lmax+1]``) multiplies them squared."""
    top = estimator.lmax + 1

    def seen(cl):
        if transfer is None:
            return estimator.theory(cl)
        return estimator.theory(np.asarray(cl)[:top] * np.asarray(transfer)[:top] ** 2)

    return Theory(
        seen(camb.cl("BB", r_sim, a_lens)),
        seen(camb.tensor_r1[2]),
        seen(a_lens * camb.lensed_scalar[2]),
    )


def analyse_residuals(grid, theory: Theory, total, systematic, modes) -> rlike.RResult:
    """Eq. 15 for residual spectra: C_obs = theory + total, C_stat = max(total - syst, 0)."""
    c_stat = np.clip(total - systematic, 0.0, None)
    return rlike.analyse(
        grid, theory.observed + total, theory.tensor, theory.lensing, c_stat, modes
    )


def observation_spectra(
    cmb_observed: np.ndarray,
    cmb_bootstrap: np.ndarray,
    mask: np.ndarray,
    estimator: spectra.BBEstimator,
) -> tuple[np.ndarray, np.ndarray]:
    """Of maps that contain their noise: the BB spectrum of the CMB map reconstructed from
    the observation (``[2, npix]``), and the statistical residual ``<C_l(s^(n) - s_obs)>_n``
    of the fits of the bootstrap realisations around it (``[n, 2, npix]``)."""
    observed = estimator.measure(cmb_observed, mask)
    statistical = estimator.measure(cmb_bootstrap - cmb_observed[None], mask).mean(axis=0)
    return observed, statistical


def analyse_observation(grid, theory: Theory, observed, statistical, modes) -> rlike.RResult:
    """Eq. 15 on data: C_obs = the observation's BB (CMB, noise and foreground residual),
    model r C_tens + A_lens C_lens + C_stat, C_stat the bootstrap's (floored at 0)."""
    c_stat = np.clip(statistical, 0.0, None)
    return rlike.analyse(grid, observed, theory.tensor, theory.lensing, c_stat, modes)
