"""SBI products: simulation chunks (``npe/simulations/{set}/chunk{i}.h5``)."""

from __future__ import annotations

import numpy as np

from bmodesep.core.npe import prior
from bmodesep.errors import DataError
from bmodesep.products import io


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
