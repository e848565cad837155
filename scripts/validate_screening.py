"""Does the screened grid search select what the exhaustive grid selects? (issue 28)

Reads, for each simulation and zone of a config, the exhaustive grid's selection table
(every configuration measured over its noise realisations) and the screened search's
pass-1 chunks (every configuration's noiseless fit and predictions), and for every
selection rule applies the screen (:func:`bmodesep.core.compsep.screening.candidates`)
and the rule to the candidates' measured values, which are those pass 2 measures (the
same fits of the same realisations).  One CSV row per simulation, zone and rule, with
the candidates, the fraction of the exhaustive grid's fits they need, both choices and
the predicted / measured variance ratios.  For example::

    python scripts/validate_screening.py --config config/paper1_cpu.yaml \\
        --exhaustive results/paper1_cpu --screened results/paper1_cpu_screened \\
        --margin 0.1 --output screening.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bmodesep.config import load_config
from bmodesep.core.compsep import gridsearch, screening, selection
from bmodesep.errors import BmodesepError
from bmodesep.products import compsep as products
from bmodesep.products import io
from bmodesep.stages import compsep as stage_module

COLUMNS = (
    "simulation",
    "zone",
    "rule",
    "configurations",
    "candidates",
    "fits_fraction",
    "exhaustive_choice",
    "screened_choice",
    "same",
    "variance_ratio_min",
    "variance_ratio_median",
    "variance_ratio_max",
)


def zone_rows(config, name: str, zone: str, exhaustive: Path, screened: Path, margin: float):
    stage = stage_module._compsep_config(config, name)
    grid = exhaustive / "compsep" / name / "grid" / zone
    sel = products.read_grid_selection(grid / "selection.h5")
    measured = dict(sel.data)
    fsky = float(sel.attrs["fsky"])
    spectra = exhaustive / "spectra" / "camb.h5"
    chunks = sorted((screened / "compsep" / name / "grid" / zone).glob("screen_chunk*.h5"))
    table, _ = stage_module.screen_table(stage, zone, chunks)
    if not np.array_equal(table[products.CONFIGURATION], measured[products.CONFIGURATION]):
        raise BmodesepError(f"{name} {zone}: the two runs have different grids")
    predicted = stage_module.predicted_criteria(stage, name, table, spectra, fsky)
    exact = stage_module.selection_criteria(stage, name, measured, spectra, fsky)
    ratio = table[products.PREDICTED_CMB_VARIANCE] / measured[products.CMB_VARIANCE]
    n_real = stage_module.noise_realisations(stage, name)
    configured = stage_module.selection_rule(stage)
    points = gridsearch.grid_points(stage["compsep"]["grid"])
    for rule_name in selection.RULES:
        rule = configured._replace(name=rule_name)
        if rule_name == "r_aware" and exact.systematic_bb is None:
            continue
        keep = screening.candidates(
            predicted, table[products.FREE_PARAMETERS], rule, margin
        ).candidates
        idx = np.flatnonzero(keep)
        subset = exact.take(idx)
        full_choice = selection.select(exact, rule)[0]
        screened_choice = int(idx[selection.select(subset, rule)[0]])
        yield {
            "simulation": name,
            "zone": zone,
            "rule": rule_name,
            "configurations": len(points),
            "candidates": int(idx.size),
            "fits_fraction": f"{screening.fits_fraction(len(points), idx.size, n_real):.4f}",
            "exhaustive_choice": "/".join(str(k) for k in points[full_choice]),
            "screened_choice": "/".join(str(k) for k in points[screened_choice]),
            "same": full_choice == screened_choice,
            "variance_ratio_min": f"{ratio.min():.4f}",
            "variance_ratio_median": f"{np.median(ratio):.4f}",
            "variance_ratio_max": f"{ratio.max():.4f}",
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--exhaustive", required=True, type=Path, help="results_dir of it")
    parser.add_argument("--screened", required=True, type=Path, help="results_dir of pass 1")
    parser.add_argument("--margin", type=float, default=None, help="default: the config's")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        cs = config["compsep"]
        margin = cs["grid"]["margin"] if args.margin is None else args.margin
        rows = []
        for name in cs["simulations"]:
            for zone in cs["zones"]:
                for row in zone_rows(config, name, zone, args.exhaustive, args.screened, margin):
                    print(row, flush=True)
                    rows.append(row)
        io.write_csv_atomic(args.output, rows, COLUMNS)
    except BmodesepError as exc:
        print(f"validate_screening: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
