"""The compressed data vector of duivenvoorden2025 (eq. 22): cross-split spectra of components.

For component alm of two splits with independent noise, ``s1[c]`` and ``s2[c]``:

    C_l^{ij} = 1/(2 (2l + 1)) sum_m [s1^i_lm s2^j*_lm + s1^j_lm s2^i*_lm]   (real part)

for the N(N+1)/2 pairs i <= j, binned in complete bins of ``width`` multipoles from
``lmin`` up to ``lmax`` (30 <= l <= 200 with width 15: 11 bins), ordered pair-major:
15 pairs x 11 bins = 165 numbers for 5 components.
"""

from __future__ import annotations

import itertools

import numpy as np

from bmodesep.core import harmonics


def component_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i, n)]


def bin_edges(lmin: int = 30, lmax: int = 200, width: int = 15) -> np.ndarray:
    """Edges of the complete bins ``[e_b, e_b+1)`` inside ``lmin..lmax``."""
    n_bins = (lmax - lmin + 1) // width
    if n_bins < 1:
        raise ValueError(f"no complete bin of width {width} in [{lmin}, {lmax}]")
    return lmin + width * np.arange(n_bins + 1)


def cross_split_spectra(s1: np.ndarray, s2: np.ndarray, lmax: int) -> np.ndarray:
    """Symmetrised cross-split spectra ``[n_pairs, lmax+1]`` of alm ``[c, nalm]``."""
    pairs = component_pairs(s1.shape[0])
    i, j = np.array(pairs).T
    return 0.5 * (
        harmonics.cross_spectrum(s1[i], s2[j], lmax) + harmonics.cross_spectrum(s1[j], s2[i], lmax)
    )


def bin_spectra(cl: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Uniform bin averages ``[..., n_bins]`` of ``cl[..., l]``."""
    return np.stack([cl[..., a:b].mean(axis=-1) for a, b in itertools.pairwise(edges)], axis=-1)


def data_vector(s1, s2, lmax: int, edges: np.ndarray | None = None) -> np.ndarray:
    """The flattened binned cross-split spectra (pair-major)."""
    edges = bin_edges() if edges is None else edges
    if edges[-1] - 1 > lmax:
        raise ValueError(f"bins reach l = {edges[-1] - 1} beyond the alm's lmax {lmax}")
    return bin_spectra(cross_split_spectra(s1, s2, lmax), edges).ravel()


def gaussian_sigma(s1, s2, lmax: int, edges: np.ndarray | None = None) -> np.ndarray:
    """Gaussian (Knox) standard deviation of each data-vector element.

    var C_b^{ij} = (C_b^{ii} C_b^{jj} + (C_b^{ij})^2) / N_b with N_b = sum_{l in b} (2l + 1)
    modes and C^{ii} the mean of the two splits' auto spectra (noise included).
    """
    edges = bin_edges() if edges is None else edges
    auto = 0.5 * (harmonics.cross_spectrum(s1, s1, lmax) + harmonics.cross_spectrum(s2, s2, lmax))
    auto_b = bin_spectra(auto, edges)
    cross_b = bin_spectra(cross_split_spectra(s1, s2, lmax), edges)
    modes = np.array([np.sum(2 * np.arange(a, b) + 1) for a, b in itertools.pairwise(edges)])
    i, j = np.array(component_pairs(s1.shape[0])).T
    var = (auto_b[i] * auto_b[j] + cross_b**2) / modes
    return np.sqrt(var).ravel()
