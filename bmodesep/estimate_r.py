"""Residual BB spectra and the r likelihood per simulation and method (kabalan2025 sec. 4).

    python -m bmodesep.estimate_r --config C --simulation S --method M --sky SKY
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

import sys
from typing import NamedTuple

import numpy as np

from bmodesep import harmonics, io, rlike, sim_io, spectra
from bmodesep.cli import config_from_args, run_cli, stage_parser
from bmodesep.config import simulation_config
from bmodesep.errors import DataError

D = io.Dataset


def zone_maps(fit: io.Product, npix: int):
    """Full-sky reconstructed CMB ``[n, 2, npix]``, W(d_fg) CMB ``[2, npix]`` and the zone mask."""
    pix = fit["pixels"]
    cmb = np.zeros((fit["cmb_qu"].shape[0], 2, npix))
    cmb[:, :, pix] = fit["cmb_qu"]
    syst = np.zeros((2, npix))
    syst[:, pix] = fit["systematic_components"][0]
    mask = np.zeros(npix)
    mask[pix] = 1.0
    return cmb, syst, mask


def bb_estimator(stage, nside: int) -> spectra.BBEstimator:
    """The BB spectrum estimator configured by ``rlike`` for maps at ``nside``."""
    rl = stage["rlike"]
    lmax = rl["lmax"] or 2 * nside
    if lmax > 3 * nside - 1:
        raise DataError(f"rlike.lmax {lmax} exceeds 3 nside - 1 = {3 * nside - 1}")
    if rl["lmin"] > lmax:
        raise DataError(f"rlike.lmin {rl['lmin']} exceeds lmax {lmax}")
    width = rl["bin_width"] if rl["spectrum"] == "master" else None
    return spectra.BBEstimator(rl["lmin"], lmax, width)


class Theory(NamedTuple):
    """Theory spectra on the estimator's elements."""

    observed: np.ndarray  # BB of the simulated sky: r_sim C_tens + A_lens C_lens
    tensor: np.ndarray  # r = 1
    lensing: np.ndarray  # A_lens C_lens


def theory_spectra(stage, spectra_path, estimator: spectra.BBEstimator) -> Theory:
    camb = sim_io.read_spectra(spectra_path, estimator.lmax)
    r_sim, a_lens = stage["cmb"]["r"], stage["cmb"]["a_lens"]
    return Theory(
        estimator.theory(camb.cl("BB", r_sim, a_lens)),
        estimator.theory(camb.tensor_r1[2]),
        estimator.theory(a_lens * camb.lensed_scalar[2]),
    )


def analyse_residuals(grid, theory: Theory, total, systematic, modes) -> rlike.RResult:
    """Eq. 15 for residual spectra: C_obs = theory + total, C_stat = max(total - syst, 0)."""
    c_stat = np.clip(total - systematic, 0.0, None)
    return rlike.analyse(
        grid, theory.observed + total, theory.tensor, theory.lensing, c_stat, modes
    )


