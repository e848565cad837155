"""Benchmarks of bmodesep, run from the repository root: ``python -m benchmarks <name>``.

They live outside the package and use only its public API (``bmodesep.core``,
``bmodesep.settings``, ``bmodesep.config``).  Modules by subject register their
benchmarks in :data:`benchmarks.common.BENCHMARKS`: :mod:`benchmarks.simulate`,
:mod:`benchmarks.compsep`, :mod:`benchmarks.nilc`, :mod:`benchmarks.npe`;
:mod:`benchmarks.__main__` is the command line.  Importing them sets nothing in the
environment: choose thread counts on the command line, e.g.
``OMP_NUM_THREADS=1 python -m benchmarks nilc`` (the figures of BENCHMARKS.md).
"""
