"""SBI products: simulation chunks (``npe/simulations/{set}/chunk{i}.h5``).

``npe_simulations`` (written by :func:`bmodesep.stages.npe.npe_chunk`): the parameter
vectors, seeds and CPU cost of the simulations of one chunk of a simulation set, and their
data vectors under each compression (``x/<compression>``).  While a chunk runs, each
finished block of simulations is checkpointed as an ``npe_simulation_block`` piece
(:class:`bmodesep.products.checkpoint.Parts`) holding the ``x/<compression>`` and
``cpu_s`` rows of that block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bmodesep.core.npe import prior
from bmodesep.errors import DataError
from bmodesep.products import io

NPE_SIMULATIONS = "npe_simulations"
SIMULATION_BLOCK = "npe_simulation_block"  # kind of the checkpoint pieces of a chunk

THETA = "theta"  # [simulation, parameter], parameters in prior.PARAMETERS order
SEED = "seed"  # [simulation]
CPU_S = "cpu_s"  # [simulation] CPU seconds (all compressions)
X_UNITS = "uK_CMB^2"


def x_name(compression: str) -> str:
    """Dataset ``[simulation, n]`` of the data vectors of ``compression``."""
    return f"x/{compression}"


def write_simulations(
    path,
    theta: np.ndarray,
    seeds: np.ndarray,
    cpu_s: np.ndarray,
    x: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
    *,
    set_name: str,
    chunk: int,
    fixed: Iterable[str],
    bin_edges: np.ndarray,
    nside: int,
    lmax: int,
    foreground: str | None = None,
    foreground_sigma_beta: float | None = None,
    fsky: float = 1.0,
) -> Path:
    """One chunk of a simulation set; ``x`` maps each compression to its data vectors.

    A fixed-foreground set (``foreground``: the simulation whose foregrounds every member
    shares) knows only the parameters in ``fixed`` (r, A_lens); the other columns of theta
    are prior draws the simulation does not use.  ``foreground_sigma_beta``: the
    footprint-weighted rms of that sky's spectral-index maps (eq. 25's quantity), when known.
    """
    datasets = {
        THETA: io.Dataset(theta, "1", "parameters in the order of prior.PARAMETERS"),
        SEED: io.Dataset(seeds, "1", "seed of each simulation"),
        CPU_S: io.Dataset(cpu_s, "s", "CPU seconds of each simulation (all compressions)"),
    }
    for c, xc in x.items():
        datasets[x_name(c)] = io.Dataset(
            xc, X_UNITS, f"data vectors of {c}: binned spectra, pair-major"
        )
    return io.write_product(
        path,
        NPE_SIMULATIONS,
        datasets,
        provenance,
        {
            "set": set_name,
            "chunk": chunk,
            "fixed": list(fixed),
            "parameters": list(prior.PARAMETERS),
            "compressions": list(x),
            "bin_edges": np.asarray(bin_edges).tolist(),
            "nside": nside,
            "lmax": lmax,
            "foreground": foreground or "",
            "foreground_sigma_beta": -1.0
            if foreground_sigma_beta is None
            else foreground_sigma_beta,
            "fsky": fsky,
        },
    )


def block_datasets(x: Mapping[str, np.ndarray], cpu_s: np.ndarray) -> dict[str, io.Dataset]:
    """The datasets of a checkpoint piece: one block's rows of each ``x`` and ``cpu_s``."""
    piece = {x_name(c): io.Dataset(xc, X_UNITS) for c, xc in x.items()}
    piece[CPU_S] = io.Dataset(cpu_s, "s")
    return piece


def block_arrays(
    piece: io.Product, compressions: Sequence[str], rows: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The data vectors (by compression) and CPU seconds of a checkpoint piece, checked."""
    expect = {x_name(c): (2, X_UNITS) for c in compressions} | {CPU_S: (1, "s")}
    for name, (ndim, units) in expect.items():
        if name not in piece.data:
            raise DataError(f"{piece.path}: dataset '{name}' is missing")
        arr = piece[name]
        if arr.ndim != ndim or arr.shape[0] != rows:
            raise DataError(
                f"{piece.path}: dataset '{name}' has shape {arr.shape}, expected {rows} rows"
            )
        if piece.units[name] != units:
            raise DataError(
                f"{piece.path}: dataset '{name}' is in '{piece.units[name]}', expected '{units}'"
            )
    return {c: piece[x_name(c)] for c in compressions}, piece[CPU_S]


def read_simulations_head(path) -> io.Product:
    """The attributes of a chunk (``set``, ``chunk``, ``fixed``, ``compressions``, ``bin_edges``,
    ``nside``, ``lmax``), no datasets."""
    p = io.read_product(path, NPE_SIMULATIONS, {})
    names = ("set", "chunk", "fixed", "parameters", "compressions", "bin_edges", "nside", "lmax")
    missing = [a for a in names if a not in p.attrs]
    if missing:
        raise DataError(f"{p.path}: attribute(s) {', '.join(missing)} missing")
    got = [str(name) for name in p.attrs["parameters"]]
    if got != list(prior.PARAMETERS):
        raise DataError(
            f"{p.path}: parameters {got} differ from this bmodesep's {list(prior.PARAMETERS)}"
        )
    return p


def read_chunks(paths, compression: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta, x (of one compression) and seeds of several chunk files, concatenated."""
    x = x_name(compression)
    expect = {
        THETA: ((None, len(prior.PARAMETERS)), "1"),
        x: ((None, None), X_UNITS),
        SEED: ((None,), "1"),
    }
    parts = []
    for p in paths:
        try:
            parts.append(io.read_product(p, NPE_SIMULATIONS, expect))
        except DataError as err:
            raise DataError(f"{err} (compression '{compression}' simulated?)") from err
    if not parts:
        raise DataError("no simulation chunks given")
    widths = {p[x].shape[1] for p in parts}
    if len(widths) != 1:
        raise DataError(f"chunks hold data vectors of different lengths {sorted(widths)}")
    return (
        np.concatenate([p[THETA] for p in parts]),
        np.concatenate([p[x] for p in parts]),
        np.concatenate([p[SEED] for p in parts]),
    )
