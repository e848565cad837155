"""The screened grid search (issue 28): predicted realisations and the candidates' screen."""

import numpy as np
import pytest
from conftest import litebird_grf_problem

from bmodesep.core.compsep import clustering, gridsearch, screening, selection
from bmodesep.core.compsep import likelihood as compsep
from bmodesep.errors import ConfigError

START = {"beta_d": 1.54, "temperature_d": 20.0, "beta_s": -3.0}
BOUNDS = {"beta_d": (0.5, 5.0), "temperature_d": (5.0, 100.0), "beta_s": (-6.0, -0.5)}


@pytest.fixture(scope="module")
def problem():
    """The benchmarks' LiteBIRD-like GRF sky at nside 16 on 20% of the sky, 40 realisations."""
    zone, prob, _ = litebird_grf_problem(40)
    return zone, prob


def layout(zone, counts):
    patches = {
        p: clustering.kmeans_patches(zone, k, 0)
        for p, k in zip(compsep.PARAMETERS, counts, strict=True)
    }
    return compsep.cell_layout(patches, zone)


@pytest.mark.slow
def test_predicted_variance_and_nll_match_the_monte_carlo(problem):
    """The first-order prediction of eq. 9 from the noiseless fit against 40 realisations
    (a known answer: for small index errors the reconstruction is linear in the noise)."""
    zone, prob = problem
    configs = [(1, 1, 1), (8, 2, 2), (40, 4, 4), (120, 10, 10)]
    counts = [layout(zone, c).n_params for c in configs]
    layouts = gridsearch.pad_layouts([layout(zone, c) for c in configs])
    predicted = [screening.predict_configuration(lay, prob) for lay in layouts]
    measured = [gridsearch.evaluate_configuration(lay, prob) for lay in layouts]
    pairs = list(zip(predicted, measured, strict=True))
    ratio = np.array([p.cmb_variance / m.cmb_variance for p, m in pairs])
    np.testing.assert_allclose(ratio, 1.0, atol=0.04)
    index_share = np.array([p.index_variance / p.cmb_variance for p in predicted])
    # the index term matters (without it the prediction would be off by far more than the
    # tolerance) and grows with the number of patches
    assert index_share[-1] > 0.2 and np.all(np.diff(index_share) > 0)
    for p, m in zip(predicted, measured, strict=True):
        assert p.systematic_residual == pytest.approx(m.systematic_residual, rel=1e-9)
        np.testing.assert_allclose(p.foreground_params, m.foreground_params, rtol=1e-9)
    # every index touches data and none runs to a bound here: all are free
    assert [p.free_parameters for p in predicted] == counts
    # -ln L: the predicted mean is off by one constant, the same for every configuration
    offset = np.array([p.nll_mean - m.nll.mean() for p, m in zip(predicted, measured, strict=True)])
    spread = np.ptp([m.nll.mean() for m in measured])
    assert np.ptp(offset) < 0.02 * spread


def random_criteria(rng, n, spectra=True):
    v = np.exp(rng.normal(0, 0.15, n))
    syst = v * np.exp(rng.normal(np.log(1e-2), 1.0, n))
    return selection.Criteria(
        cmb_variance=v,
        systematic_residual=syst,
        nll_mean=-1e4 - 5.0 * np.arange(n) + rng.normal(0, 3, n),
        systematic_bb=syst * 3.0,
        statistical_bb=v * 2.5,
        tensor_bb=1e3,
    )


def measured_within(rng, predicted, margin):
    """Measured criteria whose variances lie inside the screen's assumed bounds."""
    f = np.exp(rng.uniform(-1, 1, predicted.cmb_variance.size) * np.log1p(margin))
    free = np.arange(predicted.cmb_variance.size) * 10.0
    slack = margin * (free / 2 + 1)
    return predicted._replace(
        cmb_variance=predicted.cmb_variance * f,
        statistical_bb=predicted.statistical_bb * f,
        nll_mean=predicted.nll_mean + rng.uniform(-1, 1, f.size) * slack,
    ), free


