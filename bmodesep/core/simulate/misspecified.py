"""Foreground departures from the GRF model that need no templates (issue 17, first step).

duivenvoorden2025 trains on Gaussian foregrounds with one power-law or modified-blackbody
SED per pixel and tests on PySM skies that break those assumptions (its Table 3: d1, d4,
d10, d12 with s5, s7).  PySM's templates cannot be fetched on our machines, so these
pieces build stand-ins for the same *kinds* of departure (``../shared/reference/
sky-models.md``):

* :func:`layered_dust`: several dust layers along the line of sight, each with its own
  Q/U pattern, beta_d and T_d (PySM d12, Martinez-Solaeche et al. 2018): Q/U at two
  frequencies are no longer proportional (frequency decorrelation);
* :func:`curved_synchrotron_sed`: a synchrotron index that runs with frequency,
  ``beta_s + C ln(nu / nu_c)`` (PySM s7's curvature);
* :func:`lognormal_modulation`: a positive, skewed amplitude field that multiplies
  Gaussian Q/U (non-Gaussian, filament-like contrast);
* :func:`correlate_with_amplitude`: spectral indices that follow the log amplitude (the
  amplitude-index correlation behind the paper's Fig. 8 deviation).

Pure NumPy: maps in, maps out.  The sky kinds ``lognormal``, ``layered``,
``curved_synchrotron`` and ``correlated`` of :mod:`bmodesep.core.simulate.sky` are built
from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bmodesep.core import seds


def layered_dust(
    layers_qu: Sequence[np.ndarray],
    betas: Sequence[np.ndarray],
    temperatures_k: Sequence[np.ndarray],
    freqs_ghz,
    freq_ref_ghz: float = 353.0,
) -> np.ndarray:
    """Dust Q/U ``[freq, 2, npix]`` (uK_CMB) summed over layers: layer i has Q/U
    ``layers_qu[i]`` ``[2, npix]`` at ``freq_ref_ghz`` and its own modified blackbody
    (``betas[i]``, ``temperatures_k[i]``, maps or scalars)."""
    if not len(layers_qu) == len(betas) == len(temperatures_k) >= 1:
        raise ValueError("layered dust needs one beta_d and one T_d per layer")
    nu = np.asarray(freqs_ghz, dtype=float)[:, None]
    out = 0.0
    for qu, beta, temp in zip(layers_qu, betas, temperatures_k, strict=True):
        sed = seds.dust_sed(nu, np.asarray(beta)[None], np.asarray(temp)[None], freq_ref_ghz)
        out = out + sed[:, None] * np.asarray(qu)[None]
    return out


def curved_synchrotron_sed(
    freq_ghz, beta_s, curvature, freq_ref_ghz: float = 23.0, freq_curv_ghz: float = 23.0
):
    """Synchrotron in K_CMB, 1 at ``freq_ref_ghz``, with a running index: in K_RJ
    ``(nu/nu0)^(beta_s + C ln(nu/nu_c))`` (PySM's curved power law; C < 0 steepens it
    towards high frequencies).  ``curvature`` 0 is :func:`seds.synchrotron_sed`."""
    nu = np.asarray(freq_ghz, dtype=float)
    index = np.asarray(beta_s) + np.asarray(curvature) * np.log(nu / freq_curv_ghz)
    power = np.exp(index * np.log(nu / freq_ref_ghz))
    return power * seds.rj_to_cmb(nu) / seds.rj_to_cmb(freq_ref_ghz)


def effective_index(sed_1, sed_2, freq_1_ghz: float, freq_2_ghz: float):
    """The power-law index in K_RJ between two frequencies of an SED given in K_CMB."""
    rj_1 = np.asarray(sed_1) / seds.rj_to_cmb(freq_1_ghz)
    rj_2 = np.asarray(sed_2) / seds.rj_to_cmb(freq_2_ghz)
    return np.log(rj_2 / rj_1) / np.log(freq_2_ghz / freq_1_ghz)


def lognormal_modulation(unit_field: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(sigma g - sigma^2 / 2)`` of a unit-variance Gaussian field ``g``: positive,
    mean 1, skewness ``(e^s2 + 2) sqrt(e^s2 - 1)`` with ``s2 = sigma^2``."""
    if sigma < 0:
        raise ValueError(f"the lognormal width must be non-negative, got {sigma}")
    return np.exp(sigma * np.asarray(unit_field) - 0.5 * sigma**2)


def correlate_with_amplitude(
    index_map: np.ndarray, amplitude_map: np.ndarray, strength: float
) -> np.ndarray:
    """``index + strength x`` the standardised log amplitude (zero mean, unit variance):
    an index that is steeper or flatter where the emission is brighter."""
    log_a = np.log(np.asarray(amplitude_map, dtype=float))
    spread = log_a.std()
    if not np.isfinite(spread) or spread == 0:
        raise ValueError("the amplitude map must be positive and not constant")
    return np.asarray(index_map) + strength * (log_a - log_a.mean()) / spread
