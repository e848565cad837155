"""Numba's on-disk cache of compiled kernels, also from a read-only installation.

``@numba.njit(cache=True)`` looks for a writable cache folder when the function is
decorated, that is when its module is imported; without one the import fails with
``cannot cache function '...': no locator available``.  Numba (``numba/core/caching.py``)
tries in order: ``$NUMBA_CACHE_DIR``; ``__pycache__`` next to the source file; a
user-wide folder (``$XDG_CACHE_HOME/numba``, default ``~/.cache/numba``); then locators
for IPython cells and zipped sources.  A shared installation that users cannot write,
run with a home folder they cannot write either (read-only or absent on the compute
nodes of some clusters), leaves none.

:func:`configure` runs before the kernels are decorated.  Where neither
``$NUMBA_CACHE_DIR`` nor the source folder can be written, it sets ``NUMBA_CACHE_DIR`` to
the first of ``$XDG_CACHE_HOME/bmodesep/numba`` (default ``~/.cache/bmodesep/numba``) and
``<tmp>/bmodesep-numba-<uid>`` that can be written; the temporary one is used only if it
is a folder of this user that nobody else can write (numba's cache files are pickles,
loaded as code).  Where nothing can be written the kernels are compiled in every process
(``cache=False``, a warning says so).  Numba keys its cache entries by CPU model and
features, so one folder serves the different nodes of a cluster.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

ENV = "NUMBA_CACHE_DIR"

log = logging.getLogger(__name__)


def writable(folder: Path) -> bool:
    """Whether ``folder`` can be created and a file written in it (numba's own test)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _private(folder: Path) -> bool:
    """Whether ``folder`` is a real folder (not a link) of this user, writable by no one
    else; creates it (mode 0700) if it is missing."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    if hasattr(os, "getuid"):
        return info.st_uid == os.getuid() and not info.st_mode & 0o022
    return True


def _user_folder() -> Path | None:
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "bmodesep" / "numba"
    try:
        return Path.home() / ".cache" / "bmodesep" / "numba"
    except RuntimeError:  # no home folder known
        return None


def _temporary_folder() -> Path:
    who = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"bmodesep-numba-{who}"


def _reload_numba_config() -> None:
    """Numba reads ``NUMBA_CACHE_DIR`` when ``numba.core.config`` is first imported and
    again before each compilation; a kernel picks its folder when it is decorated, so an
    already imported numba is told now."""
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.reload_config()


def configure(source: str | os.PathLike) -> bool:
    """Make sure numba can cache the kernels of the module file ``source``; returns
    whether it can (the ``cache=`` argument of their ``njit``)."""
    named = os.environ.get(ENV)
    if named and writable(Path(named)):
        return True
    if writable(Path(source).parent / "__pycache__"):
        return True
    fallbacks = [(_user_folder(), False), (_temporary_folder(), True)]
    for folder, shared_parent in fallbacks:
        if folder is None or (shared_parent and not _private(folder)):
            continue
        if writable(folder):
            if named:
                log.warning("%s=%s cannot be written; numba caches in %s", ENV, named, folder)
            os.environ[ENV] = str(folder)
            _reload_numba_config()
            return True
    tried = [named, Path(source).parent / "__pycache__"] + [f for f, _ in fallbacks]
    log.warning(
        "numba: no writable cache folder (tried %s): kernels are compiled in every process",
        ", ".join(str(f) for f in tried if f),
    )
    return False
