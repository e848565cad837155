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


class ObservationLikelihood(NamedTuple):
    """Eq. 15 of an observation over its zones (one row per zone where ``zone_``)."""

    observed: np.ndarray  # C_obs of the union of zones
    statistical: np.ndarray  # C_stat of the union
    fsky_union: float
    combined: rlike.RResult
    zone_observed: np.ndarray  # [zone, n]
    zone_statistical: np.ndarray  # [zone, n]
    zone_fsky: np.ndarray  # [zone]
    zone_results: list[rlike.RResult]
    zone_power: np.ndarray  # [zone, realisation] total BB power of each bootstrap CMB map


def observation_likelihood(
    grid, theory: Theory, zones, estimator: spectra.BBEstimator
) -> ObservationLikelihood:
    """L(r) of maps that contain their noise: per zone ``(cmb_observed [2, npix],
    cmb_bootstrap [n, 2, npix], mask [npix])``, the spectra of
    :func:`observation_spectra`, then the zones combined as one region (f_sky-weighted
    spectra, f_sky of the union) and :func:`analyse_observation`."""
    observed, stat, fskies, power = [], [], [], []
    for cmb_obs, cmb_boot, mask in zones:
        c_obs, c_stat = observation_spectra(cmb_obs, cmb_boot, mask, estimator)
        observed.append(c_obs)
        stat.append(c_stat)
        fskies.append(spectra.fsky(mask))
        power.append(estimator.measure(cmb_boot, mask).sum(axis=1))
    (c_obs, fsky_union), (c_stat, _) = (
        rlike.combine_zones(observed, fskies),
        rlike.combine_zones(stat, fskies),
    )
    return ObservationLikelihood(
        c_obs,
        c_stat,
        fsky_union,
        analyse_observation(grid, theory, c_obs, c_stat, estimator.modes(fsky_union)),
        np.stack(observed),
        np.stack(stat),
        np.array(fskies),
        [
            analyse_observation(grid, theory, o, t, estimator.modes(f))
            for o, t, f in zip(observed, stat, fskies, strict=True)
        ],
        np.stack(power),
    )


class MethodLikelihood(NamedTuple):
    """Eq. 15 of one method's simulated fits over its zones (one row per zone where
    ``zone_``)."""

    total: np.ndarray  # C_res of the union of zones
    systematic: np.ndarray  # C_syst of the union
    statistical: np.ndarray  # C_stat = max(C_res - C_syst, 0)
    floored: int  # spectrum elements where C_res - C_syst < 0 (floored at 0)
    fsky_union: float
    combined: rlike.RResult
    r_hats: np.ndarray  # [realisation] r-hat of C_obs^(n) = theory + C_l(s^(n) - s_true)
    zone_fsky: np.ndarray  # [zone]
    zone_total: np.ndarray  # [zone, n]
    zone_systematic: np.ndarray  # [zone, n]
    zone_results: list[rlike.RResult]
    zone_power: np.ndarray  # [zone, realisation] total BB power of each reconstructed map


def method_likelihood(
    grid, theory: Theory, cmb_true: np.ndarray, zones, estimator: spectra.BBEstimator
) -> MethodLikelihood:
    """L(r) of a method's fits of simulations: per zone ``(cmb_hat [n, 2, npix],
    systematic [2, npix] (W applied to the foregrounds alone), mask [npix])`` against the
    true CMB ``[2, npix]`` as the maps carry it.  Residual spectra (eqs. 11-13) per zone,
    the zones combined as one region (f_sky-weighted spectra, f_sky of the union), then
    :func:`analyse_residuals`; C_stat = C_res - C_syst can be negative at some l with few
    realisations (the cross term of systematic and noise residuals): floored at zero there
    (the paper's code takes the absolute value), and their number returned."""
    fskies, total, syst, per_real, power = [], [], [], [], []
    for cmb_hat, syst_map, mask in zones:
        res = spectra.residual_spectra(cmb_hat, cmb_true, syst_map, mask, estimator)
        fskies.append(spectra.fsky(mask))
        total.append(res.total)
        syst.append(res.systematic)
        per_real.append(estimator.measure(cmb_hat - cmb_true[None], mask))
        power.append(estimator.measure(cmb_hat, mask).sum(axis=1))
    (c_res, fsky_union), (c_syst, _) = (
        rlike.combine_zones(total, fskies),
        rlike.combine_zones(syst, fskies),
    )
    modes = estimator.modes(fsky_union)
    floored = int(np.sum(c_res - c_syst < 0))
    c_stat = np.clip(c_res - c_syst, 0.0, None)
    combined = analyse_residuals(grid, theory, c_res, c_syst, modes)
    per_real_union = rlike.combine_zones(per_real, fskies)[0]
    r_hats = np.array(
        [
            rlike.analyse(
                grid, theory.observed + c, theory.tensor, theory.lensing, c_stat, modes
            ).r_hat
            for c in per_real_union
        ]
    )
    zone_results = [
        analyse_residuals(grid, theory, t, s, estimator.modes(f))
        for t, s, f in zip(total, syst, fskies, strict=True)
    ]
    return MethodLikelihood(
        c_res,
        c_syst,
        c_stat,
        floored,
        fsky_union,
        combined,
        r_hats,
        np.array(fskies),
        np.stack(total),
        np.stack(syst),
        zone_results,
        np.stack(power),
    )
