"""Logging for every stage, configured in one place: ``configure()`` at the command line.

Job logs read ``[bmodesep] <message>`` for information and ``[bmodesep] warning: ...``
for warnings; progress lines (done/total, rate, elapsed, ETA) come from ``Progress``.
Library code (core, products, stages) only calls ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

LOGGER = "bmodesep"


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return f"[bmodesep] {text}"


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send the package's log records to ``stream`` (stdout: the job log), once."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_bmodesep", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler._bmodesep = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def unconfigure() -> None:
    """Undo ``configure``: records propagate to the root logger again (tests, notebooks)."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_bmodesep", False):
            logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@contextmanager
def timed(what: str, logger: logging.Logger | None = None):
    """Log how long ``what`` took (wall and CPU seconds)."""
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    (logger or logging.getLogger(LOGGER)).info(
        "%s: %.2f s wall, %.2f s CPU", what, time.perf_counter() - t0, time.process_time() - c0
    )


def format_seconds(seconds: float) -> str:
    """``h:mm:ss`` (or ``--`` before any rate is known)."""
    if not seconds == seconds or seconds == float("inf"):  # NaN or inf
        return "--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress lines for job logs: done/total, rate and ETA from this run's own pace.

    ``already`` pieces done by an earlier run count towards done/total but not the rate.
    """

    def __init__(self, label: str, total: int, unit: str, already: int = 0, logger=None):
        self.label, self.total, self.unit = label, total, unit
        self.already = already
        self.done_here = 0
        self.logger = logger or logging.getLogger(LOGGER)
        self.t_start = time.perf_counter()
        if already:
            self._emit(f"resuming: {already}/{total} {unit} done by an earlier run")

    def _emit(self, text: str) -> None:
        self.logger.info("%s: %s", self.label, text)

    def step(self, detail: str = "", n: int = 1) -> None:
        self.done_here += n
        done = self.already + self.done_here
        elapsed = time.perf_counter() - self.t_start
        rate = self.done_here / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        per_minute = rate * 60
        pace = f"{per_minute:.1f} {self.unit}/min" if per_minute < 600 else f"{rate:.1f}/s"
        extra = f"; {detail}" if detail else ""
        self._emit(
            f"{done}/{self.total} {self.unit}, {pace}, elapsed {format_seconds(elapsed)}, "
            f"ETA {format_seconds(eta)}{extra}"
        )
