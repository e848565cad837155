"""The selection rules of the grid search on constructed inputs with known answers."""

import numpy as np
import pytest

from bmodesep.core.compsep import selection
from bmodesep.core.compsep.selection import Criteria, Rule
from bmodesep.errors import ConfigError, DataError

# Five configurations, from few patches (biased, quiet) to many (unbiased, noisy):
# sigma^2_CMB rises with the patch count, the systematic residual falls, the NLL falls.
VARIANCE = np.array([1.00, 1.05, 1.10, 1.30, 1.60])
SYSTEMATIC = np.array([0.20, 0.04, 5e-3, 1e-4, 0.0])
NLL = np.array([-10.0, -12.0, -13.0, -13.5, -13.6])
# BB powers on the r multipoles: systematic (falls), statistical (rises), tensor r = 1
SYST_BB = np.array([50.0, 8.0, 0.5, 0.05, 0.0])
STAT_BB = np.array([10.0, 11.0, 12.0, 14.0, 18.0])
TENSOR_BB = 2.0e4  # so that 1e-3 x tensor = 20: a systematic below it biases r by < 1e-3

CRITERIA = Criteria(VARIANCE, SYSTEMATIC, NLL, SYST_BB, STAT_BB, TENSOR_BB)


def test_eq9_alone_takes_the_quietest_configuration():
    assert selection.select(CRITERIA, Rule("variance")) == (0, True)


def test_the_papers_threshold_excludes_biased_configurations():
    # eligible: systematic <= t x variance
    assert selection.select(CRITERIA, Rule("threshold", relative_threshold=1e-2)) == (2, True)
    assert selection.select(CRITERIA, Rule("threshold", relative_threshold=1e-3)) == (3, True)
    assert selection.select(CRITERIA, Rule("threshold", relative_threshold=0.0)) == (4, True)
    assert selection.select(CRITERIA, Rule("threshold", relative_threshold=1.0)) == (0, True)


def test_threshold_nobody_meets_takes_the_smallest_ratio_and_says_so():
    biased = CRITERIA._replace(systematic_residual=SYSTEMATIC + 1.0)
    # ratios 1.2, 0.99, 0.91, 0.77, 0.625: the last, not eq. 9's first
    assert selection.select(biased, Rule("threshold", relative_threshold=1e-2)) == (4, False)


def test_variance_plus_systematic_is_the_least_mean_squared_error():
    # MSE: 1.2, 1.09, 1.105, 1.3001, 1.6
    assert selection.select(CRITERIA, Rule("variance_plus_systematic")) == (1, True)


def test_nll_takes_the_best_fit():
    assert selection.select(CRITERIA, Rule("nll")) == (4, True)
    with pytest.raises(ConfigError, match="nll needs"):
        selection.select(Criteria(VARIANCE, SYSTEMATIC), Rule("nll"))


def test_r_aware_against_the_statistical_residual():
    # systematic / statistical BB: 5, 0.73, 0.042, 0.0036, 0
    assert selection.select(CRITERIA, Rule("r_aware", fraction=0.1)) == (2, True)
    assert selection.select(CRITERIA, Rule("r_aware", fraction=0.01)) == (3, True)
    assert selection.select(CRITERIA, Rule("r_aware", fraction=1.0)) == (1, True)


def test_r_aware_against_the_tensor_spectrum_bounds_the_r_bias():
    # systematic / (1e-3 x tensor) = 2.5, 0.4, 0.025, ...: a bias below 1e-3 from config 1
    rule = Rule("r_aware", fraction=1.0, reference="tensor", reference_r=1e-3)
    assert selection.select(CRITERIA, rule) == (1, True)
    # a bias below 1e-4 (1e-4 x tensor = 2): 8 / 2 = 4 > 1 excludes config 1, 0.5 / 2 passes
    rule = rule._replace(reference_r=1e-4)
    assert selection.select(CRITERIA, rule) == (2, True)


def test_r_aware_nobody_eligible_takes_the_smallest_ratio_and_says_so():
    crit = CRITERIA._replace(systematic_bb=SYST_BB + 100.0)
    # ratios (syst + 100) / stat: 15, 9.8, 8.4, 7.15, 5.6
    assert selection.select(crit, Rule("r_aware", fraction=0.1)) == (4, False)


def test_r_aware_needs_spectra_and_bad_rules_are_named():
    with pytest.raises(ConfigError, match="r_aware needs residual BB spectra"):
        selection.select(Criteria(VARIANCE, SYSTEMATIC, NLL), Rule("r_aware"))
    with pytest.raises(ConfigError, match="unknown selection rule 'mse'"):
        selection.select(CRITERIA, Rule("mse"))
    with pytest.raises(ConfigError, match="unknown r_aware reference 'noise'"):
        selection.select(CRITERIA, Rule("r_aware", reference="noise"))


def test_bb_power_weights_by_modes():
    modes = np.array([5.0, 7.0, 9.0])
    cl = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(selection.bb_power(cl, modes), [46.0, 9.0])


def test_non_finite_variances_are_refused_not_ranked():
    nan = VARIANCE.copy()
    nan[2] = np.nan
    with pytest.raises(DataError, match="finite and positive"):
        selection.select(CRITERIA._replace(cmb_variance=nan), Rule("threshold"))