@pytest.mark.parametrize(
    "rule",
    [
        selection.Rule("variance"),
        selection.Rule("variance_plus_systematic"),
        selection.Rule("nll"),
        selection.Rule("threshold", relative_threshold=1e-2),
        selection.Rule("threshold", relative_threshold=1e-4),  # none eligible: the fallback
        selection.Rule("r_aware", fraction=0.03, reference="statistical"),
        selection.Rule("r_aware", fraction=3e-2, reference="tensor", reference_r=1e-3),
    ],
)
def test_the_screen_keeps_the_exhaustive_choice_whenever_predictions_hold(rule):
    """A property: if every measured value lies within the margin of its prediction, the
    configuration the rule picks from measured values over the whole grid is a candidate,
    and the rule applied to the candidates alone picks it."""
    rng = np.random.default_rng(7)
    margin = 0.1
    kept = []
    for _ in range(300):
        predicted = random_criteria(rng, 60)
        measured, free = measured_within(rng, predicted, margin)
        screen = screening.candidates(predicted, free, rule, margin)
        best, met = selection.select(measured, rule)
        assert screen.candidates[best]
        idx = np.flatnonzero(screen.candidates)
        sub = measured.take(idx)
        sub_best, sub_met = selection.select(sub, rule)
        assert idx[sub_best] == best and sub_met == met
        kept.append(screen.candidates.mean())
    assert np.mean(kept) < 0.8  # the screen does screen


def test_the_screen_by_hand():
    c = selection.Criteria(np.array([1.0, 1.05, 1.5, 2.0]), np.zeros(4))
    screen = screening.candidates(c, np.zeros(4), selection.Rule("variance"), 0.1)
    assert screen.candidates.tolist() == [True, True, False, False]
    assert screen.best_predicted == 0
    tight = screening.candidates(c, np.zeros(4), selection.Rule("variance"), 0.0)
    assert tight.candidates.tolist() == [True, False, False, False]
    with pytest.raises(ConfigError, match="margin must be >= 0"):
        screening.candidates(c, np.zeros(4), selection.Rule("variance"), -0.1)


def test_fits_fraction():
    assert screening.fits_fraction(96, 96, 20) == pytest.approx((96 + 96 * 21) / (96 * 21))
    assert screening.fits_fraction(3200, 10, 100) == pytest.approx((3200 + 1010) / 323200)


@pytest.mark.slow
def test_predicted_statistical_residual_matches_the_monte_carlo(problem):
    """The predicted statistical residual 'spectrum' against 40 realisations, for two
    statistics of a zone map: its mean square (white-noise-like: the variance itself) and
    the square of its mean over the zone (the largest scale, where the index errors,
    correlated over patches, put more power than white noise of the same variance)."""
    zone, prob = problem

    def statistics(m):
        return np.array([np.mean(m**2), np.mean(m, axis=-1) @ np.mean(m, axis=-1)])

    lay = layout(zone, (40, 4, 4))
    predicted = screening.predict_configuration(lay, prob._replace(bb_spectrum=statistics))
    res = gridsearch.evaluate_configuration(lay, prob, keep_maps=True)
    spread = res.cmb - res.cmb.mean(axis=0)  # the statistical residual of each realisation
    mc = np.mean([statistics(m) for m in spread], axis=0) * 40 / 39
    assert predicted.statistical_cl[0] == pytest.approx(mc[0], rel=0.05)
    assert predicted.statistical_cl[0] == pytest.approx(predicted.cmb_variance, rel=0.1)
    # large scales: more than white noise of the same variance would give, as measured
    white = predicted.cmb_variance / lay.cell_of_pixel.size
    assert predicted.statistical_cl[1] > 3 * white and mc[1] > 3 * white
    assert predicted.statistical_cl[1] == pytest.approx(mc[1], rel=0.5)
