"""Standard outputs (issue 29): the per-zone results of a method joined into full-sky maps.

Pure arrays in, arrays out; ``bmodesep.products.fits`` writes them as HEALPix FITS and
``bmodesep.stages.export`` reads the products.  Outside every zone a map holds HEALPix's
``UNSEEN``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bmodesep.core.maps import UNSEEN


def join_zones(pixels: Sequence[np.ndarray], values: Sequence[np.ndarray], npix: int) -> np.ndarray:
    """One full-sky map ``[npix]``: ``values[z]`` at ``pixels[z]`` for every zone z
    (disjoint), UNSEEN elsewhere."""
    out = np.full(npix, UNSEEN)
    for pix, val in zip(pixels, values, strict=True):
        out[np.asarray(pix)] = val
    return out


def join_patch_labels(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Full-sky patch maps ``[npix]`` of several zones (each -1 outside its zone) as one map
    whose labels are numbered across the zones, zone after zone, so that every patch keeps a
    label of its own; UNSEEN where no zone has one."""
    out, offset = np.full(np.asarray(labels[0]).size, UNSEEN), 0
    for zone_labels in labels:
        zone_labels = np.asarray(zone_labels)
        inside = zone_labels >= 0
        out[inside] = zone_labels[inside] + offset
        offset += int(zone_labels.max()) + 1 if inside.any() else 0
    return out
