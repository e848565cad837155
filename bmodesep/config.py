"""Configuration: load YAML, validate against the JSON schema, fill defaults, cross-check.

The schema (``bmodesep/schemas/config.schema.yaml``) is the single source of the
config's keys, types and defaults; the Snakefile validates with the same file.
On top of the schema this module checks what a schema cannot: HEALPix nside a power
of two, simulations that name existing skies and instruments, per-band lists of the
instrument's length, known presets.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
from collections.abc import Hashable, Iterable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bmodesep.core.npe.prior import PARAMETERS
from bmodesep.core.seds import SPECTRAL_PARAMETERS
from bmodesep.errors import ConfigError

SCHEMA_RESOURCE = "schemas/config.schema.yaml"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("bmodesep").joinpath(SCHEMA_RESOURCE).read_text()
    return yaml.safe_load(text)


def _filling_validator() -> type:
    base = jsonschema.validators.validator_for(schema())

    def fill_properties(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema_)

    # YAML's 32.0 is an integer to JSON Schema; to the code it is a float that breaks
    # range(), array shapes and HEALPix arithmetic: integers must be written as integers
    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, x: isinstance(x, int) and not isinstance(x, bool)
    )
    return jsonschema.validators.extend(base, {"properties": fill_properties}, type_checker=strict)


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_config(raw: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated deep copy of ``raw`` with defaults filled; raise ConfigError."""
    config = copy.deepcopy(dict(raw))
    not_finite = _non_finite(config)
    if not_finite:  # before the schema: NaN passes every minimum and maximum
        key, value = not_finite[0]
        raise ConfigError(f"{source}: {key}: {value} is not a finite number")
    validator = _filling_validator()(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source}: {_where(e)}: {_explain(e)}" for e in errors[:10]]
        more = f"\n  ({len(errors) - 10} more)" if len(errors) > 10 else ""
        rest = "".join(f"\n  {line}" for line in lines[1:])
        raise ConfigError(lines[0] + (f"\nfurther problems:{rest}" if rest else "") + more)
    check_consistency(config, source)
    return config


