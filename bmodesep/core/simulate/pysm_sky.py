"""PySM3 foregrounds selected by preset name (``d1s1``, ``d10s5``, ``c1d1s1``, ...).

Templates are read from ``$PYSM_LOCAL_DATA`` (PySM's own lookup); unless downloads are
allowed, every template a model needs is checked for before PySM is called, so a
machine without the data gets one clear message listing the files, instead of a
network error.  Emission is taken at delta-function bands and converted from uK_RJ
to uK_CMB.  CMB models (``c*``) are skipped unless the sky config asks for PySM's CMB:
by default the CMB comes from the CAMB realisation with the configured r and A_lens.
"""

from __future__ import annotations

import configparser
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from bmodesep.errors import ConfigError, DataError

_MODEL = re.compile(r"[a-z]+\d+")
_TEMPLATE_SUFFIXES = (".fits", ".fits.gz", ".dat", ".txt")


@lru_cache(maxsize=1)
def _presets() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read_string(resources.files("pysm3").joinpath("data/presets.cfg").read_text())
    return parser


def parse_preset(preset: str) -> list[str]:
    """``"c1d1s1"`` -> ``["c1", "d1", "s1"]``; unknown model names raise ConfigError."""
    models = _MODEL.findall(preset)
    if not models or "".join(models) != preset:
        raise ConfigError(
            f"cannot read PySM preset '{preset}': expected model names run "
            "together, e.g. d1s1 or c1d10s5"
        )
    unknown = [m for m in models if not _presets().has_section(m)]
    if unknown:
        raise ConfigError(f"unknown PySM model(s) {', '.join(unknown)} in preset '{preset}'")
    return models


def required_templates(model: str) -> list[list[str]]:
    """Template files of ``model``: each entry lists alternatives (one per template nside)."""
    section = _presets()[model]
    nsides = re.findall(r"\d+", section.get("available_nside", ""))
    out = []
    for value in section.values():
        name = value.strip().strip('"')
        if not name.endswith(_TEMPLATE_SUFFIXES):
            continue
        if "{nside}" in name:
            out.append([name.replace("{nside}", n) for n in nsides] or [name])
        else:
            out.append([name])
    return out


def missing_templates(models: list[str], data_dir: str | None) -> list[str]:
    base = Path(data_dir) if data_dir else None
    missing = []
    for model in models:
        for alternatives in required_templates(model):
            if base is None or not any((base / a).exists() for a in alternatives):
                missing.append(" or ".join(alternatives))
    return missing


def foreground_models(preset: str, cmb_from_pysm: bool = False) -> list[str]:
    models = parse_preset(preset)
    return [m for m in models if cmb_from_pysm or not m.startswith("c")]


def require_templates(preset: str, data_dir: str | None, cmb_from_pysm: bool = False) -> None:
    """Raise DataError naming every template of ``preset`` missing from ``data_dir``
    (PySM's ``PYSM_LOCAL_DATA``, None when it is not set)."""
    missing = missing_templates(foreground_models(preset, cmb_from_pysm), data_dir)
    if missing:
        where = f"PYSM_LOCAL_DATA={data_dir}" if data_dir else "PYSM_LOCAL_DATA is not set"
        raise DataError(
            f"PySM preset '{preset}' needs template files that are not available "
            f"({where}); missing: {', '.join(missing)}. Download PySM's data folder and "
            "point PYSM_LOCAL_DATA at it, or set allow_download: true in the sky's pysm "
            "config on a machine with internet access, or use a grf sky."
        )


def pysm_frequency_maps(
    preset: str,
    nside: int,
    freqs_ghz,
    data_dir: str | None,
    cmb_from_pysm: bool = False,
    allow_download: bool = False,
) -> np.ndarray:
    """Q/U of the PySM models of ``preset`` at each frequency, ``[freq, 2, npix]`` uK_CMB.

    PySM itself reads its templates from ``$PYSM_LOCAL_DATA``; ``data_dir`` is that
    value, given by the caller, to check the templates before PySM is asked for them.
    """
    import pysm3
    import pysm3.units as u

    models = foreground_models(preset, cmb_from_pysm)
    if not allow_download:
        require_templates(preset, data_dir, cmb_from_pysm)
    try:
        sky = pysm3.Sky(nside=nside, preset_strings=models, output_unit="uK_RJ")
        out = []
        for nu in np.asarray(freqs_ghz, dtype=float):
            emission = sky.get_emission(nu * u.GHz).to_value(u.uK_RJ)
            to_cmb = (1.0 * u.uK_RJ).to_value(
                u.uK_CMB, equivalencies=u.cmb_equivalencies(nu * u.GHz)
            )
            out.append(np.asarray(emission[1:3]) * to_cmb)
    except OSError as exc:  # URLError, missing files that slipped through
        raise DataError(f"PySM preset '{preset}' failed to load its templates: {exc}") from exc
    maps = np.stack(out)
    if not np.all(np.isfinite(maps)):
        raise DataError(
            f"PySM preset '{preset}' gave NaN or inf (check the templates in {data_dir})"
        )
    return maps
