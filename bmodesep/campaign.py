"""SBI simulation campaign: one chunk of (theta, x, seed) triples per job, written atomically.

    python -m bmodesep.campaign --config C --spectra CAMB.h5 --chunk I --output F.h5

Chunk I draws ``npe.simulations_per_chunk`` parameter vectors from the prior with the
stream ``("npe-theta", I)`` of ``npe.seed`` and simulates each with its own seed, so any
chunk (and any simulation) can be regenerated alone; a finished chunk is a complete
file, so a restarted campaign redoes only the chunks whose files are missing.  The cost
of every simulation goes to the log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from bmodesep import ilc, io, prior, sim_io, simulator
from bmodesep.cli import config_from_args, run_cli, stage_parser
from bmodesep.errors import DataError
from bmodesep.instrument import resolve_instrument
from bmodesep.randomness import rng_for

D = io.Dataset


def npe_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the config the campaign depends on (its provenance)."""
    npe, nl = config["npe"], config["nilc"]
    return {
        "cmb": config["cmb"],
        "npe": npe,
        "instruments": {npe["instrument"]: config["instruments"][npe["instrument"]]},
        "nilc": {k: v for k, v in nl.items() if k not in ("simulations", "run", "compressions")}
        | {"compressions": {npe["compression"]: nl["compressions"][npe["compression"]]}},
    }


def setup_from_config(config: Mapping[str, Any], spectra) -> simulator.Setup:
    npe, nl = config["npe"], config["nilc"]
    compression = ilc.compression_from_spec(
        nl["compressions"][npe["compression"]], nl["dust_freq_ref_ghz"], nl["sync_freq_ref_ghz"]
    )
    settings = ilc.Settings(
        needlet_fwhm_arcmin=tuple(nl["needlet_fwhm_arcmin"]),
        ilc_bias_tolerance=nl["ilc_bias_tolerance"],
        beam_threshold=nl["beam_threshold"],
    )
    return simulator.make_setup(
        resolve_instrument(config, npe["instrument"]),
        spectra,
        npe["nside"],
        compression,
        settings,
        npe["lmax"],
        (npe["ell_min"], npe["ell_max"]),
        npe["bin_width"],
        npe["analysis_iterations"],
    )


def simulation_seed(base_seed: int, chunk: int, index: int) -> int:
    """The seed of simulation ``index`` of ``chunk``: a pure function of the three."""
    return int(rng_for(base_seed, "npe-seed", chunk, index).integers(0, 2**62))


def run_chunk(config: Mapping[str, Any], spectra_path, chunk: int, output) -> None:
    npe = config["npe"]
    if not 0 <= chunk < npe["chunks"]:
        raise DataError(f"chunk {chunk} outside 0..{npe['chunks'] - 1} (npe.chunks)")
    setup = setup_from_config(
        config, sim_io.read_spectra(spectra_path, npe["lmax"] or 3 * npe["nside"] - 1)
    )
    n = npe["simulations_per_chunk"]
    thetas = prior.prior(npe["prior"]).sample(n, rng_for(npe["seed"], "npe-theta", chunk))
    seeds = np.array([simulation_seed(npe["seed"], chunk, i) for i in range(n)], dtype=np.int64)
    xs = np.empty((n, setup.data_vector_length))
    cost = np.empty(n)
    t_start = time.perf_counter()
    for i in range(n):
        c0 = time.process_time()
        xs[i] = simulator.simulate(thetas[i], int(seeds[i]), setup)
        cost[i] = time.process_time() - c0
        done = i + 1
        rate = done / (time.perf_counter() - t_start)
        print(
            f"[bmodesep] chunk {chunk}: simulation {done}/{n}, {cost[i]:.2f} CPU-s, "
            f"{rate:.2f}/s, ETA {(n - done) / rate:.0f} s",
            flush=True,
        )
    io.write_product(
        output,
        "npe_simulations",
        {
            "theta": D(thetas, "1", "parameters in the order of prior.PARAMETERS"),
            "x": D(xs, "uK_CMB^2", "data vectors: binned cross-split spectra, pair-major"),
            "seed": D(seeds, "1", "seed of each simulation"),
            "cpu_s": D(cost, "s", "CPU seconds of each simulation"),
        },
        io.provenance(npe_config(config), npe["seed"], "npe_simulations"),
        {
            "chunk": chunk,
            "parameters": list(prior.PARAMETERS),
            "components": list(setup.compression.outputs),
            "bin_edges": setup.edges.tolist(),
            "nside": setup.nside,
            "lmax": setup.lmax,
        },
    )


def read_chunks(paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta, x and seeds of several chunk files, concatenated; shapes are checked."""
    expect = {
        "theta": ((None, len(prior.PARAMETERS)), "1"),
        "x": ((None, None), "uK_CMB^2"),
        "seed": ((None,), "1"),
    }
    parts = [io.read_product(p, "npe_simulations", expect) for p in paths]
    widths = {p["x"].shape[1] for p in parts}
    if len(widths) != 1:
        raise DataError(f"chunks hold data vectors of different lengths {sorted(widths)}")
    return (
        np.concatenate([p["theta"] for p in parts]),
        np.concatenate([p["x"] for p in parts]),
        np.concatenate([p["seed"] for p in parts]),
    )


def _main(argv=None) -> None:
    parser = stage_parser("python -m bmodesep.campaign", __doc__, ("spectra", "output"))
    parser.add_argument("--chunk", type=int, required=True)
    args = parser.parse_args(argv)
    run_chunk(config_from_args(args), args.spectra, args.chunk, args.output)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