def _non_finite(node: Any, where: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every NaN or infinite number in a config tree."""
    if isinstance(node, float) and not math.isfinite(node):
        return [(where or "<top level>", node)]
    if isinstance(node, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in node.items())
    elif isinstance(node, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(node))
    else:
        return []
    return [found for key, value in items for found in _non_finite(value, key)]


def _explain(error: jsonschema.ValidationError) -> str:
    types = error.validator_value if isinstance(error.validator_value, list) else [None]
    if error.validator == "type" and "integer" in [error.validator_value, *types]:
        if isinstance(error.instance, float) and error.instance.is_integer():
            return f"{error.instance!r} is not an integer (write {int(error.instance)})"
    if error.validator == "uniqueItems":
        seen, repeated = [], []
        for item in error.instance:
            (repeated if item in seen else seen).append(item)
        return f"{error.instance} lists {repeated[0]!r} more than once"
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        words = []
        for key in extra:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            words.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        return f"unknown key{'s' if len(extra) > 1 else ''} {', '.join(words)}"
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        deepest = max(error.context, key=lambda e: len(e.absolute_path), default=None)
        if deepest is not None:
            return f"{_where(deepest)}: {_explain(deepest)}"
    return error.message


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _check_instruments(config: Mapping[str, Any]) -> list[str]:
    """Every instrument resolves (preset names, per-band list lengths, 1/f noise)."""
    from bmodesep.settings import resolve_instrument  # local: settings imports the core

    problems: list[str] = []
    for name in config["instruments"]:
        try:
            resolve_instrument(config, name)
        except ConfigError as exc:
            text = str(exc)
            key = f"instruments.{name}"
            problems.append(text if text.startswith(key) else f"{key}: {text}")
    return problems


def _check_simulations(config: Mapping[str, Any]) -> list[str]:
    """Simulations name defined skies and instruments, at a power-of-two nside."""
    problems: list[str] = []
    for name, sim in config["simulations"].items():
        where = f"simulations.{name}"
        if sim["sky"] not in config["skies"]:
            problems.append(
                f"{where}.sky: unknown sky '{sim['sky']}' (defined: {', '.join(config['skies'])})"
            )
        if sim["instrument"] not in config["instruments"]:
            problems.append(
                f"{where}.instrument: unknown instrument '{sim['instrument']}' "
                f"(defined: {', '.join(config['instruments'])})"
            )
        if not is_power_of_two(sim["nside"]):
            problems.append(f"{where}.nside: {sim['nside']} is not a power of two")
        lmax = simulation_lmax(sim)
        if sim.get("lmax") is not None and sim["lmax"] > 3 * sim["nside"] - 1:
            problems.append(
                f"{where}.lmax: {sim['lmax']} is above 3 nside - 1 = {3 * sim['nside'] - 1}, "
                "the largest multipole a HEALPix map of that nside holds"
            )
        if lmax > config["cmb"]["lmax"]:
            problems.append(f"{where}.lmax: {lmax} exceeds cmb.lmax {config['cmb']['lmax']}")
    return problems


PATCH_SOURCES = ("superpixel_nside", "file", "kmeans")  # how a true patch map is made


def _check_skies(config: Mapping[str, Any]) -> list[str]:
    """True-patch skies have their patch maps; PySM presets are known."""
    problems: list[str] = []
    for name, sky in config["skies"].items():
        if sky["kind"] == "true_patch":
            missing = set(SPECTRAL_PARAMETERS) - set(sky["patches"])
            if missing:
                problems.append(
                    f"skies.{name}.patches: true_patch sky needs patch maps for "
                    f"{', '.join(sorted(missing))}"
                )
            for param, spec in sky["patches"].items():
                given = [k for k in PATCH_SOURCES if k in spec]
                if len(given) != 1:
                    problems.append(
                        f"skies.{name}.patches.{param}: give exactly one of "
                        f"{', '.join(PATCH_SOURCES)}"
                    )
                elif "kmeans" in spec and config["masks"]["source"] == "synthetic":
                    problems.append(
                        f"skies.{name}.patches.{param}.kmeans: K-means true patches are "
                        "drawn in the zones, so the masks must not depend on the sky: set "
                        "masks.source to latitude or planck (synthetic masks threshold "
                        "this very sky)"
                    )
                elif (
                    "superpixel_nside" in spec
                    and spec["superpixel_nside"] > 0
                    and not is_power_of_two(spec["superpixel_nside"])
                ):
                    problems.append(
                        f"skies.{name}.patches.{param}.superpixel_nside: "
                        f"{spec['superpixel_nside']} is not a power of two"
                    )
        if sky["kind"] == "pysm":
            from bmodesep.core.simulate.pysm_sky import parse_preset

            try:
                parse_preset(sky["pysm"]["preset"])
            except ConfigError as exc:
                problems.append(f"skies.{name}.pysm.preset: {exc}")
    return problems


def _check_maps(config: Mapping[str, Any]) -> list[str]:
    """Skies of kind maps: a pattern that names one file per band, known units, and only
    the uses their files allow (issue 29, bmodesep/core/maps.py)."""
    from bmodesep.core import maps as user_maps
    from bmodesep.errors import DataError

    problems: list[str] = []
    map_skies = {n for n, s in config["skies"].items() if s["kind"] == "maps"}
    for name in sorted(map_skies):
        spec, where = config["skies"][name]["maps"], f"skies.{name}.maps"
        if not spec["total"]:
            problems.append(f"{where}.total: a maps sky needs the path pattern of its maps")
        if spec["units"] is not None:
            try:
                user_maps.canonical_unit(spec["units"])
            except DataError as exc:
                problems.append(f"{where}.units: {exc}")
    for sim_name, sim in config["simulations"].items():
        if sim["sky"] not in map_skies or sim["instrument"] not in config["instruments"]:
            continue
        spec, where = config["skies"][sim["sky"]]["maps"], f"skies.{sim['sky']}.maps"
        try:
            freqs = _instrument_frequencies(config, sim["instrument"])
        except ConfigError:
            continue  # reported by _check_instruments
        splits = resolve_instrument_splits(config, sim["instrument"])
        for key in ("total", "foregrounds", "variance"):
            if spec[key]:
                try:
                    if key == "total" and spec["contains_noise"]:
                        user_maps.observation_paths(spec[key], freqs, splits)
                    else:
                        user_maps.band_paths(spec[key], freqs)
                except ConfigError as exc:
                    problems.append(f"{where}.{key}: {exc}")
        if spec["contains_noise"]:
            problems += _check_observation(config, sim_name, sim, where)
        key = {"variance": "variance", "simulations": "noise_simulations"}.get(spec["noise"])
        if key and not spec[key]:
            problems.append(
                f"{where}.{key}: noise '{spec['noise']}' needs the pattern of its files"
            )
        if spec["noise"] == "simulations" and spec["noise_simulations"]:
            try:
                user_maps.noise_paths(
                    spec["noise_simulations"], freqs, sim["noise_realisations"], splits
                )
            except ConfigError as exc:
                problems.append(f"{where}.noise_simulations: {exc}")
        if config["masks"]["source"] == "synthetic":
            problems.append(
                f"masks.source: synthetic masks threshold a simulated sky's dust; simulation "
                f"{sim_name} is made of maps (sky {sim['sky']}): use latitude or planck"
            )
        if sim_name in config["compsep"]["simulations"] and not spec["contains_noise"]:
            for key, use in (("foregrounds", "systematic residual"), ("cmb", "residual spectra")):
                if not spec[key]:
                    problems.append(
                        f"{where}.{key}: compsep.simulations lists {sim_name}, whose {use} "
                        f"need the {key} maps"
                    )
    for name in config["compsep"]["selection_from"]:
        sim = config["simulations"].get(name)
        spec = config["skies"].get(sim["sky"], {}) if sim else {}
        if not (spec.get("kind") == "maps" and spec["maps"]["contains_noise"]):
            problems.append(
                f"compsep.selection_from.{name}: only a simulation whose maps contain their "
                "noise takes its selection from another"
            )
    for name, spec in config["npe"]["test_sets"].items():
        fixed = config["simulations"].get(spec["foreground"] or "")
        if fixed is not None and fixed["sky"] in map_skies:
            problems.append(
                f"npe.test_sets.{name}.foreground: simulation {spec['foreground']} is made of "
                "maps, without separate foreground components"
            )
    return problems


def _check_observation(config, name: str, sim: Mapping[str, Any], where: str) -> list[str]:
    """Maps that contain their noise: no truth, so no truth-based key, and the analyses
    that can run without it (``maps.contains_noise`` in the schema)."""
    spec, problems = config["skies"][sim["sky"]]["maps"], []
    for key in ("foregrounds", "cmb"):
        if spec[key]:
            problems.append(
                f"{where}.{key}: maps that contain their noise are analysed without truth; "
                f"remove {key} (or contains_noise, for a simulation with separate noise)"
            )
    if name in config["compsep"]["simulations"]:
        cs = config["compsep"]
        model = cs["selection_from"].get(name)
        if model is None:
            problems.append(
                f"compsep.selection_from.{name}: simulation {name}'s maps contain their noise, "
                "so its K-means patch counts must come from a simulated sky's grid search; "
                "name that simulation"
            )
        elif model not in cs["simulations"] or model == name:
            problems.append(
                f"compsep.selection_from.{name}: '{model}' is not another simulation of "
                "compsep.simulations"
            )
        elif config["simulations"][model]["nside"] != sim["nside"]:
            problems.append(
                f"compsep.selection_from.{name}: '{model}' has nside "
                f"{config['simulations'][model]['nside']}, {name} {sim['nside']}"
            )
        elif model in cs["selection_from"]:
            problems.append(
                f"compsep.selection_from.{name}: '{model}' has no grid search of its own "
                "(its maps contain their noise too)"
            )
        if config["rlike"]["spectrum"] != "master":
            problems.append(
                f"rlike.spectrum: simulation {name}'s maps contain their noise; their r "
                "likelihood needs master (the f_sky-corrected spectrum of a masked map keeps "
                "the CMB's E-to-B leakage)"
            )
    if name in config["nilc"]["simulations"] and config["nilc"]["input"] != "qu":
        problems.append(
            f"nilc.input: simulation {name}'s maps contain their noise; NILC takes them as "
            "Q/U (set qu)"
        )
    if (
        name in config["npe"]["observed"]
        and resolve_instrument_splits(config, sim["instrument"]) < 2
    ):
        problems.append(
            f"simulations.{name}.instrument: SBI and the power-spectrum likelihood take "
            f"cross-spectra of 2 splits, and the maps of {name} (with their noise) have one"
        )
    return problems


def _instrument_frequencies(config: Mapping[str, Any], name: str) -> list[float]:
    from bmodesep.settings import resolve_instrument

    return list(resolve_instrument(config, name).frequencies_ghz)


def resolve_instrument_splits(config: Mapping[str, Any], name: str) -> int:
    from bmodesep.settings import resolve_instrument

    return resolve_instrument(config, name).splits


def _check_compsep(config: Mapping[str, Any]) -> list[str]:
    """Component separation: simulations it can fit, bounds, multi-resolution tables
    (instruments with beams, filters and splits are brought to one resolution and one
    split first: bmodesep.core.simulate.common_resolution)."""
    problems: list[str] = []
    cs = config["compsep"]
    for name in cs["simulations"]:
        if name not in config["simulations"]:
            problems.append(f"compsep.simulations: unknown simulation '{name}'")
            continue
    for param, (lo, hi) in cs["bounds"].items():
        if not lo < hi:
            problems.append(f"compsep.bounds.{param}: lower bound {lo} is not below {hi}")
        elif not lo <= cs["start"][param] <= hi:
            problems.append(
                f"compsep.start.{param}: {cs['start'][param]} lies outside the bounds [{lo}, {hi}]"
            )
    configurations = math.prod(len(cs["grid"][p]) for p in SPECTRAL_PARAMETERS)
    if configurations and cs["chunks"] > configurations:
        problems.append(
            f"compsep.chunks: {cs['chunks']} grid jobs per zone for {configurations} grid "
            f"configurations (compsep.grid); at most {configurations}"
        )
    tables = {"multires": cs["multires"]}
    tables.update({f"multires_variants.{k}": v for k, v in cs["multires_variants"].items()})
    for table, families in tables.items():
        for family, spec in families.items():
            for param, n in spec.items():
                if n and not is_power_of_two(n):
                    problems.append(f"compsep.{table}.{family}.{param}: {n} is not a power of two")
    return problems


def _check_nilc(config: Mapping[str, Any]) -> list[str]:
    """NILC: simulations, compressions and a decreasing needlet FWHM list."""
    problems: list[str] = []
    nl = config["nilc"]
    for name in nl["simulations"]:
        if name not in config["simulations"]:
            problems.append(f"nilc.simulations: unknown simulation '{name}'")
    for name in nl["run"]:
        if name not in nl["compressions"]:
            problems.append(
                f"nilc.run: unknown compression '{name}' (defined: {', '.join(nl['compressions'])})"
            )
    for name, spec in nl["compressions"].items():
        comps = spec["components"]
        if len(set(comps)) != len(comps):
            problems.append(f"nilc.compressions.{name}: repeated components {comps}")
        if spec["keep"] != "all" and spec["keep"] not in comps:
            problems.append(
                f"nilc.compressions.{name}.keep: '{spec['keep']}' is neither 'all' "
                f"nor one of {comps}"
            )
    fwhm = nl["needlet_fwhm_arcmin"]
    if any(b >= a for a, b in itertools.pairwise(fwhm)):
        problems.append(f"nilc.needlet_fwhm_arcmin: {fwhm} must decrease strictly")
    return problems


def _check_npe(config: Mapping[str, Any]) -> list[str]:
    """SBI: compressions, test sets, observed skies, instrument and data-vector bins."""
    problems: list[str] = []
    nl = config["nilc"]
    npe = config["npe"]
    if npe["chunks"]:
        for c in npe["compressions"]:
            if c not in nl["compressions"]:
                problems.append(f"npe.compressions: unknown compression '{c}'")
        if len(set(npe["compressions"])) != len(npe["compressions"]):
            problems.append("npe.compressions: a compression is listed twice")
        for name, spec in npe["test_sets"].items():
            if name in ("train", "coverage"):
                problems.append(f"npe.test_sets: '{name}' is reserved")
            unknown = sorted(set(spec["fixed"]) - set(PARAMETERS))
            if unknown:
                problems.append(f"npe.test_sets.{name}.fixed: unknown parameters {unknown}")
            problems += _check_fixed_values(name, spec)
            if spec["foreground"] is not None:
                problems += _check_fixed_foreground(config, name, spec)
        if npe["observed"] and nl["mask"] is not None:
            problems.append("npe.observed: the simulator is full-sky; nilc.mask must be null")
        if npe["observed"] and npe["footprint"]["source"] != "full":
            problems.append(
                "npe.observed: the NILC stage does not apply npe.footprint, so its data "
                "vectors would not match the masked simulator; leave npe.observed empty"
            )
        if npe["training_fractions"] and not npe["coverage_simulations"]:
            problems.append("npe.training_fractions: needs coverage_simulations for TARP")
        if len(set(npe["training_fractions"])) != len(npe["training_fractions"]):
            problems.append("npe.training_fractions: a fraction is listed twice")
        training = npe["chunks"] * npe["simulations_per_chunk"]
        if (npe["tune"]["simulations"] or 0) > training:
            problems.append(
                f"npe.tune.simulations: {npe['tune']['simulations']} is more than the "
                f"{training} training simulations"
            )
        for name in npe["ps_likelihood"]["sets"]:
            if name not in npe["test_sets"]:
                problems.append(f"npe.ps_likelihood.sets: '{name}' is not in npe.test_sets")
        pl = npe["ps_likelihood"]
        if pl["sets"] and pl["burn"] >= pl["steps"]:
            problems.append("npe.ps_likelihood: burn must be below steps")
        if npe["footprint"]["source"] == "hits" and not npe["footprint"]["hits_file"]:
            problems.append("npe.footprint.hits_file: needed with source 'hits'")
        for sim in npe["observed"]:
            if sim not in config["simulations"]:
                problems.append(f"npe.observed: unknown simulation '{sim}'")
            elif sim not in nl["simulations"]:
                problems.append(f"npe.observed: '{sim}' is not in nilc.simulations")
            elif config["simulations"][sim]["nside"] != npe["nside"]:
                problems.append(
                    f"npe.observed: '{sim}' has nside {config['simulations'][sim]['nside']}, "
                    f"the estimator nside {npe['nside']}"
                )
            elif config["simulations"][sim]["instrument"] != npe["instrument"]:
                problems.append(
                    f"npe.observed: '{sim}' uses instrument "
                    f"'{config['simulations'][sim]['instrument']}', the estimator "
                    f"'{npe['instrument']}'"
                )
            elif simulation_lmax(config["simulations"][sim]) != npe_lmax(npe):
                problems.append(
                    f"npe.observed: '{sim}' has lmax "
                    f"{simulation_lmax(config['simulations'][sim])}, the estimator's "
                    f"simulations {npe_lmax(npe)} (set npe.lmax)"
                )
        if npe["instrument"] not in config["instruments"]:
            problems.append(f"npe.instrument: unknown instrument '{npe['instrument']}'")
        if not is_power_of_two(npe["nside"]):
            problems.append(f"npe.nside: {npe['nside']} is not a power of two")
        if npe["lmax"] is not None and npe["lmax"] > 3 * npe["nside"] - 1:
            problems.append(
                f"npe.lmax: {npe['lmax']} is above 3 npe.nside - 1 = {3 * npe['nside'] - 1}"
            )
        lmax = npe_lmax(npe)
        if npe["ell_min"] + npe["bin_width"] - 1 > min(npe["ell_max"], lmax):
            problems.append("npe: no complete data-vector bin between ell_min and ell_max / lmax")
    return problems


FIXED_SIGMAS = 5.0  # a test set's fixed value lies within this many prior sds of its centre


def _check_fixed_values(name: str, spec: Mapping[str, Any]) -> list[str]:
    """A test set's fixed parameters lie where the estimator was trained: inside the
    support of the set's prior and within FIXED_SIGMAS of its centre (further out the
    posterior is an extrapolation of the flow, not an inference)."""
    from bmodesep.core.npe.prior import prior  # local: the prior module imports nothing heavy

    marginals = dict(zip(PARAMETERS, prior(spec["prior"]).marginals, strict=True))
    problems = []
    for param, value in spec["fixed"].items():
        if param not in marginals:
            continue
        m, where = marginals[param], f"npe.test_sets.{name}.fixed.{param}"
        if not m.low <= value <= m.high:
            problems.append(
                f"{where}: {value} lies outside the support [{m.low:g}, {m.high:g}] of the "
                f"{spec['prior']} prior"
            )
        elif abs(value - m.mu) > FIXED_SIGMAS * m.sigma:
            problems.append(
                f"{where}: {value} is {abs(value - m.mu) / m.sigma:.0f} prior standard "
                f"deviations from the {spec['prior']} prior's centre {m.mu:g} (sd {m.sigma:g}); "
                f"the estimator is trained on the prior, so keep within {FIXED_SIGMAS:g} sd"
            )
    return problems


def _check_fixed_foreground(config: Mapping[str, Any], name: str, spec) -> list[str]:
    """A fixed-foreground test set: its simulation is seen like the estimator's data."""
    where, npe, sim_name = f"npe.test_sets.{name}", config["npe"], spec["foreground"]
    missing = [p for p in ("r", "A_lens") if p not in spec["fixed"]]
    if missing:
        return [f"{where}.fixed: a fixed-foreground set needs {missing} (the CMB's parameters)"]
    sim = config["simulations"].get(sim_name)
    if sim is None:
        return [f"{where}.foreground: unknown simulation '{sim_name}'"]
    problems = []
    if sim["instrument"] != npe["instrument"]:
        problems.append(
            f"{where}.foreground: simulation '{sim_name}' uses instrument "
            f"'{sim['instrument']}', the estimator '{npe['instrument']}'"
        )
    if sim["nside"] != npe["nside"]:
        problems.append(
            f"{where}.foreground: simulation '{sim_name}' has nside {sim['nside']}, "
            f"the estimator {npe['nside']}"
        )
    return problems


