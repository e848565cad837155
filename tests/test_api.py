"""The curated public API of each subject (issue 30): usable from a notebook."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

SUBJECTS = ("simulate", "compsep", "rlike", "nilc", "npe")


@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_public_name_resolves_and_says_what_it_is(subject):
    module = importlib.import_module(f"bmodesep.core.{subject}")
    assert module.__doc__ and len(module.__all__) >= 5
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"bmodesep.core.{subject}.{name} has no docstring"


def test_the_sbi_subject_loads_torch_only_for_the_flows():
    code = (
        "import sys\n"
        "from bmodesep.core import npe\n"
        "a = 'torch' in sys.modules\n"
        "npe.sigma_beta(1e-6, -2.5, 0.0, -3.0), npe.Setup, npe.PARAMETERS\n"
        "b = 'torch' in sys.modules\n"
        "npe.train\n"
        "print(a, b, 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "True"]


def test_a_notebook_recovers_r_from_an_exact_spectrum():
    """Eq. 15 from the public API: C_obs = r C_tens + C_lens exactly (no residual) gives
    r-hat = r, with sigma(r) from the curvature of the cosmic-variance likelihood."""
    from bmodesep.core import rlike

    ell = np.arange(2, 200)
    tensor = 1e-2 * (ell / 80.0) ** -2.0
    lens = 2e-6 * ell**0.5
    r_true = 0.02
    result = rlike.analyse(
        np.linspace(0, 0.05, 501),
        r_true * tensor + lens,
        tensor,
        lens,
        0 * ell,
        0.5 * (2 * ell + 1),
    )
    assert result.r_hat == pytest.approx(r_true, abs=1e-6)
    fisher = np.sum(0.5 * 0.5 * (2 * ell + 1) * (tensor / (r_true * tensor + lens)) ** 2)
    assert result.sigma_curvature == pytest.approx(fisher**-0.5, rel=1e-3)
