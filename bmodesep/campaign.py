"""SBI simulation sets: one chunk of (theta, x, seed) triples per job, written atomically.

    python -m bmodesep.campaign --config C --spectra CAMB.h5 --set S --chunk I --output F.h5

Sets (``simulation_sets``): ``train`` (the training campaign, ``npe.chunks`` x
``npe.simulations_per_chunk`` draws from the prior), ``coverage`` (held-out prior draws
for TARP, ``npe.coverage_simulations``) and each of ``npe.test_sets`` (a prior with some
parameters fixed, e.g. the paper's Fig. 3 set).  Chunk I of set S draws its parameter
vectors with the stream ``("npe-theta:S", I)`` of ``npe.seed`` and simulates each with its
own seed, so any chunk (and any simulation) can be regenerated alone; a finished chunk is a
complete file, so a restarted campaign redoes only the chunks whose files are missing;
within a chunk, every ``CHECKPOINT_EVERY`` simulations are checkpointed
(:mod:`bmodesep.checkpoint`), so a killed chunk job resumes at its last full block.
Each simulated sky and its noise are compressed with every one of ``npe.compressions``
(``x/<compression>``).  The cost of every simulation goes to the log.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from bmodesep import checkpoint, ilc, io, prior, sim_io, simulator
from bmodesep.cli import config_from_args, run_cli, stage_parser
from bmodesep.errors import ConfigError, DataError
from bmodesep.instrument import resolve_instrument
from bmodesep.randomness import rng_for

CHECKPOINT_EVERY = 10  # simulations per checkpoint block of a chunk

D = io.Dataset


class SimulationSet(NamedTuple):
    name: str
    prior: str  # a prior.prior variant
    fixed: dict[str, float]  # parameters held at these values
    simulations: int
    per_chunk: int

    @property
    def chunks(self) -> int:
        return math.ceil(self.simulations / self.per_chunk) if self.simulations else 0

    def chunk_size(self, chunk: int) -> int:
        return min(self.per_chunk, self.simulations - chunk * self.per_chunk)


def simulation_sets(config: Mapping[str, Any]) -> dict[str, SimulationSet]:
    """The training, coverage and test sets of the config (empty ones left out)."""
    npe = config["npe"]
    per = npe["simulations_per_chunk"]
    sets = {
        "train": SimulationSet("train", npe["prior"], {}, npe["chunks"] * per, per),
        "coverage": SimulationSet("coverage", npe["prior"], {}, npe["coverage_simulations"], per),
    }
    for name, spec in npe["test_sets"].items():
        sets[name] = SimulationSet(
            name, spec["prior"], dict(spec["fixed"]), spec["simulations"], per
        )
    return {k: v for k, v in sets.items() if v.simulations > 0}


def set_parameters(sim_set: SimulationSet, chunk: int, base_seed: int) -> np.ndarray:
    """The parameter vectors of one chunk: prior draws with the fixed ones overwritten."""
    n = sim_set.chunk_size(chunk)
    rng = rng_for(base_seed, f"npe-theta:{sim_set.name}", chunk)
    theta = prior.prior(sim_set.prior).sample(n, rng)
    for name, value in sim_set.fixed.items():
        if name not in prior.PARAMETERS:
            raise ConfigError(f"test set '{sim_set.name}': unknown parameter '{name}'")
        theta[:, prior.PARAMETERS.index(name)] = value
    return theta


def npe_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the config the simulations depend on (their provenance)."""
    npe, nl = config["npe"], config["nilc"]
    keep = (
        "instrument",
        "nside",
        "lmax",
        "compressions",
        "prior",
        "seed",
        "chunks",
        "simulations_per_chunk",
        "coverage_simulations",
        "test_sets",
        "ell_min",
        "ell_max",
        "bin_width",
        "analysis_iterations",
    )
    return {
        "cmb": config["cmb"],
        "npe": {k: npe[k] for k in keep},
        "instruments": {npe["instrument"]: config["instruments"][npe["instrument"]]},
        "nilc": {k: v for k, v in nl.items() if k not in ("simulations", "run", "compressions")}
        | {"compressions": {c: nl["compressions"][c] for c in npe["compressions"]}},
    }


def setup_from_config(config: Mapping[str, Any], spectra, compression: str) -> simulator.Setup:
    npe, nl = config["npe"], config["nilc"]
    if compression not in nl["compressions"]:
        raise ConfigError(f"unknown compression '{compression}' (nilc.compressions)")
    spec = ilc.compression_from_spec(
        nl["compressions"][compression], nl["dust_freq_ref_ghz"], nl["sync_freq_ref_ghz"]
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
        spec,
        settings,
        npe["lmax"],
        (npe["ell_min"], npe["ell_max"]),
        npe["bin_width"],
        npe["analysis_iterations"],
    )


def setups_from_config(config, spectra_path) -> dict[str, simulator.Setup]:
    """One simulator setup per configured compression."""
    npe = config["npe"]
    spectra = sim_io.read_spectra(spectra_path, npe["lmax"] or 3 * npe["nside"] - 1)
    return {c: setup_from_config(config, spectra, c) for c in npe["compressions"]}


