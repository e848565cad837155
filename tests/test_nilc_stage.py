"""The NILC stage through its command line: products, provenance and bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import tiny_config

from bmodesep import cli
from bmodesep.core import harmonics
from bmodesep.core.nilc import ilc
from bmodesep.products import io
from bmodesep.products.nilc import read_nilc


@pytest.fixture(scope="module")
def so_stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("nilc")
    cfg = tiny_config(nside=16)
    cfg["nilc"] = dict(cfg["nilc"], simulations=["so"], run=["joint", "hilc_joint"])
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    base = ["--config", str(root / "c.yaml")]
    assert cli.main(["simulate", "camb_spectra", *base, "--output", str(root / "camb.h5")]) == 0
    for step, product, extra in (
        ("sky", "sky", ["--spectra", str(root / "camb.h5")]),
        ("masks", "masks", ["--sky", str(root / "sky.h5")]),
        ("frequency_maps", "signal", ["--sky", str(root / "sky.h5")]),
        ("noise", "noise", []),
    ):
        out = ["--output", str(root / f"{product}.h5")]
        assert cli.main(["simulate", step, *base, "--simulation", "so", *extra, *out]) == 0
    return root, cfg


def run_nilc(root, compression, output, config="c.yaml", extra=()):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [
        sys.executable, "-m", "bmodesep", "nilc", "nilc_compress", "--config", config,
        "--simulation", "so",
        "--compression", compression, "--signal", "signal.h5", "--noise", "noise.h5",
        "--output", str(output), *extra,
    ]  # fmt: skip
    return subprocess.run(args, cwd=root, capture_output=True, text=True, env=env)


def test_help_is_usable_on_its_own():
    r = subprocess.run(
        [sys.executable, "-m", "bmodesep", "nilc", "nilc_compress", "--help"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "--compression" in r.stdout


@pytest.mark.parametrize("compression", ["joint", "hilc_joint", "constrained"])
def test_component_maps_per_split(so_stage, compression):
    root, cfg = so_stage
    out = root / f"{compression}.h5"
    r = run_nilc(root, compression, out)
    assert r.returncode == 0, r.stderr
    assert "realisation 0 split 1" in r.stdout  # per-split cost in the log
    p = read_nilc(out)
    n_out = 1 if compression == "constrained" else 5
    npix = 12 * 16**2
    assert p["maps"].shape == (1, 2, n_out, npix)
    assert p.attrs["components"].tolist() == (["cmb"] if n_out == 1 else list(ilc.COMPONENTS))
    lmax = p.attrs["lmax_out"]
    alm = p["alm_real"] + 1j * p["alm_imag"]
    again = np.concatenate([harmonics.synthesis(a, 16, lmax, 0) for a in alm[0, 1]])
    np.testing.assert_allclose(again, p["maps"][0, 1], atol=1e-9 * np.abs(again).max())
    assert p.attrs["fiducial_beta_s"] == -5.0 and p.attrs["fiducial_beta_d"] == 1.5
    assert p.attrs["stage"] == "nilc" and p.config["nilc"]["simulations"] == ["so"]
    assert p.attrs["seed"] == cfg["simulations"]["so"]["seed"]
    if compression != "hilc_joint":
        assert p["channels_used"].shape == (4, 8) and p["smoothing_fwhm_deg"].shape == (4,)
    # the two splits share the sky but not the noise: the bright dust maps agree
    dust = p["maps"][0, :, 1 if n_out == 5 else 0]
    if n_out == 5:
        assert np.corrcoef(dust[0], dust[1])[0, 1] > 0.9


def test_bad_requests_fail_cleanly_and_write_nothing(so_stage):
    root, cfg = so_stage
    out = root / "bad.h5"
    r = run_nilc(root, "joint9", out)
    assert r.returncode == 2 and "unknown compression 'joint9'" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
    masked = dict(cfg, nilc=dict(cfg["nilc"], mask="GAL040"))
    (root / "masked.yaml").write_text(yaml.safe_dump(masked))
    r = run_nilc(root, "joint", out, "masked.yaml")
    assert r.returncode == 2 and "needs --masks" in r.stderr and not out.exists()
    r = run_nilc(root, "joint", out, "masked.yaml", ["--masks", "masks.h5"])
    assert r.returncode == 0, r.stderr
    p = io.read_product(out, "nilc")
    assert p.attrs["mask"] == "GAL040"
    other = dict(cfg, nilc=dict(cfg["nilc"], simulations=[]))
    (root / "other.yaml").write_text(yaml.safe_dump(other))
    r = run_nilc(root, "joint", root / "x.h5", "other.yaml")
    assert r.returncode == 2 and "not in nilc.simulations" in r.stderr
