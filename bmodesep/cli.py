"""The ``bmodesep`` command line: ``bmodesep <stage> <step> --config FILE ... --output F``.

One subcommand per stage (named like ``workflow/rules/<stage>.smk`` and
``bmodesep/stages/<stage>.py``) and one step per rule (named like the stage function the
rule runs).  The parser is built from the table below without importing the stages, so
``--help`` at every level answers at once; JAX and torch are imported only by the step
that runs.  Errors of the inputs, the config or a write (read-only folder, full disk) end
as one ``bmodesep: error:`` line naming the key or the file, and exit status 2; the
outputs' folders are checked to be writable before anything is computed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple


class Step(NamedTuple):
    help: str
    args: tuple[str, ...]  # NAME required path, ?NAME optional, *NAME one or more, #NAME int


def _steps(**steps: tuple[str, str]) -> dict[str, Step]:
    return {name: Step(text, tuple(args.split())) for name, (text, args) in steps.items()}


SIM = "simulation"
STAGES: dict[str, tuple[str, dict[str, Step]]] = {
    "simulate": (
        "CMB spectra, skies, masks, frequency maps and noise realisations",
        _steps(
            camb_spectra=("CAMB lensed-scalar and r = 1 tensor spectra", "output"),
            true_patches=("K-means patch maps of a true-patch sky", f"{SIM} masks output"),
            sky=(
                "the sky of a simulation: CMB, dust, synchrotron (kind maps: the CMB file)",
                f"{SIM} ?spectra ?patches ?cmb output",
            ),
            masks=("Galactic masks and zones", f"{SIM} ?sky ?planck ?signal output"),
            frequency_maps=(
                "signal maps in every band (kind maps: read from the user's FITS files)",
                f"{SIM} ?sky ?*total ?*foregrounds #threads output",
            ),
            noise=(
                "noise realisations of every split and band (kind maps: from its files)",
                f"{SIM} ?*variance ?*noise_files ?signal #threads output",
            ),
        ),
    ),
    "export": (
        "standard outputs: a method's maps as HEALPix FITS files",
        _steps(
            export_maps=(
                "CMB, foreground amplitude, spectral-parameter, patch and residual maps",
                f"{SIM} method *fits *outputs",
            ),
            export_nilc=(
                "a NILC compression's component B maps",
                f"{SIM} compression nilc output",
            ),
        ),
    ),
    "compsep": (
        "clustered parametric component separation (kabalan2025)",
        _steps(
            kmeans_patches=(
                "spherical K-means patches of one zone or several",
                f"{SIM} *zone masks *outputs",
            ),
            grid_screen_chunk=(
                "pass 1 of the screened grid search: noiseless fits and predictions",
                f"{SIM} *zone #chunk masks signal *patches ?sky ?noise #devices *output",
            ),
            grid_screen=(
                "the configurations the screened search measures in each zone",
                f"{SIM} *zone *chunks ?spectra *output",
            ),
            grid_chunk=(
                "one chunk of the patch-count grid search (screened: of its candidates)",
                f"{SIM} *zone #chunk masks signal *patches ?sky ?noise #devices ?*screen *output",
            ),
            grid_select=(
                "the selected configuration of each zone",
                f"{SIM} *zone *chunks ?spectra ?*screen *output",
            ),
            compsep_fit=(
                "the fits of one method in each zone",
                f"{SIM} *zone method masks signal ?*patches ?*selection ?noise #devices *output",
            ),
            recovery=(
                "the configuration each selection rule picks, against the true patches",
                f"{SIM} *selections ?spectra output",
            ),
            selection_rules=(
                "the configuration each selection rule picks, with its r-hat",
                f"{SIM} *selections ?spectra output",
            ),
        ),
    ),
    "rlike": (
        "residual BB spectra and the r likelihood (kabalan2025 sec. 4)",
        _steps(
            r_likelihood=("r likelihood of one method", f"{SIM} method ?sky spectra *fits output"),
        ),
    ),
    "nilc": (
        "needlet / harmonic ILC compression (duivenvoorden2025 sec. II.3)",
        _steps(
            nilc_compress=(
                "component maps of one compression",
                f"{SIM} compression signal noise ?masks output",
            ),
        ),
    ),
    "npe": (
        "simulation-based inference: simulations, training, posteriors, coverage",
        _steps(
            npe_chunk=(
                "one chunk of an SBI simulation set",
                "set #chunk spectra ?foreground output",
            ),
            npe_tune=(
                "Optuna search of the flow's hyperparameters",
                "compression *chunks #gpus output",
            ),
            npe_train=(
                "train the posterior estimator of one compression",
                "compression *chunks ?tuning #gpus output",
            ),
            npe_posterior=("posteriors of a simulation set", "estimator *chunks output"),
            npe_coverage=("TARP coverage of the coverage set", "posteriors output"),
            npe_yardstick=(
                "regressions of r on x: what an estimator should at least extract",
                "compression *chunks *coverage output",
            ),
            npe_observed=(
                "posterior and predictive check of a pipeline sky",
                f"estimator nilc spectra {SIM} output",
            ),
            npe_ps_likelihood=(
                "power-spectrum likelihood of a test set (App. E)",
                "*chunks spectra output",
            ),
            npe_ps_observed=(
                "power-spectrum likelihood of a pipeline simulation's maps",
                f"signal noise spectra {SIM} output",
            ),
            npe_predictive=(
                "predictive check of a test set's first dataset (Fig. 9)",
                "posteriors spectra output",
            ),
        ),
    ),
    "compare": (
        "one sky, two methods: r of every method on the same simulations",
        _steps(
            compare_summary=("r-hat, 68% interval and CPU hours per method (CSV)", "rows output"),
            fig_compare=("r intervals per method and sky", "summary output"),
        ),
    ),
    "figures": (
        "paper figures from the products",
        _steps(
            fig_grid_search=(
                "grid search: variance and NLL against patch counts",
                "selection output",
            ),
            fig_patches=("patch maps (kabalan2025 Figs. 1, 7, 8)", "*fits output"),
            fig_residual_maps=("residual maps (Fig. 9)", "*fits sky #nside output"),
            fig_metrics=("metrics (Fig. 11)", "*fits *rlike output"),
            fig_residual_spectra=("residual spectra (Fig. 10)", "*rlike output"),
            fig_r_likelihood=("r likelihoods (Fig. 12)", "*rlike output"),
            fig_r_hat_vs_k=("r-hat against K_beta_d (Fig. 13)", "*selections *rlike output"),
            r_summary=("r-hat, intervals and upper limits per method (CSV)", "*rlike output"),
            fig_tarp=("TARP coverage (duivenvoorden2025 Figs. 1, 11)", "coverage output"),
            fig_corner=("corner plot of posteriors (Figs. 2, 5)", "*posteriors output"),
            fig_predictive=("posterior predictive chi^2 (Fig. 9)", "*observed output"),
            fig_r_vs_sigma_beta=("r against the index power (Fig. 3)", "*posteriors output"),
            fig_sigma_r=("sigma_r per compression (Fig. 4)", "*posteriors output"),
            npe_summary=("summary table of the SBI run", "*posteriors output"),
            npe_table3=("Table 3 of the fixed-foreground skies (CSV)", "*posteriors output"),
            fig_training_size=(
                "TARP coverage against the training-set size (Fig. 1)",
                "*coverage *estimators output",
            ),
            fig_likelihood=(
                "SBI against the power-spectrum likelihood (Figs. 2, 3)",
                "*posteriors likelihood output",
            ),
            fig_fixed_foreground=(
                "posterior means of r per fixed-foreground sky (Figs. 5-6)",
                "*posteriors output",
            ),
            fig_recovery=(
                "the selection objectives around the true patch counts (sec. 5.1)",
                "recovery *selections output",
            ),
            recovery_table=("the recovery tables of all simulations in one", "*parts output"),
        ),
    ),
}


# which arguments name things (not files), and the least value of each integer argument
NAMES = ("simulation", "zone", "method", "compression", "set")
INT_MINIMUM = {"chunk": 0, "threads": 1, "devices": 0, "gpus": 0, "nside": 1}  # devices 0: CPU


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one ``bmodesep: error:`` line like every other error."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        where = self.prog.removeprefix("bmodesep").strip()
        self.exit(2, f"bmodesep: error: {where + ': ' if where else ''}{message}\n")


def _integer(name: str):
    """An argparse type: an integer of at least ``INT_MINIMUM[name]``."""
    least = INT_MINIMUM.get(name, 0)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is below {least}")
        return value

    parse.__name__ = "integer"
    return parse


def _add_step_arguments(parser: argparse.ArgumentParser, step: Step) -> None:
    parser.add_argument(
        "--config",
        nargs="+",
        required=True,
        metavar="FILE",
        help="config file(s), YAML or JSON; later ones override earlier ones "
        "(the workflow passes each job its resolved stage config)",
    )
    for spec in step.args:
        optional = spec.startswith("?")
        spec = spec.lstrip("?")
        kwargs: dict[str, Any] = {"required": not optional}
        if spec.startswith("*"):
            spec, kwargs["nargs"] = spec[1:], "+"
        if spec.startswith("#"):
            spec, kwargs["type"] = spec[1:], _integer(spec[1:])
            kwargs["required"] = False
            kwargs["default"] = {"threads": 1, "devices": 1, "gpus": 0}.get(spec)
        parser.add_argument(
            f"--{spec.replace('_', '-')}", dest=spec, metavar=spec.upper(), **kwargs
        )


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="bmodesep",
        description="CMB B-mode foreground cleaning and r inference, one stage step at a time "
        "(the Snakemake workflow runs these; see docs/usage.md).",
    )
    top.add_argument("--version", action="store_true", help="print the version and exit")
    stages = top.add_subparsers(dest="stage", metavar="STAGE", parser_class=_Parser)
    for stage, (text, steps) in STAGES.items():
        sp = stages.add_parser(stage, help=text, description=text)
        sub = sp.add_subparsers(dest="step", metavar="STEP", required=True, parser_class=_Parser)
        for name, step in steps.items():
            _add_step_arguments(sub.add_parser(name, help=step.help, description=step.help), step)
    return top


def run(stage: str, step: str, args: dict[str, Any]) -> None:
    """Load the config files and call ``bmodesep.stages.<stage>.<step>(config, **args)``."""
    from bmodesep import jaxcache
    from bmodesep.config import load_config
    from bmodesep.memory import check_job_fits

    config_files = args.pop("config")
    check_paths(args, config_files)
    config = load_config(config_files)
    check_job_fits(config, step, args)
    check_outputs(args)
    jaxcache.enable(config.get("compilation_cache"))
    module = importlib.import_module(f"bmodesep.stages.{stage}")
    getattr(module, step)(config, **args)


def _paths(value: Any) -> list[str]:
    if value is None or isinstance(value, int):
        return []
    return [value] if isinstance(value, str) else list(value)


def check_paths(args: dict[str, Any], config_files: Sequence[str]) -> None:
    """No file given twice, and no output that is also an input (it would be destroyed
    or, in a list of chunks, counted twice).  Paths are compared after resolving links."""
    from bmodesep.errors import ConfigError

    outputs = [(key, p) for key in ("output", "outputs") for p in _paths(args.get(key))]
    inputs = [("config", p) for p in config_files] + [
        (key, p)
        for key, value in args.items()
        if key not in (*NAMES, "output", "outputs")
        for p in _paths(value)
    ]
    seen: dict[str, tuple[str, str]] = {}
    for key, path in inputs + outputs:
        real = os.path.realpath(path)
        if real in seen:
            first_key, first = seen[real]
            same = f"{path}" if first == path else f"{path} (the same file as {first})"
            if key == first_key:
                raise ConfigError(f"--{key.replace('_', '-')}: {same} is given twice")
            why = (
                "; a step never writes over its own input"
                if key.startswith("output")
                else " (each input is a different product)"
            )
            raise ConfigError(
                f"--{key.replace('_', '-')}: {same} is also given as "
                f"--{first_key.replace('_', '-')}{why}"
            )
        seen[real] = (key, path)


def check_outputs(args: dict[str, Any]) -> None:
    """Fail before any computing when an output cannot be written (folder read-only...)."""
    from bmodesep.products.io import prepare_output

    outputs = args.get("output") or args.get("outputs") or []
    for path in [outputs] if isinstance(outputs, str) else outputs:
        prepare_output(path)


def main(argv: Sequence[str] | None = None) -> int:
    from bmodesep import log
    from bmodesep.errors import BmodesepError

    ns = parser().parse_args(argv)
    if ns.version:
        from bmodesep import __version__

        print(f"bmodesep {__version__}")
        return 0
    if ns.stage is None:
        parser().print_help()
        return 2
    log.configure()
    args = {k: v for k, v in vars(ns).items() if k not in ("stage", "step", "version")}
    try:
        run(ns.stage, ns.step, args)
    except BmodesepError as exc:
        print(f"bmodesep: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write the products layer does not make (a journal, a folder)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bmodesep: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    logging.getLogger("bmodesep").info("%s %s: wrote %s", ns.stage, ns.step, _outputs(args))
    return 0


def _outputs(args: dict[str, Any]) -> str:
    out = args.get("output") or args.get("outputs") or ""
    return out if isinstance(out, str) else f"{len(out)} files"


if __name__ == "__main__":
    sys.exit(main())
