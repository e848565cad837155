"""The NILC product (``nilc/{sim}/{compression}.h5``): writer and checked reader.

Written by :func:`bmodesep.stages.nilc.nilc_compress`: the B-mode component maps and alm
of every noise realisation and split, the mixing matrix and beams, and for a needlet
basis the windows, the channels used per scale and the covariance smoothing widths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bmodesep.products import io

NILC = "nilc"
D = io.Dataset

MAPS = "maps"  # [realisation, split, component, pix] uK_CMB
ALM_REAL = "alm_real"  # [realisation, split, component, nalm] uK_CMB, healpy layout
ALM_IMAG = "alm_imag"
MIXING = "mixing"  # [freq, component] SEDs in K_CMB
BEAMS = "beams"  # [freq, l]
NEEDLET_WINDOWS = "needlet_windows"  # [scale, l] (needlet basis only)
CHANNELS_USED = "channels_used"  # [scale, freq]
SMOOTHING_FWHM_DEG = "smoothing_fwhm_deg"  # [scale]
NEEDLET_ONLY = (NEEDLET_WINDOWS, CHANNELS_USED, SMOOTHING_FWHM_DEG)


def write_nilc(
    path,
    maps: np.ndarray,
    alm: np.ndarray,
    mixing: np.ndarray,
    beams: np.ndarray,
    provenance,
    attrs: Mapping[str, Any],
    needlets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> None:
    """Component maps and complex ``alm``; ``needlets`` = (windows, channels used, smoothing
    FWHM in degrees) for a needlet basis."""
    data = {
        MAPS: D(maps, "uK_CMB", "B-mode component maps [realisation, split, component, pix]"),
        ALM_REAL: D(alm.real, "uK_CMB", "component alm, healpy layout, real part"),
        ALM_IMAG: D(alm.imag, "uK_CMB", "imaginary part"),
        MIXING: D(mixing, "1", "SEDs A[freq, component] in K_CMB"),
        BEAMS: D(beams, "1", "channel beams b_f(l) divided out (to the smallest beam)"),
    }
    if needlets is not None:
        windows, used, fwhm_deg = needlets
        data |= {
            NEEDLET_WINDOWS: D(windows, "1", "h_j(l)"),
            CHANNELS_USED: D(used.astype(np.uint8), "1", "[scale, freq]"),
            SMOOTHING_FWHM_DEG: D(fwhm_deg, "deg", "covariance smoothing"),
        }
    io.write_product(path, NILC, data, provenance, attrs)


def read_nilc(path) -> io.Product:
    """A NILC product; its alm are ``alm_real + 1j alm_imag`` (see :func:`nilc_alm`)."""
    any4 = (None, None, None, None)
    return io.read_product(
        path,
        NILC,
        {
            MAPS: (any4, "uK_CMB"),
            ALM_REAL: (any4, "uK_CMB"),
            ALM_IMAG: (any4, "uK_CMB"),
            MIXING: ((None, None), "1"),
            BEAMS: ((None, None), "1"),
            NEEDLET_WINDOWS: ((None, None), "1"),
            CHANNELS_USED: ((None, None), "1"),
            SMOOTHING_FWHM_DEG: ((None,), "deg"),
        },
        optional=NEEDLET_ONLY,
    )


def nilc_alm(product: io.Product) -> np.ndarray:
    """The complex component alm ``[realisation, split, component, nalm]`` of a product."""
    return product[ALM_REAL] + 1j * product[ALM_IMAG]
