"""Foreground Q/U maps of any sky in given bands: parametric (GRF, true-patch, the
misspecified kinds) or PySM (from local templates)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bmodesep.core.simulate.pysm_sky import pysm_frequency_maps
from bmodesep.core.simulate.sky import ParametricSky, foreground_maps


def foreground_at(
    pysm: Mapping[str, Any] | None,
    sky: ParametricSky | None,
    nside: int,
    freqs_ghz,
    data_dir: str | None,
) -> np.ndarray:
    """Foreground Q/U ``[freq, 2, npix]`` uK_CMB of a parametric sky, or of the PySM sky
    ``pysm`` (the sky config's ``pysm`` block) when ``sky`` is None."""
    if sky is not None:
        return foreground_maps(sky, freqs_ghz)
    return pysm_frequency_maps(
        pysm["preset"], nside, freqs_ghz, data_dir, pysm["cmb_from_pysm"], pysm["allow_download"]
    )
