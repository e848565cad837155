"""Numba kernels cache (or at least run) from a read-only installation and home folder.

Read-only folders are tmpfs mounts remounted read-only, which bind root too (chmod does
not); the tests that need them skip themselves where mounting is not possible.
"""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import bmodesep
from bmodesep import numbacache

PACKAGE = Path(bmodesep.__file__).resolve().parent

CHILD = """
import numpy as np
import bmodesep.core.nilc.ilc as m
assert m.__file__.startswith({src!r}), m.__file__
cov = np.broadcast_to(np.diag([4.0, 9.0, 16.0])[..., None], (3, 3, 5))
s = m.ilc_apply(cov, np.ones((3, 1)), np.ones((3, 5)))
assert np.allclose(s, 1.0), s
stats = m._ilc_kernel.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), m._CACHE)
"""


def _one_module(target: Path) -> None:
    (target / "mod.py").write_text("")


def _copy_package(target: Path) -> None:
    shutil.copytree(PACKAGE, target / "bmodesep", ignore=shutil.ignore_patterns("__pycache__"))


def _run_child(src: Path, cwd: Path, **env_vars) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(src), OMP_NUM_THREADS="1", **env_vars)
    r = subprocess.run(
        [sys.executable, "-c", CHILD.format(src=str(src))],
        cwd=cwd,  # not the repository: '' first on sys.path would import the source tree
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split()


def _cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.nb[ic]"))


@pytest.mark.slow
def test_a_read_only_install_and_home_cache_in_a_private_temporary_folder(tmp_path, mounts):
    """Without a writable package folder or home, numba alone fails at import with
    ``cannot cache function '_cholesky_block': no locator available``."""
    src = mounts.tmpfs("install", "64m", readonly=True, fill=_copy_package)
    home = mounts.tmpfs("home", "64m", readonly=True)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    first = _run_child(src, tmp, HOME=str(home), TMPDIR=str(tmp))
    assert first == ["0", "1", "True"]  # compiled, and saved
    cache = tmp / f"bmodesep-numba-{os.getuid()}"
    assert _cache_files(cache) and (cache.stat().st_mode & 0o777) == 0o700
    second = _run_child(src, tmp, HOME=str(home), TMPDIR=str(tmp))
    assert second == ["1", "0", "True"]  # loaded from the cache


def test_a_read_only_install_caches_in_the_users_cache_folder(tmp_path, mounts):
    src = mounts.tmpfs("install", "64m", readonly=True, fill=_copy_package)
    xdg = tmp_path / "xdg"
    work = tmp_path / "work"
    work.mkdir()
    assert _run_child(src, work, XDG_CACHE_HOME=str(xdg)) == ["0", "1", "True"]
    assert _cache_files(xdg / "bmodesep" / "numba")
    assert not list(work.iterdir())


@pytest.fixture
def isolated(monkeypatch):
    """No NUMBA_CACHE_DIR or XDG_CACHE_HOME from outside; numba's config left alone."""
    monkeypatch.delenv(numbacache.ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    reloads = []
    monkeypatch.setattr(numbacache, "_reload_numba_config", lambda: reloads.append(1))
    return reloads


def test_a_writable_named_or_source_folder_is_left_to_numba(tmp_path, monkeypatch, isolated):
    source = tmp_path / "pkg" / "mod.py"
    source.parent.mkdir()
    source.write_text("")
    assert numbacache.configure(source) is True
    assert numbacache.ENV not in os.environ and (source.parent / "__pycache__").is_dir()
    monkeypatch.setenv(numbacache.ENV, str(tmp_path / "named"))
    assert numbacache.configure(source) is True
    assert os.environ[numbacache.ENV] == str(tmp_path / "named") and not isolated


def test_nothing_writable_means_no_cache_and_a_warning(
    tmp_path, mounts, monkeypatch, caplog, isolated
):
    src = mounts.tmpfs(
        "install", "64m", readonly=True, fill=lambda t: (t / "mod.py").write_text("")
    )
    monkeypatch.setenv("HOME", str(mounts.tmpfs("home", "64m", readonly=True)))
    monkeypatch.setattr(tempfile, "tempdir", str(mounts.tmpfs("tmp", "64m", readonly=True)))
    monkeypatch.setattr(logging.getLogger("bmodesep"), "propagate", True)  # to caplog
    with caplog.at_level(logging.WARNING):
        assert numbacache.configure(src / "mod.py") is False
    assert numbacache.ENV not in os.environ and not isolated
    assert "no writable cache folder" in caplog.text and str(src) in caplog.text


def test_a_temporary_folder_that_others_can_write_is_not_used(
    tmp_path, mounts, monkeypatch, isolated
):
    src = mounts.tmpfs(
        "install", "64m", readonly=True, fill=lambda t: (t / "mod.py").write_text("")
    )
    monkeypatch.setenv("HOME", str(mounts.tmpfs("home", "64m", readonly=True)))
    tmp = tmp_path / "tmp"
    planted = tmp / f"bmodesep-numba-{os.getuid()}"
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert numbacache.configure(src / "mod.py") is False
    planted.chmod(0o700)
    assert numbacache.configure(src / "mod.py") is True
    assert os.environ[numbacache.ENV] == str(planted) and isolated == [1]
