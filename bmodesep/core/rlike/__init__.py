"""BB spectra, residuals and the r likelihood (kabalan2025 sec. 4).

``spectra`` (pseudo-C_l with the f_sky correction, MASTER band powers, the
``BBEstimator``), ``likelihood`` (eq. 15, intervals, curvature errors, zone combination),
``residuals`` (residual spectra against the simulated sky's theory).
"""

from bmodesep.core.rlike.likelihood import RResult, analyse, combine_zones, neg2_log_likelihood
from bmodesep.core.rlike.residuals import (
    MethodLikelihood,
    Theory,
    analyse_residuals,
    method_likelihood,
    observation_likelihood,
    theory_spectra,
)
from bmodesep.core.rlike.spectra import BBEstimator, residual_spectra

__all__ = [
    "BBEstimator",
    "MethodLikelihood",
    "RResult",
    "Theory",
    "analyse",
    "analyse_residuals",
    "combine_zones",
    "method_likelihood",
    "neg2_log_likelihood",
    "observation_likelihood",
    "residual_spectra",
    "theory_spectra",
]
