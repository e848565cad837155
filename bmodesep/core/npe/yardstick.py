"""The estimator's yardstick: how much of a parameter a plain regression extracts from x.

A neural posterior estimator that learns a parameter must at least predict it as well as
a regression trained on the same simulations.  Each regression here is trained on the
first ``n`` training pairs and scored on held-out pairs (the coverage set) by the Pearson
correlation of its prediction with the true value and the rms of its error:

- ``ridge_linear``: ridge regression on the z-scored data vector;
- ``ridge_asinh``: the same on the columns of ``flows.AsinhColumns`` (asinh at each
  column's robust scale), the transform ``npe.estimator.data_transform: asinh`` uses;
- ``mlp_asinh``: a small network (two tanh layers of 64) on the asinh columns, trained
  with Adam on the squared error, early stopping on a held-out tenth.

The ridge penalty is chosen by 5-fold cross-validation on the training pairs from a
logarithmic grid; the network's seed is fixed, so the table is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from bmodesep.core.npe.flows import AsinhColumns
from bmodesep.errors import DataError

METHODS = ("ridge_linear", "ridge_asinh", "mlp_asinh")
RIDGE_PENALTIES = np.logspace(-4, 4, 17)  # in units of the number of training pairs
MIN_TRAINING = 10  # pairs: five cross-validation folds and a validation tenth


class Score(NamedTuple):
    correlation: float
    rms_error: float


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (train - mean) / sd, (test - mean) / sd


def _asinh(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = AsinhColumns(torch.as_tensor(train))
    with torch.no_grad():
        return tuple(
            t(torch.as_tensor(a, dtype=torch.float32)).double().numpy() for a in (train, test)
        )


def _ridge_fit(z: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of ridge regression (penalty per training pair)."""
    ym = y.mean()
    zm = z.mean(axis=0)
    zc = z - zm
    a = zc.T @ zc + penalty * z.shape[0] * np.eye(z.shape[1])
    w = np.linalg.solve(a, zc.T @ (y - ym))
    return w, ym - zm @ w


def ridge(train: np.ndarray, y: np.ndarray, test: np.ndarray, folds: int = 5) -> np.ndarray:
    """Predictions for ``test`` of ridge regression with a cross-validated penalty."""
    order = np.arange(train.shape[0]) % folds
    errors = np.zeros(RIDGE_PENALTIES.size)
    for k in range(folds):
        fit, held = order != k, order == k
        for j, penalty in enumerate(RIDGE_PENALTIES):
            w, b = _ridge_fit(train[fit], y[fit], penalty)
            errors[j] += np.sum((train[held] @ w + b - y[held]) ** 2)
    w, b = _ridge_fit(train, y, RIDGE_PENALTIES[np.argmin(errors)])
    return test @ w + b


def mlp(
    train: np.ndarray,
    y: np.ndarray,
    test: np.ndarray,
    seed: int,
    hidden: int = 64,
    patience: int = 20,
    max_epochs: int = 500,
) -> np.ndarray:
    """Predictions for ``test`` of a two-layer tanh network fitted to the squared error."""
    torch.manual_seed(seed)
    ym, ys = y.mean(), y.std() or 1.0
    n_val = max(1, train.shape[0] // 10)
    perm = np.random.default_rng(seed).permutation(train.shape[0])
    val, fit = perm[:n_val], perm[n_val:]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    xf, yf = as_t(train[fit]), as_t((y[fit] - ym) / ys)
    xv, yv = as_t(train[val]), as_t((y[val] - ym) / ys)
    net = torch.nn.Sequential(
        torch.nn.Linear(train.shape[1], hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    best, best_state, since = np.inf, None, 0
    for _ in range(max_epochs):
        net.train()
        for idx in torch.randperm(xf.shape[0]).split(256):
            opt.zero_grad()
            loss = torch.mean((net(xf[idx])[:, 0] - yf[idx]) ** 2)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            v = float(torch.mean((net(xv)[:, 0] - yv) ** 2))
        if v < best:
            best, since = v, 0
            best_state = {k: t.clone() for k, t in net.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    net.load_state_dict(best_state)
    with torch.no_grad():
        return net(as_t(test))[:, 0].double().numpy() * ys + ym


def score(prediction: np.ndarray, truth: np.ndarray) -> Score:
    if np.std(prediction) == 0 or np.std(truth) == 0:
        corr = 0.0
    else:
        corr = float(np.corrcoef(prediction, truth)[0, 1])
    return Score(corr, float(np.sqrt(np.mean((prediction - truth) ** 2))))


def yardstick(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    sizes: Sequence[int],
    seed: int,
) -> np.ndarray:
    """Scores ``[method, size, (correlation, rms error)]`` of each method of ``METHODS``
    trained on the first ``size`` training pairs and scored on the test pairs."""
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(
            f"training data vectors of length {x_train.shape[1]}, test ones {x_test.shape[1]}"
        )
    bad = [n for n in sizes if n > x_train.shape[0] or n < MIN_TRAINING]
    if bad:
        raise DataError(
            f"subset sizes {bad} outside {MIN_TRAINING}..{x_train.shape[0]} training pairs"
        )
    for name, arr in (("x", x_train), ("y", y_train), ("test x", x_test), ("test y", y_test)):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"yardstick: {name} contains NaN or inf")
    if x_test.shape[0] < 3:
        raise DataError(f"{x_test.shape[0]} test pairs: a correlation needs at least 3")
    out = np.empty((len(METHODS), len(sizes), 2))
    for j, n in enumerate(sizes):
        xt, yt = x_train[:n], y_train[:n]
        lin_train, lin_test = _standardise(xt, x_test)
        asinh_train, asinh_test = _asinh(xt, x_test)
        predictions = {
            "ridge_linear": ridge(lin_train, yt, lin_test),
            "ridge_asinh": ridge(asinh_train, yt, asinh_test),
            "mlp_asinh": mlp(asinh_train, yt, asinh_test, seed),
        }
        for i, method in enumerate(METHODS):
            out[i, j] = score(predictions[method], y_test)
    return out


POSTERIOR_SCORES = (
    "correlation_r",
    "mean_sd_r",
    "correlation_A_lens",
    "tarp_joint_sigma",
    "tarp_r_sigma",
)


def posterior_scores(
    samples: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> dict[str, float]:
    """What an estimator learnt, from its posteriors ``[n, samples, d]`` of held-out pairs
    with true ``theta [n, d]`` (r and A_lens the first two parameters): the correlation of
    posterior mean and true value, the mean posterior sd of r, and the largest TARP
    deviations (in bootstrap sigma) of the joint posterior and of r alone."""
    from bmodesep.core.npe import coverage

    if samples.ndim != 3 or samples.shape[0] != theta.shape[0]:
        raise DataError(f"samples of shape {samples.shape} for {theta.shape[0]} truths")
    return {
        "correlation_r": score(samples[..., 0].mean(axis=1), theta[:, 0]).correlation,
        "mean_sd_r": float(samples[..., 0].std(axis=1).mean()),
        "correlation_A_lens": score(samples[..., 1].mean(axis=1), theta[:, 1]).correlation,
        "tarp_joint_sigma": float(coverage.tarp(samples, theta, rng).deviation_sigma),
        "tarp_r_sigma": float(coverage.tarp(samples[..., :1], theta[:, :1], rng).deviation_sigma),
    }
