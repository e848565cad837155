"""One sky, two methods: how the r of methods with different outputs is put side by side.

A likelihood method (kabalan2025's r stage) gives one curve of the noise-averaged
residuals; a posterior method (SBI, the power-spectrum likelihood) one posterior per
noise realisation.  :func:`posterior_interval` reduces the latter to what the former
reports: the typical 68% interval of one realisation, centred on a mean not scattered by
the noise.
"""

from __future__ import annotations

import numpy as np


def posterior_interval(means, hdi) -> tuple[float, float, float]:
    """(r-hat, lo68, hi68) of per-realisation posterior means ``[n]`` and 68% HDIs
    ``[n, 2]``: their averages over the realisations."""
    means, hdi = np.asarray(means, float), np.asarray(hdi, float)
    if means.ndim != 1 or means.size == 0 or hdi.shape != (means.size, 2):
        raise ValueError(f"posterior means {means.shape} and HDIs {hdi.shape} do not match")
    return float(means.mean()), float(hdi[:, 0].mean()), float(hdi[:, 1].mean())
