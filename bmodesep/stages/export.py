"""Standard outputs: a method's maps as HEALPix FITS files (``workflow/rules/export.smk``).


    bmodesep export export_maps --config C --simulation S --method M --fits Z1.h5 Z2.h5 ...
        --outputs CMB FOREGROUNDS PARAMETERS PATCHES RESIDUAL
    bmodesep export export_nilc --config C --simulation S --compression NAME --nilc F
        --output B_MAPS

The fits of every zone of one simulation and method (one ``compsep_fit`` product per
zone) are joined into full-sky RING maps, UNSEEN outside the zones, in five files (in
this order): the reconstructed CMB Q/U of the first noise realisation; its dust and
synchrotron Q/U amplitudes at their reference frequencies; the spectral parameters
beta_d, T_d, beta_s of that fit; the patch labels of each parameter (numbered across the
zones, zone after zone, so that every patch has its own label); and the foreground
residual W(d_fg) of the CMB (the systematic residual map, eq. 11).  Of maps that contain
their noise: the maps of their own fit, and instead of the foreground residual (unknown
without truth) the per-pixel standard deviation of the CMB over the bootstrap
realisations around that fit, its statistical error.  Each file carries
units, coordinate system (Galactic), ordering, nside and the provenance of its products
(``bmodesep.products.fits.write_healpix_fits``).

A NILC compression (a B-mode ILC: it makes scalar B-mode maps, not Q/U) is exported as one
file of its component B maps (CMB, dust, synchrotron, moments: one column each) of the
first noise realisation, averaged over the splits.
"""

from __future__ import annotations

from bmodesep.config import simulation_config
from bmodesep.core import export, harmonics
from bmodesep.core.seds import SPECTRAL_PARAMETERS as PARAMETERS
from bmodesep.errors import ConfigError, DataError
from bmodesep.products import compsep as fit_product
from bmodesep.products import fits as fits_files
from bmodesep.products import io
from bmodesep.products import nilc as nilc_product
from bmodesep.steps import File, Name, step

EXPORTS = fits_files.EXPORTS
PARAMETER_UNITS = {"beta_d": "1", "temperature_d": "K", "beta_s": "1"}


@step
def export_maps(
    config, simulation: Name, method: Name, fits: list[File], outputs: list[File]
) -> None:
    """Rule export_maps: one method's maps of every zone as HEALPix FITS files."""
    if simulation not in config["compsep"]["simulations"]:
        raise ConfigError(f"simulation '{simulation}' is not in compsep.simulations")
    if len(outputs) != len(EXPORTS):
        raise ConfigError(f"{len(outputs)} outputs, expected {len(EXPORTS)}: {EXPORTS}")
    stage = simulation_config(config, simulation, with_compsep=True)
    nside = stage["simulations"][simulation]["nside"]
    products = [fit_product.read_compsep_fit(path, nside) for path in fits]
    for p in products:
        if p.attrs["method"] != method:
            raise DataError(f"{p.path} holds method '{p.attrs['method']}', expected '{method}'")
        if fit_product.COMPONENTS not in p.data:
            raise DataError(f"{p.path} has no component maps: rerun its compsep_fit")
    zones = [str(p.attrs["zone"]) for p in products]
    if len(set(zones)) != len(zones):
        raise DataError(f"zones given twice: {zones}")
    cs = stage["compsep"]
    header = {
        "METHOD": (method, "component separation method"),
        "SIM": (simulation, "simulation (bmodesep config)"),
        "ZONES": (",".join(zones), "zones joined; UNSEEN elsewhere"),
    }
    observation = all(fit_product.observed(p) for p in products)
    if not observation and any(fit_product.observed(p) for p in products):
        raise DataError(f"fits of an observation mixed with simulated ones: {fits}")
    first = (
        {"REALIS": ("observed", "the observed maps (they contain their noise)")}
        if observation
        else {"REALIS": (0, "noise realisation of the maps")}
    )
    residual = (
        {"CONTENT": ("STD(s_boot - s_obs)", "statistical error of the CMB map (bootstrap)")}
        if observation
        else {"CONTENT": ("W(d_fg)_CMB", "foreground residual of the CMB map")}
    )
    extra = {
        "cmb": first,
        "foregrounds": first
        | {
            "DUSTREF": (cs["dust_freq_ref_ghz"], "GHz, dust reference frequency"),
            "SYNCREF": (cs["sync_freq_ref_ghz"], "GHz, synchrotron reference frequency"),
        },
        "parameters": first,
        "patches": {},
        "residual": residual,
    }
    provenance = io.provenance(stage, stage["simulations"][simulation]["seed"], "export_maps")
    columns = _columns(products, harmonics.npix(nside), observation)
    for what, path in zip(EXPORTS, outputs, strict=True):
        fits_files.write_healpix_fits(path, columns[what], provenance, header | extra[what])


