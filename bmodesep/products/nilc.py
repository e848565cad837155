"""The NILC product (``nilc/{sim}/{compression}.h5``): checked reader."""

from __future__ import annotations

from bmodesep.products import io


def read_nilc(path) -> io.Product:
    """A NILC product; its alm are ``alm_real + 1j alm_imag``."""
    any4 = (None, None, None, None)
    return io.read_product(
        path,
        "nilc",
        {
            "maps": (any4, "uK_CMB"),
            "alm_real": (any4, "uK_CMB"),
            "alm_imag": (any4, "uK_CMB"),
            "mixing": ((None, None), "1"),
            "beams": ((None, None), "1"),
            "needlet_windows": ((None, None), "1"),
            "channels_used": ((None, None), "1"),
            "smoothing_fwhm_deg": ((None,), "deg"),
        },
        optional=["needlet_windows", "channels_used", "smoothing_fwhm_deg"],
    )