def _check_rlike(config: Mapping[str, Any]) -> list[str]:
    """The r grid."""
    problems: list[str] = []
    rl = config["rlike"]
    if not rl["r_min"] < rl["r_max"]:
        problems.append(f"rlike.r_min: {rl['r_min']} is not below rlike.r_max {rl['r_max']}")
    return problems


def _check_masks(config: Mapping[str, Any]) -> list[str]:
    """Mask sky fractions and the Planck file."""
    problems: list[str] = []
    fr = config["masks"]["sky_fractions"]
    if not fr["GAL020"] < fr["GAL040"] < fr["GAL060"]:
        problems.append("masks.sky_fractions: need GAL020 < GAL040 < GAL060")
    if config["masks"]["source"] == "planck" and not config["masks"]["planck_file"]:
        problems.append("masks.planck_file: required when masks.source is 'planck'")
    return problems


def _check_results_dir(config: Mapping[str, Any]) -> list[str]:
    """The results folder is a folder (or does not exist yet)."""
    path = Path(config["results_dir"])
    if path.exists() and not path.is_dir():
        return [f"results_dir: {path} exists and is not a folder"]
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return [f"results_dir: {parent} (a parent of {path}) is a file, not a folder"]
            break
    return []


CHECKS = (
    _check_results_dir,
    _check_instruments,
    _check_simulations,
    _check_skies,
    _check_maps,
    _check_compsep,
    _check_nilc,
    _check_npe,
    _check_rlike,
    _check_masks,
)


