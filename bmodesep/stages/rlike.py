"""Residual BB spectra and the r likelihood, kabalan2025 sec. 4 (``workflow/rules/rlike.smk``).


    bmodesep rlike r_likelihood --config C --simulation S --method M --sky SKY
        --spectra CAMB --fits Z1.h5 Z2.h5 ... --output F

For each zone's fit: residual spectra (eqs. 11-13) of the reconstructed CMB with the
paper's f_sky correction; the observed spectrum is the theory BB of the simulated sky
plus the total residual, ``C_obs = r_sim C_tens + A_lens C_lens + C_res`` (the paper's
code uses ``C_lens + C_res`` at r = 0), avoiding the E-to-B leakage of the CMB itself;
the model of eq. 15 is ``r C_tens + A_lens C_lens + C_stat`` (C_stat floored at 0).
Zones are combined as one region (f_sky-weighted spectra, f_sky of the union).
``rlike.spectrum: master`` replaces the f_sky-corrected C_l by MASTER band powers of D_l
(all spectra, theory included, binned alike; eq. 15 summed over bands with
f_sky sum (2l + 1) modes each).  Per-zone r-hats are kept for Fig. 13;
per-realisation r-hat uses
``C_obs^(n) = C_BB + C_l(s^(n) - s_true)``.
"""

from __future__ import annotations

import logging

import numpy as np

from bmodesep.config import simulation_config, simulation_lmax
from bmodesep.core import harmonics
from bmodesep.core.rlike import likelihood as rlike
from bmodesep.core.rlike.residuals import (
    method_likelihood,
    observation_likelihood,
    theory_spectra,
)
from bmodesep.core.simulate import common_resolution
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import compsep as fit_product
from bmodesep.products import io, sims
from bmodesep.products import rlike as products
from bmodesep.settings import bb_estimator, r_grid, resolve_instrument
from bmodesep.steps import File, Name, step

log = logging.getLogger(__name__)


def zone_maps(fit: io.Product, npix: int):
    """Full-sky reconstructed CMB ``[n, 2, npix]``, W(d_fg) CMB ``[2, npix]`` and the zone mask."""
    pix = fit[fit_product.PIXELS]
    cmb = np.zeros((fit[fit_product.CMB_QU].shape[0], 2, npix))
    cmb[:, :, pix] = fit[fit_product.CMB_QU]
    syst = np.zeros((2, npix))
    syst[:, pix] = fit[fit_product.SYSTEMATIC_COMPONENTS][0]
    mask = np.zeros(npix)
    mask[pix] = 1.0
    return cmb, syst, mask


@step
def r_likelihood(
    config,
    simulation: Name,
    method: Name,
    sky: File | None,
    spectra: File,
    fits: list[File],
    output: File,
) -> None:
    """Rule r_likelihood: residual spectra of one method's fits in every zone, and L(r)."""
    name, sky_path, spectra_path, fit_paths = simulation, sky, spectra, fits
    if name not in config["compsep"]["simulations"]:
        raise ConfigError(f"simulation '{name}' is not in compsep.simulations")
    stage = simulation_config(config, name, with_compsep=True)
    sim = stage["simulations"][name]
    nside = sim["nside"]
    rl = stage["rlike"]
    est = bb_estimator(stage, nside)
    camb = sims.read_spectra(spectra_path, est.lmax)
    inst, lmax = resolve_instrument(stage, sim["instrument"]), simulation_lmax(sim)
    transfer = common_resolution.map_transfer(inst, lmax)
    theory = theory_spectra(camb, stage["cmb"]["r"], stage["cmb"]["a_lens"], est, transfer)
    if fit_product.observed(fit_product.read_compsep_fit(fit_paths[0], nside)):
        _observation_likelihood(stage, name, method, est, theory, fit_paths, output)
        return
    if sky_path is None:
        raise ConfigError(f"simulation {name}: the residual spectra need --sky (the CMB)")
    product, _ = sims.read_sky(sky_path, nside)
    # as the separated maps carry it (at the common resolution of beams and splits)
    cmb_true = common_resolution.cmb_as_seen(
        product[sims.CMB_ALM], product[sims.CMB_QU], inst, nside, lmax
    )
    grid = r_grid(stage)
    fits = [_method_fit(path, method, nside) for path in fit_paths]
    npix = harmonics.npix(nside)
    result = method_likelihood(grid, theory, cmb_true, (zone_maps(f, npix) for f in fits), est)
    if result.floored:
        log.info(
            "C_stat < 0 at %d of %d spectrum elements: floored at 0",
            result.floored,
            result.total.size,
        )
    zones = [f.attrs["zone"] for f in fits]
    combined = result.combined
    zone_curves = np.stack([z.neg2lnl for z in result.zone_results])
    at_edge = _report(f"{name} {method} ({rl['spectrum']} spectra)", combined, grid, len(zones))
    products.write_r_likelihood(
        output,
        products.Spectra(
            ell=est.ell,
            total_residual=result.total,
            systematic_residual=result.systematic,
            statistical_residual=result.statistical,
            tensor_r1=theory.tensor,
            lensing=theory.lensing,
            observed=theory.observed + result.total,
            units=est.units,
        ),
        products.ZoneResults(
            fsky=result.zone_fsky,
            configuration=np.stack([np.asarray(f.attrs["configuration"]) for f in fits]),
            r_hat=np.array([z.r_hat for z in result.zone_results]),
            total_residual=result.zone_total,
            systematic_residual=result.zone_systematic,
            likelihood=np.exp(-0.5 * zone_curves),
            total_bb_power=result.zone_power,
        ),
        grid,
        np.exp(-0.5 * combined.neg2lnl),
        np.exp(-0.5 * rlike.average_likelihood(zone_curves)),
        result.r_hats,
        io.provenance(stage, sim["seed"], "r_likelihood"),
        {
            "method": method,
            "spectrum": rl["spectrum"],
            "zones": zones,
            "fsky_union": result.fsky_union,
            "r_hat": combined.r_hat,
            "r_low": combined.r_low,
            "r_high": combined.r_high,
            "sigma_r": combined.sigma_curvature,
            "r_simulated": stage["cmb"]["r"],
            "r_hat_at_grid_edge": at_edge,
            "stat_residual_floored_multipoles": result.floored,
        },
    )


