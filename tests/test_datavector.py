"""The cross-split data vector of duivenvoorden2025 (eq. 22): layout and known answers."""

import numpy as np

from bmodesep.core import harmonics
from bmodesep.core.nilc import datavector
from bmodesep.core.randomness import rng_for


def components(lmax, seed, n=5):
    cl = np.where(np.arange(lmax + 1) >= 2, 1.0, 0.0)
    return np.stack([harmonics.gaussian_alm(cl, lmax, rng_for(seed, "dv", c)) for c in range(n)])


def test_layout_is_15_pairs_by_11_bins():
    edges = datavector.bin_edges()
    assert edges.tolist() == list(range(30, 196, 15))  # 11 complete bins in 30..200
    s = components(200, 0)
    x = datavector.data_vector(s, s, 200)
    assert x.shape == (165,)
    assert datavector.component_pairs(5)[:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 1)]


def test_cross_split_spectra_are_symmetrised_and_noise_free_on_average():
    lmax = 200
    s = components(lmax, 1)
    n1, n2 = components(lmax, 2), components(lmax, 3)  # independent noise, same power
    x = datavector.cross_split_spectra(s + n1, s + n2, lmax)
    # pair (0, 1) is the mean of the two cross-split orderings
    direct = 0.5 * (
        harmonics.cross_spectrum(s[0] + n1[0], s[1] + n2[1], lmax)
        + harmonics.cross_spectrum(s[1] + n1[1], s[0] + n2[0], lmax)
    )
    np.testing.assert_allclose(x[1], direct)
    # the auto pair of the cross-split estimate has no noise bias: <C> = 1, not 2
    auto = datavector.bin_spectra(x[0], np.array([30, 201]))[0]
    assert abs(auto - 1.0) < 4 * np.sqrt(2 / np.sum(2 * np.arange(30, 201) + 1)) * np.sqrt(2)
    sigma = datavector.gaussian_sigma(s + n1, s + n2, lmax)
    assert sigma.shape == (165,) and np.all(sigma > 0)