def check_consistency(config: Mapping[str, Any], source: str = "config") -> None:
    """Cross-section checks that the schema cannot express, one function per section."""
    problems = [p for check in CHECKS for p in check(config)]
    if problems:
        rest = "".join(f"\n  {source}: {line}" for line in problems[1:])
        raise ConfigError(
            f"{source}: {problems[0]}" + (f"\nfurther problems:{rest}" if rest else "")
        )


def compsep_methods(config: Mapping[str, Any]) -> list[str]:
    """Methods run: K-means, multi-resolution (Table 4 and its variants), single patch."""
    variants = [f"multires_{name}" for name in config["compsep"]["multires_variants"]]
    return ["kmeans", "multires", *variants, "single"]


def multires_table(config: Mapping[str, Any], method: str) -> Mapping[str, Any]:
    """Patch nsides per mask family of a multi-resolution method name."""
    cs = config["compsep"]
    if method == "multires":
        return cs["multires"]
    name = method.removeprefix("multires_")
    if not method.startswith("multires_") or name not in cs["multires_variants"]:
        known = ", ".join(compsep_methods(config))
        raise ConfigError(f"unknown method '{method}' (known: {known})")
    return cs["multires_variants"][name]


def npe_lmax(npe: Mapping[str, Any]) -> int:
    """Band limit of the SBI simulations: ``npe.lmax`` or 3 nside - 1."""
    return npe["lmax"] or 3 * npe["nside"] - 1


