"""Residual BB spectra and the r likelihood per simulation and method (kabalan2025 sec. 4).

    python -m bmodesep.estimate_r --config C --simulation S --method M --sky SKY
        --spectra CAMB --fits Z1.h5 Z2.h5 ... --output F

For each zone's fit: residual spectra (eqs. 11-13) of the reconstructed CMB with the
paper's f_sky correction; the observed spectrum is the theory BB of the simulated sky
plus the total residual, ``C_obs = r_sim C_tens + A_lens C_lens + C_res`` (the paper's
code uses ``C_lens + C_res`` at r = 0), avoiding the E-to-B leakage of the CMB itself;
the model of eq. 15 is ``r C_tens + A_lens C_lens + C_stat`` (C_stat floored at 0).
Zones are combined as one region (f_sky-weighted spectra, f_sky of the union);
per-realisation r-hat uses
``C_obs^(n) = C_BB + C_l(s^(n) - s_true)``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bmodesep import harmonics, io, rlike, sim_io, spectra
from bmodesep.cli import add_config_arguments, config_from_args, run_cli
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


def run(config, name: str, method: str, sky_path, spectra_path, fit_paths, output) -> None:
    stage = simulation_config(config, name, with_compsep=True)
    sim = stage["simulations"][name]
    nside = sim["nside"]
    rl = stage["rlike"]
    lmax = rl["lmax"] or 2 * nside
    if lmax > 3 * nside - 1:
        raise DataError(f"rlike.lmax {lmax} exceeds 3 nside - 1 = {3 * nside - 1}")
    camb = sim_io.read_spectra(spectra_path, lmax)
    product, _ = sim_io.read_sky(sky_path, nside)
    cmb_true = product["cmb/qu"]
    r_sim, a_lens = stage["cmb"]["r"], stage["cmb"]["a_lens"]
    ell = np.arange(rl["lmin"], lmax + 1)
    c_tens = camb.tensor_r1[2, ell]
    c_lens = a_lens * camb.lensed_scalar[2, ell]
    c_theory = camb.cl("BB", r_sim, a_lens)[ell]
    grid = np.linspace(rl["r_min"], rl["r_max"], rl["r_points"])
    npix = harmonics.npix(nside)
    zones, per_zone, fskies = [], {}, []
    for path in fit_paths:
        fit = io.read_product(path, "compsep_fit")
        if fit.attrs["method"] != method:
            raise DataError(f"{path} holds method '{fit.attrs['method']}', expected '{method}'")
        zone = fit.attrs["zone"]
        cmb_hat, syst, mask = zone_maps(fit, npix)
        res = spectra.residual_spectra(cmb_hat, cmb_true, syst, mask, lmax)
        per_real = spectra.bb_spectrum(cmb_hat - cmb_true[None], mask, lmax)[:, ell]
        total_power = spectra.bb_spectrum(cmb_hat, mask, lmax)[:, ell].sum(axis=1)
        zones.append(zone)
        fskies.append(spectra.fsky(mask))
        per_zone[zone] = (res, per_real, total_power)
    total = [per_zone[z][0].total[ell] for z in zones]
    syst = [per_zone[z][0].systematic[ell] for z in zones]
    (c_res, fsky_union), (c_syst, _) = (
        rlike.combine_zones(total, fskies),
        rlike.combine_zones(syst, fskies),
    )
    # C_stat = C_total - C_syst: with few realisations the cross term of systematic and
    # noise residuals makes it negative at some l; it is floored at zero there (the
    # paper's code takes the absolute value) and the number of such l recorded
    c_stat_raw = c_res - c_syst
    clipped = int(np.sum(c_stat_raw < 0))
    c_stat = np.clip(c_stat_raw, 0.0, None)
    if clipped:
        print(
            f"[bmodesep] C_stat < 0 at {clipped} of {ell.size} multipoles: floored at 0", flush=True
        )
    combined = rlike.analyse(grid, c_theory + c_res, c_tens, c_lens, c_stat, ell, fsky_union)
    per_real = rlike.combine_zones([per_zone[z][1] for z in zones], fskies)[0]
    r_hats = np.array(
        [
            rlike.analyse(grid, c_theory + c, c_tens, c_lens, c_stat, ell, fsky_union).r_hat
            for c in per_real
        ]
    )
    zone_curves = np.stack(
        [
            rlike.analyse(
                grid, c_theory + t, c_tens, c_lens, np.clip(t - s, 0, None), ell, f
            ).neg2lnl
            for t, s, f in zip(total, syst, fskies, strict=True)
        ]
    )
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
        f"{combined.sigma_curvature:.2e} over {len(zones)} zone(s)",
        flush=True,
    )
    data = {
        "ell": D(ell, "1"),
        "zones/fsky": D(np.array(fskies), "1"),
        "zones/total_residual": D(np.stack(total), "uK_CMB^2", "C_l, one row per zone"),
        "zones/systematic_residual": D(np.stack(syst), "uK_CMB^2"),
        "zones/likelihood": D(np.exp(-0.5 * zone_curves), "1", "L(r)/L_max per zone"),
        "zones/total_bb_power": D(
            np.stack([per_zone[z][2] for z in zones]),
            "uK_CMB^2",
            "sum over l of C_l^BB of each reconstructed CMB",
        ),
        "cl_total_residual": D(c_res, "uK_CMB^2"),
        "cl_systematic_residual": D(c_syst, "uK_CMB^2"),
        "cl_statistical_residual": D(c_stat, "uK_CMB^2"),
        "cl_tensor_r1": D(c_tens, "uK_CMB^2"),
        "cl_lensing": D(c_lens, "uK_CMB^2"),
        "cl_observed": D(c_theory + c_res, "uK_CMB^2"),
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
            "zones": zones,
            "fsky_union": fsky_union,
            "r_hat": combined.r_hat,
            "r_low": combined.r_low,
            "r_high": combined.r_high,
            "sigma_r": combined.sigma_curvature,
            "r_simulated": r_sim,
            "r_hat_at_grid_edge": at_edge,
            "stat_residual_floored_multipoles": clipped,
        },
    )


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bmodesep.estimate_r",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    for arg in ("simulation", "method", "sky", "spectra", "output"):
        parser.add_argument(f"--{arg}", required=True)
    parser.add_argument("--fits", nargs="+", required=True)
    args = parser.parse_args(argv)
    config = config_from_args(args)
    run(config, args.simulation, args.method, args.sky, args.spectra, args.fits, args.output)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
