"""The simulation stage through its command line: products, and bad input that loses nothing."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from conftest import tiny_config

from bmodesep.core import harmonics
from bmodesep.errors import DataError
from bmodesep.products import sims
from bmodesep.settings import resolve_instrument

# a shared stage run (its module fixture) dominates: the whole module is in the slow tier
pytestmark = pytest.mark.slow


def simulate(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "bmodesep", "simulate", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """Run every step of the stage once for both simulations of the tiny config."""
    root = tmp_path_factory.mktemp("stage")
    cfg = tiny_config()
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = {"spectra": root / "camb.h5"}
    r = simulate("camb_spectra", "--config", "c.yaml", "--output", out["spectra"], cwd=root)
    assert r.returncode == 0, r.stderr
    for sim in ("lb", "so"):
        for step, extra in (
            ("sky", ["--spectra", out["spectra"]]),
            ("masks", ["--sky", "SKY"]),
            ("frequency_maps", ["--sky", "SKY"]),
            ("noise", []),
        ):
            path = root / sim / f"{'signal' if step == 'frequency_maps' else step}.h5"
            extra = [str(root / sim / "sky.h5") if e == "SKY" else e for e in extra]
            r = simulate(
                step, "--config", "c.yaml", "--simulation", sim, *extra, "--output", path, cwd=root
            )
            assert r.returncode == 0, r.stderr
            out[f"{sim}/{path.stem}"] = path
    return root, cfg, out


def test_products_are_complete_and_consistent(stage):
    _root, cfg, out = stage
    nside = 8
    lb = resolve_instrument(cfg, "litebird")
    so = resolve_instrument(cfg, "sosat")
    _, sky = sims.read_sky(out["lb/sky"], nside)
    sig = sims.read_signal(out["lb/signal"], lb, nside)
    # without beams the LiteBIRD maps are CMB + foreground SED scaling, exactly
    from bmodesep.core.simulate.sky import foreground_maps

    fg = foreground_maps(sky, lb.frequencies_ghz)
    assert np.allclose(sig["total_qu"], fg + sky.cmb_qu[None], rtol=1e-12)
    assert np.allclose(sig["foreground_qu"], fg, rtol=1e-12)
    noise = sims.read_noise(out["lb/noise"], lb, nside)
    assert noise["qu"].shape == (2, 1, 15, 2, harmonics.npix(nside))
    so_sig = sims.read_signal(out["so/signal"], so, nside)
    assert so_sig["total_b"].shape == (8, harmonics.npix(nside))
    so_noise = sims.read_noise(out["so/noise"], so, nside)
    assert so_noise["b"].shape == (1, 2, 8, harmonics.npix(nside))
    masks, _zones = sims.read_masks(out["lb/masks"], nside)
    assert abs(masks["GAL040"].mean() - 0.4) < 1 / harmonics.npix(nside)
    with h5py.File(out["lb/noise"]) as f:
        assert f.attrs["seed"] == 9 and f.attrs["stage"] == "noise"
        assert list(json.loads(f.attrs["config"])["simulations"]) == ["lb"]


def test_signal_file_checked_against_the_instrument(stage):
    _, cfg, out = stage
    so = resolve_instrument(cfg, "sosat")
    with pytest.raises(
        DataError,
        match=r"lb/signal.h5: 15 frequency maps, instrument sosat "
        r"has 8 bands",
    ):
        sims.read_signal(out["lb/signal"], so, 8)


def write_config(root, cfg):
    (root / "bad.yaml").write_text(yaml.safe_dump(cfg))
    return "bad.yaml"


def assert_failed_cleanly(result, message, output):
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists()


def _nside_24(cfg):
    cfg["simulations"]["lb"]["nside"] = 24


def _unknown_preset(cfg):
    cfg["instruments"]["litebird"] = "litebird2"


def _unknown_sky_kind(cfg):
    cfg["skies"]["grf"]["kind"] = "d1s1"


def _band_count(cfg):
    cfg["instruments"]["litebird"] = {
        "frequencies_ghz": [40.0, 50.0, 60.0],
        "depth_uk_arcmin": [30.0, 20.0],
    }


@pytest.mark.parametrize(
    "breaks, message",
    [
        (_nside_24, "simulations.lb.nside: 24 is not a power of two"),
        (_unknown_preset, "unknown instrument preset 'litebird2'"),
        (_unknown_sky_kind, "skies.grf.kind: 'd1s1' is not one of"),
        (_band_count, "depth_uk_arcmin: 2 entries for 3 frequencies"),
    ],
    ids=["nside", "preset", "sky-kind", "band-count"],
)
def test_bad_config_stops_the_command(breaks, message, tmp_path):
    cfg = tiny_config()
    breaks(cfg)
    out = tmp_path / "noise.h5"
    r = simulate(
        "noise",
        "--config",
        write_config(tmp_path, cfg),
        "--simulation",
        "lb",
        "--output",
        out,
        cwd=tmp_path,
    )
    assert_failed_cleanly(r, message, out)


def test_missing_pysm_data(stage, tmp_path):
    _, _, products = stage
    cfg = tiny_config()
    cfg["skies"]["grf"] = {"kind": "pysm", "pysm": {"preset": "d1s1"}}
    out = tmp_path / "sky.h5"
    env_dir = tmp_path / "empty"
    env_dir.mkdir()
    os.environ["PYSM_LOCAL_DATA"] = str(env_dir)
    try:
        r = simulate(
            "sky",
            "--config",
            write_config(tmp_path, cfg),
            "--simulation",
            "lb",
            "--spectra",
            products["spectra"],
            "--output",
            out,
            cwd=tmp_path,
        )
    finally:
        del os.environ["PYSM_LOCAL_DATA"]
    assert_failed_cleanly(r, "PySM preset 'd1s1' needs template files", out)
    assert "pysm_2/dust_q_new.fits" in r.stderr


def test_nan_in_input_maps(stage, tmp_path):
    _root, cfg, products = stage
    bad_sky = tmp_path / "sky.h5"
    bad_sky.write_bytes(products["lb/sky"].read_bytes())
    with h5py.File(bad_sky, "a") as f:
        f["dust/qu"][0, 5] = np.nan
    out = tmp_path / "signal.h5"
    r = simulate(
        "frequency_maps",
        "--config",
        write_config(tmp_path, cfg),
        "--simulation",
        "lb",
        "--sky",
        bad_sky,
        "--output",
        out,
        cwd=tmp_path,
    )
    assert_failed_cleanly(r, f"{bad_sky}: dataset 'dust/qu' contains NaN or inf", out)


def test_wrong_sky_resolution(stage, tmp_path):
    _root, cfg, products = stage
    cfg = dict(cfg)
    cfg["simulations"] = dict(cfg["simulations"])
    cfg["simulations"]["lb"] = dict(cfg["simulations"]["lb"], nside=16)
    out = tmp_path / "signal.h5"
    r = simulate(
        "frequency_maps",
        "--config",
        write_config(tmp_path, cfg),
        "--simulation",
        "lb",
        "--sky",
        products["lb/sky"],
        "--output",
        out,
        cwd=tmp_path,
    )
    assert_failed_cleanly(r, "dataset 'cmb/qu' has shape (2, 768), expected (2, 3072)", out)


def test_planck_mask_file_path(stage, tmp_path):
    """Planck's GAL masks come NESTED at nside 2048; a tiny file of the same form is used."""
    import healpy as hp

    from bmodesep.core.simulate.masks import threshold_masks
    from bmodesep.stages.simulate import masks as run_masks

    _root, cfg, _products = stage
    nside_file = 32
    z = hp.pix2vec(nside_file, np.arange(hp.nside2npix(nside_file)))[2]
    gal = threshold_masks(np.exp(-np.abs(z) / 0.3), {"a": 0.2, "b": 0.4, "c": 0.6})
    fields = [hp.reorder(gal[k].astype(float), r2n=True) for k in ("a", "b", "c")]
    planck = tmp_path / "HFI_Mask_GalPlane_tiny.fits"
    hp.write_map(str(planck), fields, nest=True, dtype=np.float64)
    cfg = dict(cfg, masks=dict(cfg["masks"], source="planck", planck_file=str(planck)))
    out = tmp_path / "masks.h5"
    run_masks(cfg, "lb", out, planck=planck)
    masks, _zones = sims.read_masks(out, 8)
    expect = hp.ud_grade(gal["a"].astype(float), 8) >= 0.5
    assert np.array_equal(masks["GAL020"], expect)
    assert abs(masks["GAL060"].mean() - 0.6) < 0.05
    # high Galactic latitudes are kept first, as in Planck's masks
    z8 = hp.pix2vec(8, np.arange(hp.nside2npix(8)))[2]
    assert np.abs(z8[masks["GAL020"]]).min() > np.abs(z8[~masks["GAL060"]]).max()