def simulation_lmax(sim: Mapping[str, Any]) -> int:
    """Band limit of a simulation: its ``lmax`` or 3 nside - 1."""
    return sim["lmax"] if sim.get("lmax") is not None else 3 * sim["nside"] - 1


def simulation_analysis_iterations(sim: Mapping[str, Any]) -> int:
    """Jacobi iterations of map-to-alm: configured, or 3 if lmax <= 2 nside else 0.

    Measured at nside 128: for pixel-defined foreground maps analysed to 3 nside - 1 the
    iterations oscillate (rms changes of up to 10% at the finest beams between 2 and 3
    iterations) instead of converging, so quadrature is the stable choice there.
    """
    if sim.get("analysis_iterations") is not None:
        return sim["analysis_iterations"]
    return 3 if simulation_lmax(sim) <= 2 * sim["nside"] else 0


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: the parser's problem and where (``line L, column C``)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (YAML would keep the last
    silently: a second ``cmb:`` block would replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *defaults' may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                first = seen[key]
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' appears twice in one mapping (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_config(paths: str | Path | Iterable[str | Path]) -> dict[str, Any]:
    """Load and merge YAML (or ``.json``) files, later ones overriding earlier ones; validate."""
    if isinstance(paths, str | Path):
        paths = [paths]
    merged: dict[str, Any] = {}
    names = []
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text: {exc.reason}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        if path.suffix == ".json":  # YAML 1.1 would read JSON's 1e-05 as a string
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
        else:
            try:
                data = yaml.load(text, Loader=_UniqueKeyLoader)
            except yaml.YAMLError as exc:
                raise ConfigError(
                    f"config file {path} is not valid YAML: {_yaml_problem(exc)}"
                ) from exc
        if data is None:
            raise ConfigError(f"config file {path} is empty (expected a mapping of settings)")
        if not isinstance(data, dict):
            raise ConfigError(
                f"config file {path} holds a {type(data).__name__} at top level, "
                "expected a mapping of settings"
            )
        _merge(merged, data)
        names.append(str(path))
    return validate_config(merged, source=" + ".join(names))


