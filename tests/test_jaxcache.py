"""The persistent JAX compilation cache: where it lives, when it is off, shared by jobs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bmodesep import jaxcache
from bmodesep.errors import ConfigError

CHILD = """
import sys
from bmodesep import jaxcache
folder = jaxcache.enable(sys.argv[1])
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sin(x) * 3.0 + x**2)
print(float(f(jnp.arange(7.0)).sum()), folder)
"""


def test_folder_is_per_machine_and_can_be_turned_off(tmp_path, monkeypatch):
    tag = jaxcache.machine_tag()
    assert tag == jaxcache.machine_tag() and len(tag) > 12
    assert jaxcache.cache_folder(str(tmp_path)) == tmp_path / tag
    assert jaxcache.cache_folder("off") is None
    monkeypatch.setenv(jaxcache.ENV, "OFF")
    assert jaxcache.cache_folder() is None
    assert jaxcache.cache_folder(str(tmp_path)) == tmp_path / tag  # the config wins
    monkeypatch.delenv(jaxcache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jaxcache.cache_folder() == tmp_path / "xdg" / "bmodesep" / "jax" / tag


def test_a_named_folder_that_cannot_be_made_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"compilation_cache: cannot use .*file"):
        jaxcache.enable(str(blocker / "cache"))


@pytest.mark.slow
def test_concurrent_jobs_share_the_cache(tmp_path):
    """Two processes compile into one empty cache at the same time; both succeed, and a
    third one finds every program there (it writes no new entry)."""
    env = dict(os.environ)
    cwd = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-c", CHILD, str(tmp_path)]
    procs = [subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0].split()[0] == outs[1].split()[0]
    folder = tmp_path / jaxcache.machine_tag()
    entries = sorted(q.name for q in folder.glob("*-cache"))
    assert entries
    third = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=300)
    assert third.returncode == 0
    assert sorted(q.name for q in folder.glob("*-cache")) == entries