def test_true_patch_sky_from_a_patch_file(stage, tmp_path):
    from bmodesep.config import validate_config
    from bmodesep.stages.simulate import sky as run_sky

    _root, cfg, products = stage
    npix = harmonics.npix(8)
    labels = np.arange(npix) % 7
    with h5py.File(tmp_path / "patches.h5", "w") as f:
        f["labels"] = labels
    patch = {"file": str(tmp_path / "patches.h5"), "dataset": "labels"}
    sky = dict(
        cfg["skies"]["grf"],
        kind="true_patch",
        patches={"beta_d": patch, "temperature_d": patch, "beta_s": {"superpixel_nside": 1}},
    )
    cfg = validate_config(dict(cfg, skies={"grf": sky}))
    run_sky(cfg, "lb", products["spectra"], tmp_path / "sky.h5")
    product, parametric = sims.read_sky(tmp_path / "sky.h5", 8)
    assert np.array_equal(product["patches/beta_d"], labels)
    for lab in range(7):
        assert np.ptp(parametric.beta_d[labels == lab]) == 0
    assert np.unique(parametric.beta_s).size == 12
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["labels"] = labels[:-1]
    sky["patches"]["beta_d"] = {"file": str(tmp_path / "bad.h5"), "dataset": "labels"}
    cfg = validate_config(dict(cfg, skies={"grf": sky}))
    with pytest.raises(DataError, match=r"bad\.h5: patch map 'labels' has shape \(767,\)"):
        run_sky(cfg, "lb", products["spectra"], tmp_path / "sky2.h5")
    assert not (tmp_path / "sky2.h5").exists()
