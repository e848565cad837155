"""Needlet and harmonic ILC (duivenvoorden2025 sec. II.3) and the SBI data vector.

``ilc`` (needlet windows, ILC weights with deprojection, compiled per-pixel algebra,
``compress``), ``datavector`` (binned cross-split spectra of the components).
"""

from bmodesep.core.nilc.datavector import bin_edges, data_vector
from bmodesep.core.nilc.ilc import (
    Compression,
    Settings,
    b_mode_alm,
    channel_beams,
    compress,
    compress_all,
)

__all__ = [
    "Compression",
    "Settings",
    "b_mode_alm",
    "bin_edges",
    "channel_beams",
    "compress",
    "compress_all",
    "data_vector",
]
