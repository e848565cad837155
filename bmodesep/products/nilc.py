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
from bmodesep.products.schema import Attribute, Field, Spec, register

NILC = "nilc"
MAPS = "maps"
ALM_REAL = "alm_real"
ALM_IMAG = "alm_imag"
MIXING = "mixing"
BEAMS = "beams"
NEEDLET_WINDOWS = "needlet_windows"
CHANNELS_USED = "channels_used"
SMOOTHING_FWHM_DEG = "smoothing_fwhm_deg"
NEEDLET_ONLY = (NEEDLET_WINDOWS, CHANNELS_USED, SMOOTHING_FWHM_DEG)
_NEEDLET = "a needlet basis"
REAL_SPLIT_COMP = ("realisation", "split", "component")

SPEC = register(
    Spec(
        kind=NILC,
        files="nilc/{sim}/{compression}.h5",
        writer="nilc_compress",
        description="The B-mode components of one ILC compression of every noise realisation "
        "and split of a simulation (duivenvoorden2025 sec. II.3), at the smallest beam.",
        fields=(
            Field(
                MAPS,
                (*REAL_SPLIT_COMP, "pix"),
                "uK_CMB",
                "B-mode component maps [realisation, split, component, pix]",
            ),
            Field(
                ALM_REAL,
                (*REAL_SPLIT_COMP, "alm"),
                "uK_CMB",
                "component alm, healpy layout, real part",
            ),
            Field(ALM_IMAG, (*REAL_SPLIT_COMP, "alm"), "uK_CMB", "imaginary part"),
            Field(MIXING, ("freq", "component"), "1", "SEDs A[freq, component] in K_CMB"),
            Field(
                BEAMS, ("freq", "l"), "1", "channel beams b_f(l) divided out (to the smallest beam)"
            ),
            Field(NEEDLET_WINDOWS, ("scale", "l"), "1", "h_j(l)", True, _NEEDLET),
            Field(CHANNELS_USED, ("scale", "freq"), "1", "[scale, freq]", True, _NEEDLET),
            Field(SMOOTHING_FWHM_DEG, ("scale",), "deg", "covariance smoothing", True, _NEEDLET),
        ),
        attributes=(
            Attribute("compression", "its name in nilc.compressions"),
            Attribute("basis", "needlet or harmonic"),
            Attribute("components", "the components kept, in the order of the component axis"),
            Attribute("mixing_components", "the components of the mixing matrix"),
            Attribute("fiducial_beta_d", "fiducial dust index of the SEDs"),
            Attribute("fiducial_temperature_d", "fiducial dust temperature (K)"),
            Attribute("fiducial_beta_s", "fiducial synchrotron index"),
            Attribute("fiducial_dust_freq_ref_ghz", "dust reference frequency (GHz)"),
            Attribute("fiducial_sync_freq_ref_ghz", "synchrotron reference frequency (GHz)"),
            Attribute("nside", "HEALPix resolution of the maps"),
            Attribute("lmax", "band limit of the analysis"),
            Attribute("lmax_out", "band limit of the component alm"),
            Attribute("exact", "covariance smoothing iterated at full lmax (reference path)"),
            Attribute("input", "qu (spin-2 analysis of Q/U) or b (stored B maps)"),
            Attribute("mask", "the Galactic mask weighting the maps, or none"),
            Attribute("target_beam_fwhm_arcmin", "the smallest beam, which the maps carry"),
            Attribute("contains_noise", "made from maps that contain their noise (observed)"),
            Attribute("r_true", "r of the CMB the pipeline drew (not for a user's maps)", True),
            Attribute("a_lens_true", "A_lens of that CMB (not for a user's maps)", True),
        ),
    )
)


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
    arrays = {MAPS: maps, ALM_REAL: alm.real, ALM_IMAG: alm.imag, MIXING: mixing, BEAMS: beams}
    if needlets is not None:
        windows, used, fwhm_deg = needlets
        arrays |= {
            NEEDLET_WINDOWS: windows,
            CHANNELS_USED: used.astype(np.uint8),
            SMOOTHING_FWHM_DEG: fwhm_deg,
        }
    SPEC.write(path, arrays, provenance, attrs)


def read_nilc(path) -> io.Product:
    """A NILC product; its alm are ``alm_real + 1j alm_imag`` (see :func:`nilc_alm`)."""
    return SPEC.read(path)


def nilc_alm(product: io.Product) -> np.ndarray:
    """The complex component alm ``[realisation, split, component, nalm]`` of a product."""
    return product[ALM_REAL] + 1j * product[ALM_IMAG]
