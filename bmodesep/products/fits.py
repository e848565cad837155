"""HEALPix FITS maps: reading the maps a user brings, writing the maps bmodesep exports
(issue 29).

``read_healpix_fits`` reads the Q/U columns of a HEALPix binary-table FITS file (healpy),
whatever its ordering (the ``ORDERING`` keyword; returned RING), nside, explicit-index
(partial-sky) layout or column layout: the Q and U columns are found by their names
(``TTYPEn`` starting with Q or U followed by ``_`` or nothing: ``Q_STOKES``,
``Q_POLARISATION``, ``Q``; not ``QQ_COV``), else taken as the first two of two columns or
the second and third of three (I, Q, U); ``fields`` names them explicitly (0-based).  The
unit is that of the Q/U columns' ``TUNITn`` (or ``BUNIT``), None where the header has none.
Every problem is one DataError naming the file.

``write_healpix_fits`` writes full-sky RING maps as one binary table (one column per
map, each with its unit), with the keywords healpy and the Planck Legacy Archive use
(PIXTYPE, ORDERING, NSIDE, INDXSCHM, OBJECT, FIRSTPIX, LASTPIX, COORDSYS) and the
product's provenance (``BMS*`` keywords; the resolved stage config as one long string),
atomically (``bmodesep.products.io.write_bytes_atomic``).
"""

from __future__ import annotations

import io as _io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core import maps as user_maps
from bmodesep.errors import DataError
from bmodesep.products import io


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


def _qu_fields(
    path: Path, header: dict, fields, partial: bool, columns: tuple[str, str]
) -> tuple[int, int]:
    """The 0-based columns named ``columns`` (Q and U, or QQ and UU), counted as healpy
    counts them (after the PIXEL column of an explicit-index file)."""
    skip = 1 if partial else 0
    n = int(header.get("TFIELDS", 0)) - skip
    if fields is not None:
        q, u = (int(f) for f in fields)
        if not (0 <= q < n and 0 <= u < n):
            raise DataError(f"{path}: fields {list(fields)} given, the file has {n} columns")
        return q, u
    names = [str(header.get(f"TTYPE{i + 1 + skip}", "")).strip().upper() for i in range(n)]
    q, u = ([i for i, s in enumerate(names) if re.match(f"{c}(_|$)", s)] for c in columns)
    if len(q) == 1 and len(u) == 1:
        return q[0], u[0]
    if n == 2 or (n == 3 and columns == ("Q", "U")):
        return n - 2, n - 1
    raise DataError(
        f"{path}: cannot tell the {' and '.join(columns)} columns among {names or n}: "
        "set the fields key"
    )


def read_healpix_fits(path, fields=None, hdu: int = 1, columns=("Q", "U")) -> HealpixMap:
    """The Q/U maps of a HEALPix FITS file (module docstring); ``columns`` ("QQ", "UU"):
    its Q and U noise variances (``QQ_COV``, ``UU_COV`` ...; the first two of two)."""
    import healpy as hp

    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing map file {path}")
    header = _header(path, hdu)
    partial = str(header.get("INDXSCHM", "IMPLICIT")).strip().upper() == "EXPLICIT"
    q, u = _qu_fields(path, header, fields, partial, tuple(columns))
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


# the files export_maps writes for one simulation and method (bmodesep.stages.export)
EXPORTS = ("cmb", "foregrounds", "parameters", "patches", "residual")

# provenance attribute -> FITS keyword (at most 8 characters)
PROVENANCE_KEYWORDS = {
    "stage": "BMSSTAGE",
    "bmodesep_version": "BMSVERS",
    "git_revision": "BMSGIT",
    "seed": "BMSSEED",
    "created_utc": "DATE",
    "config": "BMSCONF",
}


def write_healpix_fits(
    path,
    columns: Mapping[str, tuple[np.ndarray, str]],
    provenance: Mapping[str, object],
    header: Mapping[str, tuple[object, str]] | None = None,
    coordsys: str = "G",
):
    """Full-sky RING maps ``{name: (map [npix], unit)}`` as a HEALPix FITS file."""
    from astropy.io import fits

    arrays = {name: np.asarray(m, dtype=np.float64) for name, (m, _) in columns.items()}
    sizes = {a.shape for a in arrays.values()}
    nside = harmonics.nside_of(next(iter(sizes))[0]) if len(sizes) == 1 else None
    if nside is None or any(len(s) != 1 for s in sizes):
        raise ValueError(f"{path}: columns must be HEALPix maps of one size, got {sizes}")
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise DataError(f"refusing to write {path}: column {name} holds NaN or inf")
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name=name, format="D", unit=unit, array=arrays[name])
            for name, (_, unit) in columns.items()
        ]
    )
    cards = {
        "PIXTYPE": ("HEALPIX", "HEALPIX pixelisation"),
        "ORDERING": ("RING", "pixel ordering scheme"),
        "NSIDE": (nside, "resolution parameter"),
        "INDXSCHM": ("IMPLICIT", "indexing: implicit (full sky)"),
        "OBJECT": ("FULLSKY", "sky coverage"),
        "FIRSTPIX": (0, "first pixel # (0 based)"),
        "LASTPIX": (harmonics.npix(nside) - 1, "last pixel # (0 based)"),
        "COORDSYS": (coordsys, "G = Galactic"),
        "EXTNAME": ("BMODESEP", ""),
        **(header or {}),
    }
    for attr, key in PROVENANCE_KEYWORDS.items():
        if attr in provenance:
            cards[key] = (provenance[attr], f"bmodesep {attr}")
    for key, (value, comment) in cards.items():
        table.header[key] = (value, comment)
    buffer = _io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return io.write_bytes_atomic(path, buffer.getvalue())
