import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy
from pathlib import Path

import numpy as np
import pytest

from bmodesep.cmb import compute_camb_spectra
from bmodesep.config import load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def default_config():
    return load_config(REPO / "config" / "config.yaml")


@pytest.fixture(scope="session")
def spectra(default_config):
    """Real CAMB spectra (computed once per test session)."""
    return compute_camb_spectra(default_config["cmb"]["cosmology"], 300)


def tiny_config(nside=8, **sky_overrides):
    """A complete small config: one GRF sky seen by LiteBIRD and by SO-SAT."""
    sky = {
        "kind": "grf",
        "seed": 5,
        "dust": {"beta": {"mean": 1.54, "amplitude": 0.3}},
        "synchrotron": {"beta": {"mean": -3.0, "amplitude": 0.25}},
        "galactic_envelope": {"amplitude": 5.0},
    }
    sky.update(sky_overrides)
    raw = {
        "cmb": {"lmax": 200},
        "skies": {"grf": sky},
        "instruments": {"litebird": "litebird", "sosat": "sosat"},
        "simulations": {
            "lb": {
                "sky": "grf",
                "instrument": "litebird",
                "nside": nside,
                "noise_realisations": 2,
                "seed": 9,
            },
            "so": {
                "sky": "grf",
                "instrument": "sosat",
                "nside": nside,
                "noise_realisations": 1,
                "seed": 10,
            },
        },
    }
    return validate_config(raw)


@pytest.fixture
def config_factory():
    return lambda **kw: copy.deepcopy(tiny_config(**kw))


def binned_chi2(measured, expected, ell, lmin, lmax, dof_per_ell):
    """Chi-square of measured C_l against expected with cosmic-variance errors per l."""
    sel = (ell >= lmin) & (ell <= lmax)
    var = 2.0 * expected[sel] ** 2 / dof_per_ell[sel]
    return float(np.sum((measured[sel] - expected[sel]) ** 2 / var)), int(sel.sum())
