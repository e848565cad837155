"""The Table 1 prior and the forward model theta -> data vector (duivenvoorden2025)."""

import itertools

import numpy as np
import pytest
from scipy import integrate

from bmodesep.core.nilc import ilc
from bmodesep.core.npe import prior, simulator
from bmodesep.errors import ConfigError
from bmodesep.settings import instrument_from_spec, preset

SOSAT = instrument_from_spec("sosat", preset("sosat"))
JOINT = ilc.Compression("needlet", ilc.COMPONENTS, "all", ilc.Fiducial())


def test_prior_marginals_are_normalised_and_respect_their_bounds():
    p = prior.prior()
    theta = p.sample(20000, np.random.default_rng(0))
    assert theta.shape == (20000, 13)
    assert np.all(theta >= p.low) and np.all(theta <= p.high)
    for i, m in enumerate(p.marginals):
        lo = m.low if np.isfinite(m.low) else m.mu - 10 * m.sigma
        hi = m.high if np.isfinite(m.high) else m.mu + 10 * m.sigma
        total, _ = integrate.quad(lambda x, m=m: np.exp(m.log_prob(x)), lo, hi, points=[m.mu])
        assert total == pytest.approx(1.0, abs=1e-6), prior.PARAMETERS[i]
        # sample means agree with the analytic truncated-normal means
        assert theta[:, i].mean() == pytest.approx(m.mean(), abs=4 * theta[:, i].std() / 141)
    r = theta[:, 0]  # half-normal, scale 0.02: mean 0.02 sqrt(2/pi)
    assert r.mean() == pytest.approx(0.02 * np.sqrt(2 / np.pi), rel=0.03)
    assert np.all(np.isinf(p.log_prob(np.array([[-0.01, *theta[0, 1:]]]))))


def test_widened_prior_is_wider_where_the_paper_says():
    a, b = prior.prior("table1"), prior.prior("widened")
    wider = {"A_d", "alpha_d", "beta_d", "A_s", "alpha_s", "beta_s"}
    for name, ma, mb in zip(prior.PARAMETERS, a.marginals, b.marginals, strict=True):
        assert (mb.sigma > ma.sigma) == (name in wider)
    with pytest.raises(ConfigError, match="unknown prior"):
        prior.prior("flat")


@pytest.fixture(scope="module")
def setup32(spectra):
    return simulator.make_setup(SOSAT, spectra, 32, JOINT)


def test_simulator_is_deterministic_and_has_the_data_vector_layout(setup32):
    theta = prior.prior().sample(1, np.random.default_rng(1))[0]
    x = simulator.simulate(theta, 7, setup32)
    assert x.shape == (setup32.data_vector_length,) == (15 * 4,)  # lmax 95: 4 bins of 15
    np.testing.assert_array_equal(x, simulator.simulate(theta, 7, setup32))
    assert not np.allclose(x, simulator.simulate(theta, 8, setup32))
    with pytest.raises(ConfigError, match="13 finite numbers"):
        simulator.simulate(theta[:5], 7, setup32)
    with pytest.raises(ConfigError, match=r"outside the model: A_d = -1 < 0$"):
        simulator.simulate(np.r_[theta[:2], -1.0, theta[3:]], 7, setup32)
    with pytest.raises(ConfigError, match=r"outside the model: \|rho_ds\| = 1.5 > 1$"):
        simulator.simulate(np.r_[theta[:12], 1.5], 7, setup32)


def test_cmb_auto_spectrum_tracks_r(setup32):
    """Bins of the CMB x CMB cross-split spectrum grow with r by ~ r C_tensor."""
    theta = np.array([p.mean() for p in prior.prior().marginals])
    low = simulator.simulate(np.r_[0.0, theta[1:]], 3, setup32)[:4]
    high = simulator.simulate(np.r_[0.5, theta[1:]], 3, setup32)[:4]  # same seed: same noise
    edges = setup32.edges
    tensor = np.array([setup32.tensor_cl[a:b].mean() for a, b in itertools.pairwise(edges)])
    smallest_beam = setup32.beams[np.argmax(setup32.beams[:, -1])]
    beam2 = np.array([(smallest_beam[a:b] ** 2).mean() for a, b in itertools.pairwise(edges)])
    ratio = (high - low) / (0.5 * tensor * beam2)
    assert np.all(np.abs(ratio - 1) < 0.5), ratio  # cosmic variance of a few bins


def test_simulator_runs_a_litebird_like_instrument_with_two_white_noise_splits(spectra):
    """Issue 18: any instrument of the config; white pixel noise goes in as Q/U maps and
    through the spin-2 B-mode analysis (as the NILC stage's input does)."""
    litebird = instrument_from_spec("litebird", preset("litebird"))
    with pytest.raises(ConfigError, match="has one split"):
        simulator.make_setup(litebird, spectra, 16, JOINT)
    two = instrument_from_spec("litebird2", dict(preset("litebird"), splits=2))
    setup = simulator.make_setup(two, spectra, 16, JOINT, ell_range=(10, 40), bin_width=10)
    theta = prior.prior().sample(1, np.random.default_rng(2))[0]
    x = simulator.simulate(theta, 3, setup)
    assert x.shape == (15 * 3,) and np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, simulator.simulate(theta, 3, setup))
    # the two splits share the sky and differ by their noise only
    data = simulator.observe(simulator.simulate_sky(theta, 3, setup), 3, setup)
    assert data.shape == (2, 15, setup.transfer.shape[1] * (setup.transfer.shape[1] + 1) // 2)
    assert not np.allclose(data[0], data[1])
    quiet = setup._replace(
        instrument=instrument_from_spec(
            "quiet", dict(preset("litebird"), splits=2, depth_uk_arcmin=[1e-9] * 15)
        )
    )
    calm = simulator.observe(simulator.simulate_sky(theta, 3, quiet), 3, quiet)
    np.testing.assert_allclose(calm[0], calm[1], atol=1e-6 * np.abs(calm).max())