def _method_fit(path, method: str, nside: int) -> io.Product:
    """A zone's fit product, checked to hold ``method``."""
    fit = fit_product.read_compsep_fit(path, nside)
    if fit.attrs["method"] != method:
        raise DataError(f"{path} holds method '{fit.attrs['method']}', expected '{method}'")
    return fit


def _report(label: str, combined, grid, n_zones: int) -> bool:
    """Log r-hat and its interval; warn (and return True) where r-hat is at the grid's edge."""
    at_edge = not grid[1] < combined.r_hat < grid[-2]
    if at_edge:
        log.warning(
            "r-hat %.3g lies at the edge of the r grid [%s, %s]: widen rlike.r_min / rlike.r_max",
            combined.r_hat,
            grid[0],
            grid[-1],
        )
    log.info(
        "%s: r-hat %.2e [%.2e, %.2e], sigma(r) %.2e over %d zone(s)",
        label,
        combined.r_hat,
        combined.r_low,
        combined.r_high,
        combined.sigma_curvature,
        n_zones,
    )
    return at_edge


def _observation_zones(fit_paths, method: str, nside: int):
    """Zone names, patch counts and ``(cmb_observed, cmb_bootstrap, mask)`` full-sky maps
    of an observation's fits, one per zone."""
    npix = harmonics.npix(nside)
    zones, configurations, maps = [], [], []
    for path in fit_paths:
        fit = fit_product.read_compsep_fit(path, nside)
        if fit.attrs["method"] != method or not fit_product.observed(fit):
            raise DataError(f"{path}: not the fit of method '{method}' of an observation")
        cmb_hat, _, mask = zone_maps(fit, npix)
        cmb_obs = np.zeros((2, npix))
        cmb_obs[:, fit[fit_product.PIXELS]] = fit[fit_product.COMPONENTS][0]
        zones.append(fit.attrs["zone"])
        configurations.append(np.asarray(fit.attrs["configuration"]))
        maps.append((cmb_obs, cmb_hat, mask))
    return zones, configurations, maps


def _observation_likelihood(stage, name, method, est, theory, fit_paths, output) -> None:
    """L(r) of maps that contain their noise: per zone, the BB of the observation's CMB
    map and the statistical residual of the bootstrap around its fit
    (:func:`bmodesep.core.rlike.residuals.observation_spectra`); zones combined as one
    region.  The foreground residual is unknown without truth: it stays in C_obs."""
    grid = r_grid(stage)  # rlike.spectrum is master (config check)
    zones, configurations, maps = _observation_zones(
        fit_paths, method, stage["simulations"][name]["nside"]
    )
    res = observation_likelihood(grid, theory, maps, est)
    combined, c_obs, c_stat = res.combined, res.observed, res.statistical
    at_edge = _report(f"{name} {method} (observation)", combined, grid, len(zones))
    zone_curves = np.stack([z.neg2lnl for z in res.zone_results])
    products.write_r_likelihood(
        output,
        products.Spectra(
            ell=est.ell,
            total_residual=c_stat,
            systematic_residual=None,  # no foreground truth
            statistical_residual=c_stat,
            tensor_r1=theory.tensor,
            lensing=theory.lensing,
            observed=c_obs,
            units=est.units,
        ),
        products.ZoneResults(
            fsky=res.zone_fsky,
            configuration=np.stack(configurations),
            r_hat=np.array([z.r_hat for z in res.zone_results]),
            total_residual=res.zone_statistical,
            systematic_residual=None,
            likelihood=np.exp(-0.5 * zone_curves),
            total_bb_power=res.zone_power,
        ),
        grid,
        np.exp(-0.5 * combined.neg2lnl),
        np.exp(-0.5 * rlike.average_likelihood(zone_curves)),
        np.array([combined.r_hat]),
        io.provenance(stage, stage["simulations"][name]["seed"], "r_likelihood"),
        {
            "method": method,
            "spectrum": stage["rlike"]["spectrum"],
            "zones": zones,
            "fsky_union": res.fsky_union,
            "r_hat": combined.r_hat,
            "r_low": combined.r_low,
            "r_high": combined.r_high,
            "sigma_r": combined.sigma_curvature,
            "r_simulated": float("nan"),
            "r_hat_at_grid_edge": at_edge,
            "stat_residual_floored_multipoles": int(np.sum(c_stat < 0)),
            "contains_noise": True,
        },
    )
