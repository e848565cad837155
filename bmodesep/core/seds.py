"""Spectral energy distributions in K_CMB, normalised to 1 at a reference frequency.

Conventions (DESIGN.md): CMB = 1; synchrotron ``(nu/nu0)^beta_s g(nu)/g(nu0)``; dust
``(nu/nu0)^(beta_d+1) (exp(h nu0/k T_d) - 1)/(exp(h nu/k T_d) - 1) g(nu)/g(nu0)`` with
``g(nu) = (e^x - 1)^2 / (x^2 e^x)``, ``x = h nu / (k T_CMB)``, the K_RJ -> K_CMB factor.
Frequencies in GHz, temperatures in K.  Every function takes an array module ``xp``
(numpy by default, ``jax.numpy`` for the likelihoods) and broadcasts its arguments.
"""

from __future__ import annotations

import numpy as np

PLANCK_H = 6.62607015e-34  # J s
BOLTZMANN_K = 1.380649e-23  # J / K
T_CMB_K = 2.7255
# The spectral parameters of the parametric foreground model (kabalan2025), in this order
# wherever they index arrays: dust index, dust temperature [K], synchrotron index.
SPECTRAL_PARAMETERS = ("beta_d", "temperature_d", "beta_s")
H_OVER_K_K_PER_GHZ = PLANCK_H * 1e9 / BOLTZMANN_K  # h nu / k in K for nu in GHz


def rj_to_cmb(freq_ghz, xp=np):
    """g(nu): multiply a K_RJ brightness by this to get K_CMB."""
    x = H_OVER_K_K_PER_GHZ * xp.asarray(freq_ghz) / T_CMB_K
    return xp.expm1(x) ** 2 / (x**2 * xp.exp(x))


def cmb_sed(freq_ghz, xp=np):
    """The CMB in K_CMB: 1 at every frequency."""
    return xp.ones_like(xp.asarray(freq_ghz, dtype=float))


def synchrotron_sed(freq_ghz, beta_s, freq_ref_ghz=23.0, xp=np):
    """Power law in K_RJ with index ``beta_s``, converted to K_CMB, 1 at ``freq_ref_ghz``."""
    nu = xp.asarray(freq_ghz)
    power = xp.exp(beta_s * xp.log(nu / freq_ref_ghz))  # (nu/nu0)^beta_s: one exp, no pow
    return power * rj_to_cmb(nu, xp) / rj_to_cmb(freq_ref_ghz, xp)


def dust_sed(freq_ghz, beta_d, temp_d_k, freq_ref_ghz=353.0, xp=np):
    """Modified blackbody in K_CMB, 1 at ``freq_ref_ghz``."""
    nu = xp.asarray(freq_ghz)
    ratio = xp.expm1(H_OVER_K_K_PER_GHZ * freq_ref_ghz / temp_d_k) / xp.expm1(
        H_OVER_K_K_PER_GHZ * nu / temp_d_k
    )
    return (
        xp.exp((beta_d + 1.0) * xp.log(nu / freq_ref_ghz))  # one exp, no pow
        * ratio
        * rj_to_cmb(nu, xp)
        / rj_to_cmb(freq_ref_ghz, xp)
    )
