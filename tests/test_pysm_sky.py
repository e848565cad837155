"""The PySM adapter on tiny template files written by the test (PySM's data is not here)."""

import healpy as hp
import numpy as np
import pytest

from bmodesep.core import seds
from bmodesep.core.simulate.pysm_sky import parse_preset, pysm_frequency_maps, required_templates
from bmodesep.errors import DataError

NSIDE = 8


def write_templates(root, rng):
    npix = hp.nside2npix(NSIDE)
    maps = {
        "dust_t_new": 100 + rng.random(npix),
        "dust_q_new": rng.normal(0, 10, npix),
        "dust_u_new": rng.normal(0, 10, npix),
        "dust_beta": 1.4 + 0.3 * rng.random(npix),
        "dust_temp": 18 + 4 * rng.random(npix),
        "synch_t_new": 50 + rng.random(npix),
        "synch_q_new": rng.normal(0, 5, npix),
        "synch_u_new": rng.normal(0, 5, npix),
        "synch_beta": -3.2 + 0.4 * rng.random(npix),
    }
    (root / "pysm_2").mkdir(parents=True)
    for name, m in maps.items():
        hp.write_map(str(root / "pysm_2" / f"{name}.fits"), m, dtype=np.float64)
    return maps


def test_preset_names():
    assert parse_preset("c1d1s1") == ["c1", "d1", "s1"]
    assert parse_preset("d10s5") == ["d10", "s5"]
    assert required_templates("d1")[0] == ["pysm_2/dust_t_new.fits"]


@pytest.mark.slow
def test_pysm_sky_follows_the_same_seds_as_ours(tmp_path, monkeypatch):
    t = write_templates(tmp_path, np.random.default_rng(0))
    monkeypatch.setenv("PYSM_LOCAL_DATA", str(tmp_path))
    freqs = [40.0, 100.0, 353.0]
    maps = pysm_frequency_maps(
        "c1d1s1", NSIDE, freqs, str(tmp_path)
    )  # c1 skipped: CMB comes from CAMB
    g = seds.rj_to_cmb
    for i, nu in enumerate(freqs):
        dust = g(353.0) * seds.dust_sed(nu, t["dust_beta"], t["dust_temp"], 353.0)
        sync = g(23.0) * seds.synchrotron_sed(nu, t["synch_beta"], 23.0)
        q = dust * t["dust_q_new"] + sync * t["synch_q_new"]
        u = dust * t["dust_u_new"] + sync * t["synch_u_new"]
        assert np.allclose(maps[i, 0], q, rtol=1e-5, atol=1e-6 * np.abs(q).max())
        assert np.allclose(maps[i, 1], u, rtol=1e-5, atol=1e-6 * np.abs(u).max())


def test_missing_pysm_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PYSM_LOCAL_DATA", str(tmp_path))
    with pytest.raises(
        DataError,
        match=r"PySM preset 'd1s1' needs template files .*"
        r"missing: pysm_2/dust_t_new.fits.*PYSM_LOCAL_DATA",
    ):
        pysm_frequency_maps("d1s1", NSIDE, [100.0], str(tmp_path))
    monkeypatch.delenv("PYSM_LOCAL_DATA")
    with pytest.raises(DataError, match="PYSM_LOCAL_DATA is not set"):
        pysm_frequency_maps("d10s5", NSIDE, [100.0], None)
