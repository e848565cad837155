"""Neural posterior estimation: the flow recovers a known posterior; parameter space; I/O."""

import io

import numpy as np
import pytest
import torch
from scipy import integrate

from bmodesep.core.npe import flows, prior
from bmodesep.core.npe.prior import Normal, Prior
from bmodesep.errors import ConfigError, DataError

# a linear-Gaussian problem: x = A theta + noise, theta ~ N(mu0, S0): the posterior is
# N(mu_p, S_p) with S_p = (S0^-1 + A^T A / s^2)^-1, mu_p = S_p (S0^-1 mu0 + A^T x / s^2)
GAUSS_PRIOR = Prior((Normal(0.0, 1.0), Normal(0.5, 2.0), Normal(1.0, 0.5)))
MU0 = np.array([0.0, 0.5, 1.0])
S0 = np.diag([1.0, 4.0, 0.25])
NOISE = 0.5


def _train_gaussian(**settings):
    """A flow trained on 10,000 pairs of the linear-Gaussian problem; ``a``, rng, result."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 3))
    theta = GAUSS_PRIOR.sample(10_000, rng)
    x = theta @ a.T + NOISE * rng.normal(size=(theta.shape[0], 6))
    base = {
        "learning_rate": 1e-3,
        "num_transforms": 3,
        "hidden_features": 32,
        "stop_after_epochs": 20,
        "max_epochs": 300,
    }
    hp = flows.hyperparameters(base | settings)
    return a, rng, flows.train(theta, x, GAUSS_PRIOR, hp, seed=0)


@pytest.fixture(scope="module")
def gaussian_problem():
    a, _, trained = _train_gaussian()
    return a, trained


def _analytic(a, x):
    cov = np.linalg.inv(np.linalg.inv(S0) + a.T @ a / NOISE**2)
    mean = cov @ (np.linalg.inv(S0) @ MU0 + a.T @ x / NOISE**2)
    return mean, cov


@pytest.mark.slow
def test_npe_recovers_the_analytic_gaussian_posterior(gaussian_problem):
    a, trained = gaussian_problem
    post = flows.Posterior(trained.estimator, GAUSS_PRIOR)
    rng = np.random.default_rng(7)
    theta_true = GAUSS_PRIOR.sample(30, rng)
    x_obs = theta_true @ a.T + NOISE * rng.normal(size=(30, 6))
    samples = post.sample(x_obs, 3000, seed=3)
    assert samples.shape == (30, 3000, 3)
    mean_err, std_err, corr_err = [], [], []
    for x, s in zip(x_obs, samples, strict=True):
        mean, cov = _analytic(a, x)
        sigma = np.sqrt(np.diag(cov))
        mean_err.append(np.abs(s.mean(0) - mean) / sigma)
        std_err.append(np.abs(s.std(0) / sigma - 1))
        corr_err.append(np.abs(np.corrcoef(s.T) - cov / np.outer(sigma, sigma)))
    # typical posteriors match to a few percent; tail data vectors (rarer in training) less
    assert np.median(mean_err) < 0.1 and np.max(mean_err) < 0.6
    assert np.median(std_err) < 0.08 and np.max(std_err) < 0.4
    assert np.median(corr_err) < 0.05 and np.max(corr_err) < 0.25


@pytest.mark.slow
def test_npe_expected_kl_to_the_analytic_posterior_is_small(gaussian_problem):
    # E[log p(theta|x) - log q(theta|x)] over joint draws is the expected KL divergence
    a, trained = gaussian_problem
    post = flows.Posterior(trained.estimator, GAUSS_PRIOR)
    rng = np.random.default_rng(11)
    theta = GAUSS_PRIOR.sample(500, rng)
    x = theta @ a.T + NOISE * rng.normal(size=(500, 6))
    log_q = post.log_prob(theta, x)
    log_p = np.empty(500)
    for i in range(500):
        mean, cov = _analytic(a, x[i])
        r = theta[i] - mean
        log_p[i] = -0.5 * (r @ np.linalg.solve(cov, r) + np.linalg.slogdet(2 * np.pi * cov)[1])
    kl = np.mean(log_p - log_q)
    assert -0.05 < kl < 0.05
    assert trained.epochs == trained.validation_loss.size
    assert trained.best_validation_loss == pytest.approx(trained.validation_loss.min(), rel=1e-6)


def test_transform_round_trip_and_jacobian():
    table1 = prior.prior("table1")
    t = flows.ParameterTransform.from_prior(table1)
    theta = table1.sample(200, np.random.default_rng(0))
    u = t.forward(theta)
    assert np.allclose(t.inverse(u), theta, rtol=1e-12, atol=1e-14)
    # numerical d theta / d u, one parameter at a time
    h = 1e-6
    for i in range(theta.shape[1]):
        du = np.zeros(theta.shape[1])
        du[i] = h
        deriv = (t.inverse(u[:5] + du) - t.inverse(u[:5] - du))[:, i] / (2 * h)
        single = np.zeros_like(u[:5])
        single[:, i] = u[:5, i]
        mask = np.zeros(theta.shape[1], bool)
        mask[i] = True
        ti = flows.ParameterTransform(t.low[mask], t.high[mask])
        assert np.allclose(np.log(np.abs(deriv)), ti.log_jacobian(u[:5, i : i + 1]), atol=1e-6)
    with pytest.raises(DataError, match="outside the prior"):
        t.forward(np.where(np.arange(13) == 0, -0.1, theta[0]))


def test_unconstrained_prior_is_a_normalised_density():
    # one bounded parameter of each kind; the pushed-forward density integrates to 1
    for marginal in (Normal(0.0, 0.02, 0.0), Normal(28.0, 4.0, 12.0, 44.0), Normal(-0.2, 0.2)):
        p = flows.UnconstrainedPrior(Prior((marginal,)))
        dens = lambda u, p=p: float(torch.exp(p.log_prob(torch.tensor([[u]]))).item())  # noqa: E731
        total, _ = integrate.quad(dens, -60, 60, points=[0.0, -4.0], limit=400)
        assert total == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    p = flows.UnconstrainedPrior(prior.prior("table1"))
    s1 = p.sample((4, 5))
    torch.manual_seed(0)
    assert s1.shape == (4, 5, 13) and torch.equal(s1, p.sample((4, 5)))


@pytest.mark.slow
def test_saved_weights_rebuild_the_same_estimator(gaussian_problem):
    _, trained = gaussian_problem
    state = flows.state_arrays(trained.estimator)
    again = flows.rebuild(state, trained.hyperparameters, 3, 6)
    rng = np.random.default_rng(2)
    theta, x = GAUSS_PRIOR.sample(20, rng), rng.normal(size=(20, 6))
    one = flows.Posterior(trained.estimator, GAUSS_PRIOR).log_prob(theta, x)
    two = flows.Posterior(again, GAUSS_PRIOR).log_prob(theta, x)
    assert np.array_equal(one, two)
    other = trained.hyperparameters._replace(hidden_features=33)
    with pytest.raises(DataError, match="do not fit the architecture"):
        flows.rebuild(state, other, 3, 6)


def test_samples_of_a_bounded_prior_stay_inside_it():
    table1 = prior.prior("table1")
    rng = np.random.default_rng(0)
    theta = table1.sample(600, rng)
    x = np.column_stack([theta, theta[:, :3] ** 2]) + 0.1 * rng.normal(size=(600, 16))
    hp = flows.hyperparameters({"max_epochs": 2, "num_transforms": 2, "hidden_features": 16})
    trained = flows.train(theta, x, table1, hp, seed=0)
    post = flows.Posterior(trained.estimator, table1)
    s = post.sample(x[:3], 500, seed=0)
    assert np.all(s >= table1.low) and np.all(s <= table1.high)
    assert np.all(np.isfinite(post.log_prob(s[0], x[0])))
    assert np.all(post.log_prob(np.where(np.arange(13) == 0, -1.0, s[0, 0])[None], x[0]) == -np.inf)
    on_bound = np.where(np.arange(13) == 5, 0.0, s[0, 0])[None]  # B_d = 0, its lower bound
    assert np.all(post.log_prob(on_bound, x[0]) == -np.inf)
    with pytest.raises(DataError, match="length 15"):
        post.sample(x[:1, :15], 10, seed=0)


def test_bad_training_input_is_refused():
    table1 = prior.prior("table1")
    theta = table1.sample(100, np.random.default_rng(0))
    x = np.ones((100, 4))
    hp = flows.hyperparameters()
    with pytest.raises(DataError, match="NaN"):
        flows.train(theta, np.where(np.eye(100, 4) > 0, np.nan, x), table1, hp, seed=0)
    with pytest.raises(DataError, match="expected"):
        flows.train(theta[:, :12], x, table1, hp, seed=0)
    with pytest.raises(DataError, match="too few"):
        flows.train(theta[:20], x[:20], table1, hp, seed=0)
    with pytest.raises(ConfigError, match="unknown NPE hyperparameters"):
        flows.hyperparameters({"hidden": 3})
    with pytest.raises(ConfigError, match="validation_fraction"):
        flows.hyperparameters({"validation_fraction": 1.0})


def test_training_runs_on_cuda_only_when_the_job_has_a_visible_gpu(monkeypatch):
    assert flows.training_device(0) == "cpu"
    assert flows.training_device(1) == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert flows.training_device(1) == "cuda" and flows.training_device(0) == "cpu"


def test_training_progress_lines_have_rate_and_eta():
    from bmodesep import log

    hp = flows.Hyperparameters(max_epochs=100, stop_after_epochs=5)
    stream = io.StringIO()
    log.configure(stream=stream)
    report = flows.TrainingReport(hp, "training joint")
    for loss in (3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9):
        report.epoch(loss - 0.1, loss)
    log.unconfigure()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[bmodesep] training joint: epoch 1/100, loss 2.9000")
    # the last epoch ends the run (5 epochs without improvement): always reported
    assert (
        "epoch 7/100" in lines[-1] and "(best 2.0000, 5/5 epochs without improvement)" in lines[-1]
    )
    assert "ETA 0:00:00 if no further improvement" in lines[-1]


# --- estimator variants (issue 27): prior-bounded theta, asinh columns, an embedding net --


def test_asinh_columns_are_the_documented_transform():
    rng = np.random.default_rng(0)
    x = np.column_stack(
        [
            rng.standard_cauchy(500),  # heavy tails: the MAD, not the sd, sets the scale
            np.r_[np.zeros(300), rng.normal(size=200)],  # MAD 0: the sd instead
            np.full(500, 3.0),  # constant: scale 1, std 1
        ]
    )
    t = flows.AsinhColumns(torch.as_tensor(x))
    centre = np.median(x, axis=0)
    scale = 1.4826 * np.median(np.abs(x - centre), axis=0)
    scale[1] = x[:, 1].std(ddof=1)
    scale[2] = 1.0
    z = np.arcsinh((x - centre) / scale)
    std = z.std(axis=0, ddof=1)
    std[2] = 1.0
    expected = (z - z.mean(axis=0)) / std
    with torch.no_grad():
        got = t(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    assert np.allclose(got, expected, atol=2e-5)
    assert np.allclose(got[:, :2].mean(0), 0, atol=1e-5) and np.allclose(got[:, :2].std(0), 1, 1e-2)


# a half-normal and a normal parameter, each seen twice with noise: the posterior of the
# first is a normal truncated to [0, inf), of the second a normal (closed forms below)
BOUNDED_PRIOR = Prior((Normal(0.0, 1.0, 0.0), Normal(0.0, 1.0)))
BOUNDED_NOISE = 0.4


def _bounded_data(theta, rng):
    n = theta.shape[0]
    return np.repeat(theta, 2, axis=1) + BOUNDED_NOISE * rng.normal(size=(n, 4))


def _bounded_posterior(x):
    """Mean and sd of theta_1 (truncated normal) and theta_2 (normal) given x."""
    from scipy import stats

    precision = 1 + 2 / BOUNDED_NOISE**2
    sd = 1 / np.sqrt(precision)
    means = np.array([x[0] + x[1], x[2] + x[3]]) / BOUNDED_NOISE**2 / precision
    t = stats.truncnorm(-means[0] / sd, np.inf, loc=means[0], scale=sd)
    return np.array([t.mean(), means[1]]), np.array([t.std(), sd])


@pytest.fixture(scope="module")
def bounded_problem():
    rng = np.random.default_rng(4)
    theta = BOUNDED_PRIOR.sample(20_000, rng)
    hp = flows.hyperparameters(
        {
            "learning_rate": 1e-3,
            "num_transforms": 3,
            "hidden_features": 32,
            "stop_after_epochs": 30,
            "max_epochs": 300,
            "parameters": "prior_bounded",
        }
    )
    return flows.train(theta, _bounded_data(theta, rng), BOUNDED_PRIOR, hp, seed=0)


@pytest.mark.slow
def test_prior_bounded_estimator_rejects_to_the_prior_and_matches_the_truncated_posterior(
    bounded_problem,
):
    post = flows.Posterior(bounded_problem.estimator, BOUNDED_PRIOR, "prior_bounded")
    rng = np.random.default_rng(9)
    # true theta_1 near its bound: a good part of a flow's mass falls below 0 there
    theta = np.column_stack([np.abs(rng.normal(0, 0.1, 20)), rng.normal(size=20)])
    x = _bounded_data(theta, rng)
    samples = post.sample(x, 4000, seed=1)
    assert samples.shape == (20, 4000, 2) and np.all(samples[..., 0] >= 0)
    err = []
    for xi, s in zip(x, samples, strict=True):
        mean, sd = _bounded_posterior(xi)
        err.append(np.abs(s.mean(0) - mean) / sd)
        assert s[:, 0].std() == pytest.approx(sd[0], rel=0.2)
    # a flow in theta that ignored the bound would shift theta_1's mean by ~0.5 sd or more
    assert np.median(err) < 0.1 and np.max(err) < 0.35
    assert np.all(post.log_prob(np.array([[-0.01, 0.0]]), x[0]) == -np.inf)
    assert np.all(np.isfinite(post.log_prob(samples[0, :10], x[0])))


class _UnitNormalFlow(torch.nn.Module):
    """A stand-in estimator: q(theta | x) = N(loc, 1) per parameter, whatever x."""

    condition_shape = torch.Size([4])

    def __init__(self, loc):
        super().__init__()
        self.loc = torch.tensor(loc)

    def sample(self, shape, condition):
        return torch.randn(shape[0], condition.shape[0], 2) + self.loc


def test_prior_bounded_rejection_gives_the_truncated_flow_and_gives_up_without_mass():
    from scipy import stats

    x = np.zeros((3, 4))
    # 2.3% of N(-2, 1) lies above theta_1's bound at 0: rejection gives N(-2, 1) truncated
    post = flows.Posterior(_UnitNormalFlow([-2.0, 0.0]), BOUNDED_PRIOR, "prior_bounded")
    s = post.sample(x, 4000, seed=0)
    assert s.shape == (3, 4000, 2) and np.all(s[..., 0] >= 0)
    truncated = stats.truncnorm(2.0, np.inf, loc=-2.0)
    assert s[..., 0].mean() == pytest.approx(truncated.mean(), abs=0.01)
    assert s[..., 0].std() == pytest.approx(truncated.std(), rel=0.03)
    assert s[..., 1].std() == pytest.approx(1.0, rel=0.03)

    # draws in small batches: the same distribution
    class Batched(flows.Posterior):
        draw_batch = 700

    s = Batched(_UnitNormalFlow([-2.0, 0.0]), BOUNDED_PRIOR, "prior_bounded").sample(x, 4000, 0)
    assert s.shape == (3, 4000, 2) and np.all(s[..., 0] >= 0)
    assert s[..., 0].mean() == pytest.approx(truncated.mean(), abs=0.01)
    # 3e-7 of N(-5, 1) lies inside: below min_acceptance, one clear error
    post = flows.Posterior(_UnitNormalFlow([-5.0, 0.0]), BOUNDED_PRIOR, "prior_bounded")
    with pytest.raises(DataError, match="inside the prior's support"):
        post.sample(x, 500, seed=0)


@pytest.mark.slow
def test_asinh_and_embedding_estimator_recovers_the_gaussian_posterior():
    # the linear-Gaussian problem has 3 sufficient statistics: 3 features suffice
    a, rng, trained = _train_gaussian(data_transform="asinh", embedding_features=3)
    hp = trained.hyperparameters
    post = flows.Posterior(trained.estimator, GAUSS_PRIOR)
    theta_true = GAUSS_PRIOR.sample(30, rng)
    x_obs = theta_true @ a.T + NOISE * rng.normal(size=(30, 6))
    samples = post.sample(x_obs, 3000, seed=3)
    mean_err, std_err = [], []
    for xi, s in zip(x_obs, samples, strict=True):
        mean, cov = _analytic(a, xi)
        sigma = np.sqrt(np.diag(cov))
        mean_err.append(np.abs(s.mean(0) - mean) / sigma)
        std_err.append(np.abs(s.std(0) / sigma - 1))
    assert np.median(mean_err) < 0.15 and np.max(mean_err) < 0.8
    assert np.median(std_err) < 0.1 and np.max(std_err) < 0.5
    # transform buffers and embedding weights are saved and rebuilt
    state = flows.state_arrays(trained.estimator)
    assert any(k.endswith("centre") for k in state) and len(state) > 10
    again = flows.rebuild(state, hp, 3, 6)
    one = post.log_prob(theta_true, x_obs)
    assert np.array_equal(one, flows.Posterior(again, GAUSS_PRIOR).log_prob(theta_true, x_obs))


def test_every_estimator_setting_trains_samples_and_rebuilds():
    table1 = prior.prior("table1")
    rng = np.random.default_rng(0)
    theta = table1.sample(600, rng)
    x = np.column_stack([theta, np.exp(theta[:, :3])]) + 0.1 * rng.normal(size=(600, 16))
    for parameters in flows.PARAMETER_SPACES:
        for transform in flows.DATA_TRANSFORMS:
            for features in (0, 4):
                hp = flows.hyperparameters(
                    {
                        "max_epochs": 2,
                        "num_transforms": 2,
                        "hidden_features": 16,
                        "parameters": parameters,
                        "data_transform": transform,
                        "embedding_features": features,
                    }
                )
                trained = flows.train(theta, x, table1, hp, seed=0)
                again = flows.rebuild(flows.state_arrays(trained.estimator), hp, 13, 16)
                one = flows.Posterior(trained.estimator, table1, parameters)
                two = flows.Posterior(again, table1, parameters)
                s = one.sample(x[:2], 50, seed=0)
                assert np.all(s >= table1.low) and np.all(s <= table1.high)
                assert np.array_equal(s, two.sample(x[:2], 50, seed=0))


def test_estimator_choices_are_checked():
    with pytest.raises(ConfigError, match="parameters 'raw' is not one of"):
        flows.hyperparameters({"parameters": "raw"})
    with pytest.raises(ConfigError, match="data_transform 'log' is not one of"):
        flows.hyperparameters({"data_transform": "log"})
    with pytest.raises(ConfigError, match="embedding_features"):
        flows.hyperparameters({"embedding_features": -1})
    assert flows.hyperparameters({"embedding_features": 0}).embedding_features == 0
    with pytest.raises(ConfigError, match="at least 2"):
        flows.hyperparameters({"max_epochs": 1})


def test_parameter_spaces_transform_the_documented_parameters():
    table1 = prior.prior("table1")
    theta = table1.sample(50, np.random.default_rng(0))
    full = flows.ParameterTransform.for_space(table1, "unconstrained").forward(theta)
    raw = flows.ParameterTransform.for_space(table1, "prior_bounded").forward(theta)
    mixed = flows.ParameterTransform.for_space(table1, "mixed").forward(theta)
    assert np.array_equal(raw, theta)
    assert np.array_equal(mixed[:, :2], theta[:, :2])  # r and A_lens as themselves
    assert np.array_equal(mixed[:, 2:], full[:, 2:]) and not np.allclose(full[:, :2], theta[:, :2])
