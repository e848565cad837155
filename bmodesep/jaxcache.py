"""JAX's persistent compilation cache: compiled fits are kept on disk between processes.

The folder is, in this order: the config's ``compilation_cache`` (a path, or ``off``),
``$BMODESEP_JAX_CACHE`` (the same), or ``$XDG_CACHE_HOME/bmodesep/jax`` (default
``~/.cache/bmodesep/jax``).  Inside it every machine type gets its own subfolder (CPU
architecture and feature flags, jax and jaxlib versions), since XLA refuses programs
compiled for other CPU features, as happens between a cluster's login and compute nodes.

Concurrent jobs share the folder safely: with a size limit set, JAX takes a file lock
around every read and write of the cache (``jax._src.lru_cache``), and an entry that is
already there is never rewritten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from pathlib import Path

from bmodesep.errors import ConfigError

ENV = "BMODESEP_JAX_CACHE"
OFF = "off"
MAX_BYTES = 4 * 1024**3  # a finite size turns on JAX's locking (and its LRU eviction)

log = logging.getLogger("bmodesep")


def machine_tag() -> str:
    """A short digest of what a compiled CPU program depends on."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        versions = f"{version('jax')} {version('jaxlib')}"
    except Exception:  # metadata missing: the tag still separates machines
        versions = ""
    text = f"{platform.machine()} {flags} {versions}"
    return f"{platform.machine()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def cache_folder(setting: str | None = None) -> Path | None:
    """The cache folder for ``setting`` (the config value; ``None``: not set), or ``None``
    when the cache is off."""
    value = setting if setting is not None else os.environ.get(ENV)
    if value is not None and value.strip().lower() == OFF:
        return None
    if value:
        base = Path(value).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "bmodesep" / "jax"
    return base / machine_tag()


def enable(setting: str | None = None) -> Path | None:
    """Turn the cache on for this process (before its first compilation); returns the
    folder.  A folder the user named that cannot be created is a ConfigError; the default
    one only logs a warning (the cache saves time, results do not depend on it)."""
    folder = cache_folder(setting)
    if folder is None:
        return None
    try:
        import filelock  # noqa: F401 - JAX needs it to lock a size-limited cache
    except ImportError:
        log.warning("compilation_cache: filelock is not installed; compiling without a cache")
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        named = setting is not None or os.environ.get(ENV)
        message = f"compilation_cache: cannot use {folder}: {exc.strerror or exc}"
        if named:
            raise ConfigError(message) from exc
        log.warning("%s; compiling without a cache", message)
        return None
    options = {
        "jax_compilation_cache_dir": str(folder),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
        "jax_compilation_cache_max_size": MAX_BYTES,
    }
    if "jax" in sys.modules:
        import jax

        for key, val in options.items():
            jax.config.update(key, val)
    else:  # read by JAX when it is imported; a stage that never imports it pays nothing
        for key, val in options.items():
            os.environ[key.upper()] = str(val)
    return folder
