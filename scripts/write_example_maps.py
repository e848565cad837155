"""Write a simulation's frequency maps as HEALPix FITS files, as another pipeline would.

The worked example of docs/own-maps.md ("Running on your own maps") needs maps to read; this
script makes them from a simulation of the default config, in the forms users' files
come in: each band's CMB + foregrounds in K_RJ, NESTED ordering, with I, Q and U columns
(I = 0) named like Planck's, at twice the simulation's nside (the simulation's alm
synthesised there: a user's maps are often finer than the analysis needs); the
foregrounds alone in the same form; the CMB on the sky in K_CMB::

    snakemake --profile profiles/local results/sims/litebird_grf/signal.h5 \
        results/sims/litebird_grf/sky.h5
    python scripts/write_example_maps.py results/sims/litebird_grf data/example_maps

Files: ``total_{freq}GHz.fits``, ``foregrounds_{freq}GHz.fits`` and ``cmb.fits`` in the
output folder (the frequencies as ``%g``), matching ``config/maps_example.yaml``.

``--observation`` writes instead maps that contain their noise, as an observation comes:
each band's CMB + foregrounds plus the simulation's noise realisation 0 of each split
(``noise.h5`` of the same folder), at the simulation's nside, in uK_CMB, one file per split
and band, ``observed_{split}_{freq}GHz.fits`` (``config/observation_example.yaml``)::

    snakemake --profile profiles/local results/sims/litebird_grf/signal.h5 \
        results/sims/litebird_grf/noise.h5
    python scripts/write_example_maps.py --observation results/sims/litebird_grf \
        data/example_observation
"""

from __future__ import annotations

import argparse
from pathlib import Path

import healpy as hp
import numpy as np

from bmodesep.core import harmonics
from bmodesep.core import maps as user_maps
from bmodesep.products import io


def finer(qu: np.ndarray, nside: int) -> np.ndarray:
    """Q/U ``[2, npix]`` synthesised at ``2 nside`` from its alm (lmax 3 nside - 1)."""
    lmax = 3 * nside - 1
    alm = harmonics.analysis(qu, nside, lmax, spin=2, n_iter=3)
    return harmonics.synthesis(alm, 2 * nside, lmax, spin=2)


def write_band(path: Path, qu: np.ndarray, unit: str) -> None:
    nside = hp.npix2nside(qu.shape[-1])
    nested = qu[:, hp.nest2ring(nside, np.arange(qu.shape[-1]))]
    hp.write_map(
        path,
        [np.zeros(qu.shape[-1]), *nested],
        nest=True,
        coord="G",
        column_names=["I_STOKES", "Q_STOKES", "U_STOKES"],
        column_units=unit,
        overwrite=True,
        dtype=np.float64,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("simulation", type=Path, help="folder with signal.h5 and sky.h5")
    parser.add_argument("output", type=Path, help="folder to write the FITS files to")
    parser.add_argument(
        "--observation", action="store_true", help="maps with noise realisation 0 in them"
    )
    args = parser.parse_args()
    signal = io.read_product(args.simulation / "signal.h5", "signal")
    if args.observation:
        write_observation(signal, io.read_product(args.simulation / "noise.h5", "noise"), args)
        return
    sky = io.read_product(args.simulation / "sky.h5", "sky")
    nside = hp.npix2nside(signal["total_qu"].shape[-1])
    args.output.mkdir(parents=True, exist_ok=True)
    for i, freq in enumerate(signal["frequencies_ghz"]):
        uk_cmb_per_k_rj = user_maps.to_uk_cmb("K_RJ", freq)
        for name, maps in (("total", "total_qu"), ("foregrounds", "foreground_qu")):
            qu = finer(signal[maps][i], nside) / uk_cmb_per_k_rj
            write_band(args.output / f"{name}_{freq:g}GHz.fits", qu, "K_RJ")
    cmb = finer(sky["cmb/qu"], nside) * 1e-6
    hp.write_map(args.output / "cmb.fits", cmb, coord="G", column_units="K_CMB", overwrite=True)
    print(f"wrote {2 * len(signal['frequencies_ghz']) + 1} files to {args.output}")


def write_observation(signal, noise, args) -> None:
    """Signal plus noise realisation 0 of every split, one RING uK_CMB file per split and
    band, at the simulation's nside."""
    args.output.mkdir(parents=True, exist_ok=True)
    freqs = signal["frequencies_ghz"]
    for s, split in enumerate(noise["qu"][0]):
        for i, freq in enumerate(freqs):
            hp.write_map(
                args.output / f"observed_{s}_{freq:g}GHz.fits",
                signal["total_qu"][i] + split[i],
                coord="G",
                column_names=["Q_STOKES", "U_STOKES"],
                column_units="uK_CMB",
                overwrite=True,
                dtype=np.float64,
            )
    print(f"wrote {noise['qu'].shape[1] * len(freqs)} files to {args.output}")


if __name__ == "__main__":
    main()