def simulation_seed(base_seed: int, set_name: str, chunk: int, index: int) -> int:
    """The seed of one simulation: a pure function of the set, chunk and index."""
    return int(rng_for(base_seed, f"npe-seed:{set_name}", chunk, index).integers(0, 2**62))


def run_chunk(config: Mapping[str, Any], spectra_path, set_name: str, chunk: int, output) -> None:
    npe = config["npe"]
    sets = simulation_sets(config)
    if set_name not in sets:
        raise ConfigError(
            f"unknown or empty simulation set '{set_name}' (known: {', '.join(sets)})"
        )
    sim_set = sets[set_name]
    if not 0 <= chunk < sim_set.chunks:
        raise DataError(f"chunk {chunk} outside 0..{sim_set.chunks - 1} of set '{set_name}'")
    setups = setups_from_config(config, spectra_path)
    thetas = set_parameters(sim_set, chunk, npe["seed"])
    n = thetas.shape[0]
    seeds = np.array(
        [simulation_seed(npe["seed"], set_name, chunk, i) for i in range(n)], dtype=np.int64
    )
    xs = {c: np.empty((n, s.data_vector_length)) for c, s in setups.items()}
    cost = np.empty(n)
    blocks = [range(lo, min(lo + CHECKPOINT_EVERY, n)) for lo in range(0, n, CHECKPOINT_EVERY)]
    job = checkpoint.fingerprint(npe_config(config), set=set_name, chunk=chunk)
    parts = checkpoint.Parts(output, "npe_simulation_block", job)
    done = parts.done(range(len(blocks)))
    for b in done:
        piece = parts.read(b)
        for c in xs:
            xs[c][blocks[b]] = piece[f"x/{c}"]
        cost[blocks[b]] = piece["cpu_s"]
    progress = checkpoint.Progress(
        f"{set_name} chunk {chunk}",
        n,
        "simulations",
        already=sum(len(blocks[b]) for b in done),
    )
    for b, block in enumerate(blocks):
        if b in done:
            continue
        for i in block:
            c0 = time.process_time()
            for c, x in simulator.simulate_compressions(thetas[i], int(seeds[i]), setups).items():
                xs[c][i] = x
            cost[i] = time.process_time() - c0
            progress.step(f"{cost[i]:.2f} CPU-s")
        piece = {f"x/{c}": D(x[block], "uK_CMB^2") for c, x in xs.items()}
        piece["cpu_s"] = D(cost[block], "s")
        parts.write(b, piece, io.provenance(npe_config(config), npe["seed"], "npe_simulations"))
    first = next(iter(setups.values()))
    datasets = {
        "theta": D(thetas, "1", "parameters in the order of prior.PARAMETERS"),
        "seed": D(seeds, "1", "seed of each simulation"),
        "cpu_s": D(cost, "s", "CPU seconds of each simulation (all compressions)"),
    }
    for c, x in xs.items():
        datasets[f"x/{c}"] = D(x, "uK_CMB^2", f"data vectors of {c}: binned spectra, pair-major")
    io.write_product(
        output,
        "npe_simulations",
        datasets,
        io.provenance(npe_config(config), npe["seed"], "npe_simulations"),
        {
            "set": set_name,
            "chunk": chunk,
            "fixed": list(sim_set.fixed),
            "parameters": list(prior.PARAMETERS),
            "compressions": list(setups),
            "bin_edges": first.edges.tolist(),
            "nside": first.nside,
            "lmax": first.lmax,
        },
    )
    parts.remove()


def read_chunks(paths, compression: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta, x (of one compression) and seeds of several chunk files, concatenated."""
    expect = {
        "theta": ((None, len(prior.PARAMETERS)), "1"),
        f"x/{compression}": ((None, None), "uK_CMB^2"),
        "seed": ((None,), "1"),
    }
    parts = []
    for p in paths:
        try:
            parts.append(io.read_product(p, "npe_simulations", expect))
        except DataError as err:
            raise DataError(f"{err} (compression '{compression}' simulated?)") from err
    if not parts:
        raise DataError("no simulation chunks given")
    widths = {p[f"x/{compression}"].shape[1] for p in parts}
    if len(widths) != 1:
        raise DataError(f"chunks hold data vectors of different lengths {sorted(widths)}")
    return (
        np.concatenate([p["theta"] for p in parts]),
        np.concatenate([p[f"x/{compression}"] for p in parts]),
        np.concatenate([p["seed"] for p in parts]),
    )


def _main(argv=None) -> None:
    parser = stage_parser("python -m bmodesep.campaign", __doc__, ("spectra", "output"))
    parser.add_argument("--set", default="train", help="simulation set (default: train)")
    parser.add_argument("--chunk", type=int, required=True)
    args = parser.parse_args(argv)
    run_chunk(config_from_args(args), args.spectra, args.set, args.chunk, args.output)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
