"""Clustered parametric component separation (kabalan2025), in JAX, float64.

``likelihood`` (mixing matrix, per-cell sufficient statistics, spectral likelihood,
reconstruction), ``clustering`` (spherical K-means, multi-resolution and single patches),
``fitting`` (bounded L-BFGS), ``gridsearch`` (one configuration's fits over noise
realisations, chunks of the K_beta_d x K_T_d x K_beta_s grid), ``selection`` (the rules
that pick a configuration), ``newton`` (the structured Newton fit), ``screening`` (the
screened grid search: predicted realisations from the noiseless fit, the candidates).
"""

from bmodesep.core.compsep.clustering import kmeans_patches, multires_patches, single_patch
from bmodesep.core.compsep.fitting import FitOptions, FitResult, minimize
from bmodesep.core.compsep.gridsearch import (
    ConfigResult,
    GridPoint,
    Problem,
    evaluate_configuration,
    grid_points,
)
from bmodesep.core.compsep.likelihood import (
    PARAMETERS,
    CellLayout,
    SpectralModel,
    cell_layout,
    mixing_matrix,
)

__all__ = [
    "PARAMETERS",
    "CellLayout",
    "ConfigResult",
    "FitOptions",
    "FitResult",
    "GridPoint",
    "Problem",
    "SpectralModel",
    "cell_layout",
    "evaluate_configuration",
    "grid_points",
    "kmeans_patches",
    "minimize",
    "mixing_matrix",
    "multires_patches",
    "single_patch",
]