def simulation_config(
    config: Mapping[str, Any], name: str, with_compsep: bool = False, with_nilc: bool = False
) -> dict[str, Any]:
    """The part of ``config`` that simulation ``name`` depends on, itself a valid config.

    Used as the stage config written into provenance and passed to stage commands, so
    that editing an unrelated sky does not invalidate this simulation's products.
    """
    if name not in config["simulations"]:
        raise ConfigError(
            f"unknown simulation '{name}' (defined: {', '.join(config['simulations'])})"
        )
    sim = config["simulations"][name]
    out = {
        "results_dir": config["results_dir"],
        "cmb": config["cmb"],
        "masks": config["masks"],
        "skies": {sim["sky"]: config["skies"][sim["sky"]]},
        "instruments": {sim["instrument"]: config["instruments"][sim["instrument"]]},
        "simulations": {name: sim},
    }
    if with_compsep:
        out["compsep"] = dict(config["compsep"], simulations=[name], selection_from={})
        out["rlike"] = config["rlike"]
        model = config["compsep"]["selection_from"].get(name)
        if model in config["simulations"]:  # an observation's selection comes from model
            other = config["simulations"][model]
            out["skies"][other["sky"]] = config["skies"][other["sky"]]
            out["instruments"][other["instrument"]] = config["instruments"][other["instrument"]]
            out["simulations"][model] = other
            out["compsep"] |= {"simulations": [name, model], "selection_from": {name: model}}
    if with_nilc:
        out["nilc"] = dict(config["nilc"], simulations=[name])
    return out


