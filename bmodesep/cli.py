"""The ``bmodesep`` command line: ``bmodesep <stage> <step> --config FILE ... --output F``.

One subcommand per stage (named like ``workflow/rules/<stage>.smk`` and
``bmodesep/stages/<stage>.py``) and one step per rule (named like the stage function the
rule runs).  The parser is built from the stage functions' signatures (``@step``, see
:mod:`bmodesep.steps`), read without importing the stages, so
``--help`` at every level answers at once; JAX and torch are imported only by the step
that runs.  Errors of the inputs, the config or a write (read-only folder, full disk) end
as one ``bmodesep: error:`` line naming the key or the file, and exit status 2; the
outputs' folders are checked to be writable before anything is computed.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import logging
import os
import re
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Arg(NamedTuple):
    """One argument of a step, read from its stage function's signature."""

    name: str
    kind: str  # "name", "file" or "int" (bmodesep.steps: Name, File, int)
    many: bool  # list[...]: one or more values
    required: bool
    default: Any = None


class Step(NamedTuple):
    help: str
    args: tuple[Arg, ...]
    takes_config: bool


STAGE_NAMES = ("simulate", "export", "compsep", "rlike", "nilc", "npe", "compare", "figures")
_KINDS = {"Name": "name", "File": "file", "int": "int"}
# the least value of each integer argument
INT_MINIMUM = {"chunk": 0, "threads": 1, "devices": 0, "gpus": 0, "nside": 1}  # devices 0: CPU


def _stage_source(stage: str) -> str:
    return (Path(__file__).parent / "stages" / f"{stage}.py").read_text()


def _argument(arg: ast.arg, default: ast.expr | None, where: str) -> Arg:
    """An argument from its annotation: ``Name``, ``File`` or ``int``, in ``list[...]``,
    ``| None`` for an optional one (see :mod:`bmodesep.steps`)."""
    text = ast.unparse(arg.annotation) if arg.annotation is not None else ""
    optional = text.endswith(" | None")
    text = text.removesuffix(" | None")
    many = text.startswith("list[") and text.endswith("]")
    text = text[5:-1] if many else text
    if text not in _KINDS:
        raise TypeError(f"{where}: argument {arg.arg!r} is annotated {text!r}, not Name/File/int")
    value = ast.literal_eval(default) if default is not None else None
    required = not optional and default is None
    return Arg(arg.arg, _KINDS[text], many, required, value)


def _help(doc: str | None, where: str) -> str:
    first = (doc or "").strip().split("\n", 1)[0]
    if not first.endswith("."):
        raise TypeError(f"{where}: the docstring's first line is not a sentence: {first!r}")
    return re.sub(r"^Rule \w+: ", "", first).removesuffix(".").replace("%", "%%")  # argparse


def stage_steps(stage: str) -> tuple[str, dict[str, Step]]:
    """The help of a stage and its steps: the ``@step`` functions of its module, read with
    :mod:`ast` (nothing is imported)."""
    tree = ast.parse(_stage_source(stage))
    doc = ast.get_docstring(tree) or ""
    text = re.sub(r"\s*\(``(workflow/rules/)?\w+\.smk``[^)]*\)", "", doc.split("\n", 1)[0])
    steps = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        if not any(getattr(d, "id", None) == "step" for d in node.decorator_list):
            continue
        where = f"bmodesep/stages/{stage}.py:{node.name}"
        params = node.args.args
        defaults = [None] * (len(params) - len(node.args.defaults)) + node.args.defaults
        args = tuple(
            _argument(a, d, where)
            for a, d in zip(params, defaults, strict=True)
            if a.arg != "config"
        )
        takes_config = any(a.arg == "config" for a in params)
        steps[node.name] = Step(_help(ast.get_docstring(node), where), args, takes_config)
    return text.removesuffix("."), steps


STAGES: dict[str, tuple[str, dict[str, Step]]] = {s: stage_steps(s) for s in STAGE_NAMES}


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
    if step.takes_config:
        parser.add_argument(
            "--config",
            nargs="+",
            required=True,
            metavar="FILE",
            help="config file(s), YAML or JSON; later ones override earlier ones "
            "(the workflow passes each job its resolved stage config)",
        )
    for arg in step.args:
        kwargs: dict[str, Any] = {"required": arg.required}
        if arg.many:
            kwargs["nargs"] = "+"
        if arg.kind == "int":
            kwargs["type"] = _integer(arg.name)
            kwargs["default"] = arg.default
        parser.add_argument(
            f"--{arg.name.replace('_', '-')}", dest=arg.name, metavar=arg.name.upper(), **kwargs
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
    """Load the config files and call ``bmodesep.stages.<stage>.<step>(config, **args)``
    (without ``config`` where the step takes none)."""
    from bmodesep import jaxcache
    from bmodesep.config import load_config
    from bmodesep.memory import check_job_fits

    config_files = args.pop("config", None) or []
    names = {a.name for a in STAGES[stage][1][step].args if a.kind == "name"}
    check_paths(args, config_files, names)
    config = load_config(config_files) if config_files else None
    if config is not None:
        check_job_fits(config, step, args)
    check_outputs(args)
    module = importlib.import_module(f"bmodesep.stages.{stage}")
    if config is None:
        getattr(module, step)(**args)
        return
    jaxcache.enable(config.get("compilation_cache"))
    getattr(module, step)(config, **args)


def _paths(value: Any) -> list[str]:
    if value is None or isinstance(value, int):
        return []
    return [value] if isinstance(value, str) else list(value)


def check_paths(
    args: dict[str, Any], config_files: Sequence[str], names: Collection[str] = ()
) -> None:
    """No file given twice, and no output that is also an input (it would be destroyed
    or, in a list of chunks, counted twice).  Paths are compared after resolving links."""
    from bmodesep.errors import ConfigError

    outputs = [(key, p) for key in ("output", "outputs") for p in _paths(args.get(key))]
    inputs = [("config", p) for p in config_files] + [
        (key, p)
        for key, value in args.items()
        if key not in (*names, "output", "outputs")
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
