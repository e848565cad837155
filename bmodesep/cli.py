"""Shared command-line plumbing: config arguments, clean error exits, timing lines."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from bmodesep.config import load_config, load_config_json
from bmodesep.errors import BmodesepError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--config",
        nargs="+",
        metavar="YAML",
        help="config file(s); later files override earlier ones",
    )
    group.add_argument(
        "--config-json",
        metavar="JSON",
        help="resolved config as JSON (what the Snakemake rules pass)",
    )


def stage_parser(prog: str, doc: str | None, required: Sequence[str]) -> argparse.ArgumentParser:
    """A stage command's parser: the config arguments and the required ``--NAME`` options."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    for arg in required:
        parser.add_argument(f"--{arg}", required=True)
    return parser


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return load_config(args.config) if args.config else load_config_json(args.config_json)


def run_cli(main: Callable[[Sequence[str] | None], None], argv=None) -> int:
    """Run ``main``; a BmodesepError becomes one 'error:' line and exit status 2."""
    try:
        main(argv)
    except BmodesepError as exc:
        print(f"bmodesep: error: {exc}", file=sys.stderr)
        return 2
    return 0


@contextmanager
def timed(what: str):
    """Print how long ``what`` took (wall and CPU seconds) to stdout, i.e. the job log."""
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    print(
        f"[bmodesep] {what}: {time.perf_counter() - t0:.2f} s wall, "
        f"{time.process_time() - c0:.2f} s CPU",
        flush=True,
    )