def npe_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the config the simulations depend on (their provenance)."""
    npe, nl = config["npe"], config["nilc"]
    keep = (
        "instrument",
        "nside",
        "lmax",
        "compressions",
        "prior",
        "seed",
        "chunks",
        "simulations_per_chunk",
        "coverage_simulations",
        "test_sets",
        "ell_min",
        "ell_max",
        "bin_width",
        "analysis_iterations",
        "footprint",
    )
    fixed_fg = sorted({t["foreground"] for t in npe["test_sets"].values() if t["foreground"]})
    sims = {s: config["simulations"][s] for s in fixed_fg if s in config["simulations"]}
    out = {
        "cmb": config["cmb"],
        # which sets keep their frequency spectra for the likelihood, not how it samples
        "npe": {k: npe[k] for k in keep}
        | {"ps_likelihood": {"sets": npe["ps_likelihood"]["sets"]}},
        "instruments": {npe["instrument"]: config["instruments"][npe["instrument"]]},
        "nilc": {k: v for k, v in nl.items() if k not in ("simulations", "run", "compressions")}
        | {"compressions": {c: nl["compressions"][c] for c in npe["compressions"]}},
    }
    if sims:  # the skies whose foregrounds fixed-foreground test sets hold
        out["simulations"] = sims
        out["skies"] = {s["sky"]: config["skies"][s["sky"]] for s in sims.values()}
    return out


def npe_set_config(config: Mapping[str, Any], set_name: str) -> dict[str, Any]:
    """What one simulation set's chunks depend on: :func:`npe_config` with only that set
    among the test sets (and the power-spectrum likelihood's sets), so that adding or
    editing another test set, or any training, tuning or estimator setting, leaves the
    set's chunks as they are."""
    npe = config["npe"]
    narrowed = dict(config) | {
        "npe": dict(npe)
        | {
            "test_sets": {k: v for k, v in npe["test_sets"].items() if k == set_name},
            "ps_likelihood": dict(npe["ps_likelihood"])
            | {"sets": [s for s in npe["ps_likelihood"]["sets"] if s == set_name]},
        }
    }
    return npe_config(narrowed)