def run(config, name: str, method: str, sky_path, spectra_path, fit_paths, output) -> None:
    stage = simulation_config(config, name, with_compsep=True)
    sim = stage["simulations"][name]
    nside = sim["nside"]
    rl = stage["rlike"]
    est = bb_estimator(stage, nside)
    theory = theory_spectra(stage, spectra_path, est)
    product, _ = sim_io.read_sky(sky_path, nside)
    cmb_true = product["cmb/qu"]
    grid = np.linspace(rl["r_min"], rl["r_max"], rl["r_points"])
    npix = harmonics.npix(nside)
    zones, configurations, fskies = [], [], []
    total, syst, per_real, total_power = [], [], [], []
    for path in fit_paths:
        fit = io.read_product(path, "compsep_fit")
        if fit.attrs["method"] != method:
            raise DataError(f"{path} holds method '{fit.attrs['method']}', expected '{method}'")
        cmb_hat, syst_map, mask = zone_maps(fit, npix)
        res = spectra.residual_spectra(cmb_hat, cmb_true, syst_map, mask, est)
        zones.append(fit.attrs["zone"])
        configurations.append(np.asarray(fit.attrs["configuration"]))
        fskies.append(spectra.fsky(mask))
        total.append(res.total)
        syst.append(res.systematic)
        per_real.append(est.measure(cmb_hat - cmb_true[None], mask))
        total_power.append(est.measure(cmb_hat, mask).sum(axis=1))
    (c_res, fsky_union), (c_syst, _) = (
        rlike.combine_zones(total, fskies),
        rlike.combine_zones(syst, fskies),
    )
    modes = est.modes(fsky_union)
    # C_stat = C_total - C_syst: with few realisations the cross term of systematic and
    # noise residuals makes it negative at some l; it is floored at zero there (the
    # paper's code takes the absolute value) and the number of such l recorded
    clipped = int(np.sum(c_res - c_syst < 0))
    c_stat = np.clip(c_res - c_syst, 0.0, None)
    if clipped:
        print(
            f"[bmodesep] C_stat < 0 at {clipped} of {c_res.size} spectrum elements: floored at 0",
            flush=True,
        )
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
        analyse_residuals(grid, theory, t, s, est.modes(f))
        for t, s, f in zip(total, syst, fskies, strict=True)
    ]
    zone_curves = np.stack([z.neg2lnl for z in zone_results])
    at_edge = not grid[1] < combined.r_hat < grid[-2]
    if at_edge:
        print(
            f"[bmodesep] warning: r-hat {combined.r_hat:.3g} lies at the edge of the r grid "
            f"[{grid[0]}, {grid[-1]}]: widen rlike.r_min / rlike.r_max",
            flush=True,
        )
    print(
        f"[bmodesep] {name} {method}: r-hat {combined.r_hat:.2e} "
        f"[{combined.r_low:.2e}, {combined.r_high:.2e}], sigma(r) "
        f"{combined.sigma_curvature:.2e} over {len(zones)} zone(s), {rl['spectrum']} spectra",
        flush=True,
    )
    u = est.units
    data = {
        "ell": D(est.ell, "1", "multipoles, or band centres of master band powers"),
        "zones/fsky": D(np.array(fskies), "1"),
        "zones/configuration": D(np.stack(configurations), "1", "patches of beta_d, T_d, beta_s"),
        "zones/r_hat": D(np.array([z.r_hat for z in zone_results]), "1"),
        "zones/total_residual": D(np.stack(total), u, "one row per zone"),
        "zones/systematic_residual": D(np.stack(syst), u),
        "zones/likelihood": D(np.exp(-0.5 * zone_curves), "1", "L(r)/L_max per zone"),
        "zones/total_bb_power": D(
            np.stack(total_power), u, "sum over the spectrum of each reconstructed CMB"
        ),
        "cl_total_residual": D(c_res, u),
        "cl_systematic_residual": D(c_syst, u),
        "cl_statistical_residual": D(c_stat, u),
        "cl_tensor_r1": D(theory.tensor, u),
        "cl_lensing": D(theory.lensing, u),
        "cl_observed": D(theory.observed + c_res, u),
        "r_grid": D(grid, "1"),
        "likelihood": D(
            np.exp(-0.5 * combined.neg2lnl),
            "1",
            "L(r)/L_max for the union of zones; 0 where C_model <= 0",
        ),
        "zones_mean_likelihood": D(
            np.exp(-0.5 * rlike.average_likelihood(zone_curves)),
            "1",
            "mean of the zones' normalised likelihoods",
        ),
        "r_hat_per_realisation": D(r_hats, "1"),
    }
    io.write_product(
        output,
        "r_likelihood",
        data,
        io.provenance(stage, sim["seed"], "r_likelihood"),
        {
            "method": method,
            "spectrum": rl["spectrum"],
            "zones": zones,
            "fsky_union": fsky_union,
            "r_hat": combined.r_hat,
            "r_low": combined.r_low,
            "r_high": combined.r_high,
            "sigma_r": combined.sigma_curvature,
            "r_simulated": stage["cmb"]["r"],
            "r_hat_at_grid_edge": at_edge,
            "stat_residual_floored_multipoles": clipped,
        },
    )


def _main(argv=None) -> None:
    parser = stage_parser(
        "python -m bmodesep.estimate_r",
        __doc__,
        ("simulation", "method", "sky", "spectra", "output"),
    )
    parser.add_argument("--fits", nargs="+", required=True)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    run(config, args.simulation, args.method, args.sky, args.spectra, args.fits, args.output)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
