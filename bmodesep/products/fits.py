"""HEALPix FITS maps: reading the maps a user brings (issue 29).

``read_healpix_fits`` reads the Q/U columns of a HEALPix binary-table FITS file (healpy),
whatever its ordering (the ``ORDERING`` keyword; returned RING), nside, explicit-index
(partial-sky) layout or column layout: the Q and U columns are found by their names
(``TTYPEn`` starting with Q or U followed by ``_`` or nothing: ``Q_STOKES``,
``Q_POLARISATION``, ``Q``; not ``QQ_COV``), else taken as the first two of two columns or
the second and third of three (I, Q, U); ``fields`` names them explicitly (0-based).  The
unit is that of the Q/U columns' ``TUNITn`` (or ``BUNIT``), None where the header has none.
Every problem is one DataError naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core import maps as user_maps
from bmodesep.errors import DataError


class HealpixMap(NamedTuple):
    qu: np.ndarray  # [2, npix] RING, float64, UNSEEN where the file has no value
    nside: int
    ordering: str  # as the file states it
    unit: str | None  # the header's unit of the Q/U columns, None if it has none


def _header(path: Path, hdu: int) -> dict:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            if len(hdul) <= hdu:
                raise DataError(f"{path}: no HDU {hdu} (a HEALPix map is a binary table)")
            return dict(hdul[hdu].header)
    except OSError as exc:
        raise DataError(f"{path} is not a readable FITS file: {exc}") from exc


def _qu_fields(path: Path, header: dict, fields, partial: bool) -> tuple[int, int]:
    """The 0-based Q and U columns, counted as healpy counts them (after the PIXEL column
    of an explicit-index file)."""
    skip = 1 if partial else 0
    n = int(header.get("TFIELDS", 0)) - skip
    if fields is not None:
        q, u = (int(f) for f in fields)
        if not (0 <= q < n and 0 <= u < n):
            raise DataError(f"{path}: fields {list(fields)} given, the file has {n} columns")
        return q, u
    names = [str(header.get(f"TTYPE{i + 1 + skip}", "")).strip().upper() for i in range(n)]
    q = [i for i, s in enumerate(names) if re.match(r"Q(_|$)", s)]
    u = [i for i, s in enumerate(names) if re.match(r"U(_|$)", s)]
    if len(q) == 1 and len(u) == 1:
        return q[0], u[0]
    if n in (2, 3):
        return n - 2, n - 1
    raise DataError(
        f"{path}: cannot tell the Q and U columns among {names or n}: set the fields key"
    )


def read_healpix_fits(path, fields=None, hdu: int = 1) -> HealpixMap:
    """The Q/U maps of a HEALPix FITS file (module docstring)."""
    import healpy as hp

    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing map file {path}")
    header = _header(path, hdu)
    partial = str(header.get("INDXSCHM", "IMPLICIT")).strip().upper() == "EXPLICIT"
    q, u = _qu_fields(path, header, fields, partial)
    ordering = str(header.get("ORDERING", "")).strip().upper()
    if ordering not in ("RING", "NEST", "NESTED"):
        raise DataError(f"{path}: no ORDERING RING or NESTED in the header (got '{ordering}')")
    try:
        qu = hp.read_map(path, field=(q, u), nest=None, partial=partial, hdu=hdu, dtype=np.float64)
    except Exception as exc:  # healpy raises many types on malformed files
        raise DataError(f"{path}: cannot read HEALPix columns {q}, {u}: {exc}") from exc
    qu = np.asarray(qu, dtype=np.float64)
    nside = harmonics.nside_of(qu.shape[-1])
    if nside is None or (header.get("NSIDE") is not None and int(header["NSIDE"]) != nside):
        raise DataError(
            f"{path}: {qu.shape[-1]} pixels do not make the nside {header.get('NSIDE')} "
            "its header states"
        )
    units = {str(header.get(f"TUNIT{i + 1 + partial}", "")).strip() for i in (q, u)} - {""} or (
        {str(header["BUNIT"]).strip()} if header.get("BUNIT") else set()
    )
    if len(units) > 1:
        raise DataError(f"{path}: Q and U columns have different units {sorted(units)}")
    unit = units.pop() if units else None
    return HealpixMap(user_maps.to_ring(qu, ordering), nside, ordering, unit)
