"""CMB power spectra from CAMB and Gaussian Q/U realisations.

Two templates, in uK_CMB^2 (raw C_l, not D_l), computed once per cosmology:
the lensed-scalar spectra (BB scaled by A_lens in the model) and the tensor
spectra for r = 1 with n_t = 0 (CAMB would otherwise apply the consistency
relation n_t = -r/8 and make the template twice too high at l = 2).
Model: C^EE = C^EE_lens + r C^EE_tens,  C^BB = A_lens C^BB_lens + r C^BB_tens.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bmodesep.core import harmonics

SPECTRA_ORDER = ("TT", "EE", "BB", "TE")


class CMBSpectra(NamedTuple):
    """C_l in uK_CMB^2, arrays ``[4, lmax+1]`` in ``SPECTRA_ORDER``, l from 0."""

    lensed_scalar: np.ndarray
    tensor_r1: np.ndarray

    @property
    def lmax(self) -> int:
        return self.lensed_scalar.shape[-1] - 1

    def cl(self, which: str, r: float, a_lens: float) -> np.ndarray:
        i = SPECTRA_ORDER.index(which)
        lens_scale = a_lens if which == "BB" else 1.0
        return lens_scale * self.lensed_scalar[i] + r * self.tensor_r1[i]


class Cosmology(NamedTuple):
    """The LCDM parameters CAMB is given (H0 in km/s/Mpc, neutrino mass in eV)."""

    h0: float
    ombh2: float
    omch2: float
    mnu: float
    tau: float
    a_s: float
    ns: float


def _camb_params(cosmology: Cosmology):
    import camb

    pars = camb.CAMBparams()
    pars.set_cosmology(
        H0=cosmology.h0,
        ombh2=cosmology.ombh2,
        omch2=cosmology.omch2,
        mnu=cosmology.mnu,
        tau=cosmology.tau,
    )
    return pars


def compute_camb_spectra(cosmology: Cosmology, lmax: int) -> CMBSpectra:
    """Lensed-scalar and r = 1 (n_t = 0) tensor spectra up to ``lmax`` from CAMB."""
    import camb

    scal = _camb_params(cosmology)
    scal.InitPower.set_params(As=cosmology.a_s, ns=cosmology.ns, r=0.0)
    scal.set_for_lmax(lmax, lens_potential_accuracy=1)
    res = camb.get_results(scal)
    lensed = res.get_cmb_power_spectra(
        scal, CMB_unit="muK", raw_cl=True, spectra=["lensed_scalar"]
    )["lensed_scalar"][: lmax + 1]

    tens = _camb_params(cosmology)
    tens.InitPower.set_params(As=cosmology.a_s, ns=cosmology.ns, r=1.0, nt=0.0)
    tens.WantTensors, tens.WantScalars, tens.DoLensing = True, False, False
    tens.set_for_lmax(lmax)
    tens.max_l_tensor = lmax
    res_t = camb.get_results(tens)
    tensor = res_t.get_cmb_power_spectra(tens, CMB_unit="muK", raw_cl=True, spectra=["tensor"])[
        "tensor"
    ][: lmax + 1]
    return CMBSpectra(np.ascontiguousarray(lensed.T), np.ascontiguousarray(tensor.T))


def cmb_alm(
    spectra: CMBSpectra,
    r: float,
    a_lens: float,
    lmax: int,
    rng: np.random.Generator,
    b_modes_only: bool = False,
) -> np.ndarray:
    """Gaussian (E, B) alm ``[2, nalm]`` in uK_CMB for the given r and A_lens."""
    if lmax > spectra.lmax:
        raise ValueError(f"lmax {lmax} exceeds the CAMB spectra's lmax {spectra.lmax}")
    cl_ee = spectra.cl("EE", r, a_lens)
    cl_bb = spectra.cl("BB", r, a_lens)
    if np.any(cl_bb[: lmax + 1] < 0):
        raise ValueError(f"r = {r} makes the BB spectrum negative")
    alm_e = harmonics.gaussian_alm(cl_ee, lmax, rng)
    alm_b = harmonics.gaussian_alm(cl_bb, lmax, rng)
    if b_modes_only:
        alm_e[:] = 0.0
    return np.stack([alm_e, alm_b])
