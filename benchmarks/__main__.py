"""Benchmarks: ``python -m benchmarks <name> [--repeats N]``; ``--list`` names them.

Run from the repository root.  Each benchmark prepares its inputs (excluded from timing),
runs the operation once to warm up (imports, caches, JIT compilation), then times
``repeats`` runs.  The last line printed is one JSON object with at least ``name``,
``median_s`` (median wall seconds), ``cpu_s`` (median CPU seconds of one run),
``peak_rss_mb``, and the thread settings (``omp_num_threads``, ``thread_pools``); where a
benchmark has a baseline (the same work done another way), it is timed in the same
process and the ratio reported, since these machines are shared and absolute times drift.

Nothing here sets thread counts: the figures of BENCHMARKS.md are on one thread,
``OMP_NUM_THREADS=1 python -m benchmarks <name>``.
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import compsep, nilc, npe, simulate  # noqa: F401 - they register benchmarks
from benchmarks.common import BENCHMARKS, machine, peak_rss_mb

PROG = "python -m benchmarks"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", nargs="?", help="benchmark name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs (default 7)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for name, fn in BENCHMARKS.items():
            print(f"{name:24s} {(fn.__doc__ or '').strip()}")
        return 0
    if args.name not in BENCHMARKS:
        print(
            f"{PROG}: error: unknown benchmark '{args.name}' (known: {', '.join(BENCHMARKS)})",
            file=sys.stderr,
        )
        return 2
    if args.repeats < 1:
        print(f"{PROG}: error: --repeats must be at least 1", file=sys.stderr)
        return 2
    result = BENCHMARKS[args.name](args)
    result |= {"repeats": args.repeats, "peak_rss_mb": peak_rss_mb(), **machine()}
    for key, value in result.items():
        if key != "runs_s":
            print(f"{key:22s} {value:.4g}" if isinstance(value, float) else f"{key:22s} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