def _columns(products, npix: int, observation: bool) -> dict[str, dict[str, tuple]]:
    """The columns (name: full-sky map, unit) of each exported file; of an observation,
    its own fit's parameters, and as residual the bootstrap's standard deviation."""
    pixels = [p[fit_product.PIXELS] for p in products]

    def joined(name, index):
        return export.join_zones(pixels, [p[name][index] for p in products], npix)

    def spread(i):
        std = [(p[fit_product.CMB_QU][:, i] - p[comps][0, i]).std(axis=0) for p in products]
        return export.join_zones(pixels, std, npix)

    def patches(parameter):
        return export.join_patch_labels([p[fit_product.patches_name(parameter)] for p in products])

    comps, params = fit_product.COMPONENTS, fit_product.PARAMETER_MAPS
    residual = fit_product.SYSTEMATIC_COMPONENTS
    qu = ("Q", "U")

    def parameter(k):
        if observation:
            return joined(fit_product.OBSERVED_PARAMETER_MAPS, k)
        return joined(params, (0, k))

    def residual_map(i, s):
        if observation:
            return f"{s}_CMB_STD", (spread(i), "uK_CMB")
        return f"{s}_FG_RESIDUAL", (joined(residual, (0, i)), "uK_CMB")

    return {
        "cmb": {f"{s}_CMB": (joined(comps, (0, i)), "uK_CMB") for i, s in enumerate(qu)},
        "foregrounds": {
            f"{s}_{c}": (joined(comps, (k, i)), "uK_CMB")
            for k, c in ((1, "DUST"), (2, "SYNC"))
            for i, s in enumerate(qu)
        },
        "parameters": {
            p.upper(): (parameter(k), PARAMETER_UNITS[p]) for k, p in enumerate(PARAMETERS)
        },
        "patches": {f"PATCH_{p.upper()}": (patches(p), "1") for p in PARAMETERS},
        "residual": dict(residual_map(i, s) for i, s in enumerate(qu)),
    }


@step
def export_nilc(config, simulation: Name, compression: Name, nilc: File, output: File) -> None:
    """Rule export_nilc: a NILC compression's component B maps as one HEALPix FITS file."""
    if simulation not in config["nilc"]["simulations"]:
        raise ConfigError(f"simulation '{simulation}' is not in nilc.simulations")
    stage = simulation_config(config, simulation, with_nilc=True)
    p = nilc_product.read_nilc(nilc)
    if p.attrs["compression"] != compression:
        raise DataError(f"{nilc} holds compression '{p.attrs['compression']}', not '{compression}'")
    maps = p[nilc_product.MAPS]  # [realisation, split, component, pix]
    if maps.shape[0] == 0:
        raise DataError(f"{nilc} has no noise realisation to export")
    names = [str(c) for c in p.attrs["components"]]
    columns = {
        f"B_{name.upper()}": (m, "uK_CMB")
        for name, m in zip(names, maps[0].mean(axis=0), strict=True)
    }
    header = {
        "METHOD": ("nilc", "needlet / harmonic ILC (B modes)"),
        "COMPRESS": (compression, "compression (bmodesep config)"),
        "SIM": (simulation, "simulation (bmodesep config)"),
        "REALIS": (
            ("observed", "the observed maps (they contain their noise)")
            if p.attrs.get("contains_noise", False)
            else (0, "noise realisation of the maps")
        ),
        "SPLITS": (maps.shape[1], "splits averaged"),
    }
    provenance = io.provenance(stage, stage["simulations"][simulation]["seed"], "export_nilc")
    fits_files.write_healpix_fits(output, columns, provenance, header)
