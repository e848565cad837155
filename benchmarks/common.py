"""The registry of benchmarks, timing, and what every result records about the machine."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BENCHMARKS: dict[str, Callable[[Any], dict[str, Any]]] = {}


def register(name: str):
    """Register the decorated ``fn(args) -> dict`` as benchmark ``name``; its docstring is
    the line ``--list`` shows."""

    def deco(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark '{name}' is registered twice")
        BENCHMARKS[name] = fn
        return fn

    return deco


@dataclass
class Timing:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_s)


def time_operation(op: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Run ``op`` ``warmup`` times untimed, then ``repeats`` times timed (wall and CPU)."""
    for _ in range(warmup):
        op()
    t = Timing()
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        op()
        t.wall_s.append(time.perf_counter() - w0)
        t.cpu_s.append(time.process_time() - c0)
    return t


def timing_fields(timing: Timing) -> dict[str, Any]:
    """The timing entries every benchmark reports."""
    return {"median_s": timing.median_s, "cpu_s": timing.median_cpu_s, "runs_s": timing.wall_s}


def baseline_fields(description: str, base: Timing, timing: Timing) -> dict[str, Any]:
    """The entries of a baseline timed in the same process, and the speed-up over it."""
    return {
        "baseline": description,
        "baseline_median_s": base.median_s,
        "baseline_cpu_s": base.median_cpu_s,
        "speedup_vs_baseline": base.median_s / timing.median_s,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def thread_pools() -> dict[str, int]:
    """Threads of each native thread pool loaded in this process (``openmp``, ``blas``),
    as threadpoolctl sees them; empty without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    pools: dict[str, int] = {}
    for pool in threadpool_info():
        api = pool.get("user_api")
        if api:
            pools[api] = max(pools.get(api, 0), int(pool.get("num_threads", 0)))
    return pools


def machine() -> dict[str, Any]:
    """The machine and the thread settings the benchmark ran under.

    ``omp_num_threads`` is the environment's ``OMP_NUM_THREADS`` (None when unset): the
    benchmarks never set it themselves, so set it on the command line for one-thread
    figures (``OMP_NUM_THREADS=1 python -m benchmarks nilc``).
    """
    return {
        "machine": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "thread_pools": thread_pools(),
    }
