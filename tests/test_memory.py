"""The memory check a job makes before it computes (issue 25)."""

from __future__ import annotations

import pytest
from conftest import tiny_config

from bmodesep import memory
from bmodesep.errors import ConfigError


def test_one_band_map_set_is_bands_x_qu_x_pixels_x_8_bytes():
    assert memory.band_map_bytes(15, 8192) == 15 * 2 * 12 * 8192**2 * 8
    assert memory.band_map_bytes(8, 128, splits=2) == 8 * 2 * 2 * 12 * 128**2 * 8
    # the case: 15 LiteBIRD bands at nside 8192 are the 180 GiB numpy asked for
    assert memory.band_map_bytes(15, 8192) / memory.GIB == pytest.approx(180.0)


def test_slurm_grant_and_cgroup_limit_cap_the_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_physical_bytes", lambda: 64 * memory.GIB)
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(memory, "CGROUP_LIMITS", (limit,))
    monkeypatch.delenv("SLURM_MEM_PER_NODE", raising=False)
    monkeypatch.delenv("SLURM_MEM_PER_CPU", raising=False)
    assert memory.usable_bytes() == 64 * memory.GIB
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert memory.usable_bytes() == 64 * memory.GIB
    limit.write_text(f"{8 * memory.GIB}\n")
    assert memory.usable_bytes() == 8 * memory.GIB
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "1024")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "2")
    assert memory.usable_bytes() == 2 * memory.GIB
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "512")
    assert memory.usable_bytes() == 512 * 2**20


def test_only_steps_that_hold_band_maps_are_checked(monkeypatch):
    cfg = tiny_config(8)
    cfg["simulations"]["lb"]["nside"] = 4096  # 15 x 2 x 12 x 4096^2 x 8 B = 45 GiB
    monkeypatch.setattr(memory, "usable_bytes", lambda: 16 * memory.GIB)
    with pytest.raises(ConfigError, match=r"^simulations\.lb\.nside: 4096 needs at least 45\.0"):
        memory.check_job_fits(cfg, "noise", {"simulation": "lb"})
    memory.check_job_fits(cfg, "fig_r_likelihood", {"simulation": "lb"})  # holds no maps
    memory.check_job_fits(cfg, "noise", {"simulation": "so"})  # the other simulation fits
