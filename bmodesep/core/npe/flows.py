"""Neural posterior estimation with sbi: a masked autoregressive flow for q(theta | x).

Where the flow lives (``Hyperparameters.parameters``):

- ``unconstrained``: in ``u = T(theta)``: ``log(theta - a)`` for parameters bounded below
  by ``a``, ``logit`` for parameters on ``[a, b]``, identity for unbounded ones.
  Posterior samples mapped back with ``T^-1`` always lie inside the prior's support, and
  densities in theta carry the Jacobian of T.
- ``prior_bounded``: in theta itself, as duivenvoorden2025's code has it; samples outside
  the prior's support are rejected (sbi's own mechanism, done here batched over data
  vectors), and ``log_prob`` is the flow's density inside the support (not renormalised
  for the mass the flow puts outside it).
- ``mixed``: r and A_lens (the first ``MIXED_RAW`` parameters) as themselves, with
  rejection at their bounds, the foreground parameters through T.

On top of that, sbi z-scores the parameters per dimension.  The data vector
(``Hyperparameters.data_transform``) is z-scored per column (``linear``), or first mapped
column by column to ``asinh((x - median) / scale)`` with ``scale`` the column's robust
spread (1.4826 x its median absolute deviation over the training set) and then
z-scored (``asinh``): the foreground columns of a data vector are heavy-tailed under a
wide prior, and asinh keeps their bulk linear while compressing their tails
logarithmically.  ``embedding_features > 0`` adds a learned compression, a fully connected
network (two tanh layers of ``hidden_features``) from the transformed data vector to that
many features, trained jointly with the flow.  Transform buffers and embedding weights
are part of the saved state.

Architecture and optimiser follow duivenvoorden2025 Appendix C: ``num_transforms`` MADE
blocks of ``num_layers`` tanh layers of ``hidden_features`` nodes, Adam with a constant
learning rate, batch 256, gradient norm clipped at 6, a held-out validation fraction and
early stopping after ``stop_after_epochs`` epochs without improvement.

The estimator is saved as its weights plus the hyperparameters that rebuild it (sbi's
pickled posteriors do not load across sbi versions).  The network runs in float32, as
sbi's flows do; its inputs are z-scored, so the data vector's uK^2 scale costs nothing.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.distributions import Distribution, constraints

from bmodesep.core.npe.prior import Prior
from bmodesep.errors import ConfigError, DataError
from bmodesep.log import format_seconds


class Hyperparameters(NamedTuple):
    """The flow and optimiser settings (Appendix C ranges in ``SEARCH_SPACE``)."""

    learning_rate: float = 5e-4
    num_transforms: int = 5
    num_layers: int = 2
    hidden_features: int = 50
    batch_size: int = 256
    clip_max_norm: float = 6.0
    validation_fraction: float = 0.1
    stop_after_epochs: int = 30
    max_epochs: int = 1000
    parameters: str = "unconstrained"
    data_transform: str = "linear"
    embedding_features: int = 0


PARAMETER_SPACES = ("unconstrained", "prior_bounded", "mixed")
MIXED_RAW = 2  # "mixed": the first two parameters (r, A_lens of prior.PARAMETERS) as theta
DATA_TRANSFORMS = ("linear", "asinh")
_CHOICES = {"parameters": PARAMETER_SPACES, "data_transform": DATA_TRANSFORMS}


# Appendix C: (low, high, log-scale) of the searched hyperparameters
SEARCH_SPACE = {
    "learning_rate": (1e-6, 1e-2, True),
    "num_transforms": (3, 13, False),
    "num_layers": (1, 7, False),
    "hidden_features": (10, 100, False),
}


def hyperparameters(values: Mapping[str, Any] | None = None) -> Hyperparameters:
    """Hyperparameters from a mapping; unknown names and non-positive values are refused."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(Hyperparameters._fields))
    if unknown:
        raise ConfigError(
            f"unknown NPE hyperparameters {unknown} (known: {', '.join(Hyperparameters._fields)})"
        )
    hp = Hyperparameters(**values)
    if not 0 < hp.validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {hp.validation_fraction}")
    for name, allowed in _CHOICES.items():
        if getattr(hp, name) not in allowed:
            raise ConfigError(
                f"NPE {name} {getattr(hp, name)!r} is not one of {', '.join(allowed)}"
            )
    numeric = {k: v for k, v in hp._asdict().items() if k not in _CHOICES}
    bad = [
        k
        for k, v in numeric.items()
        if k not in ("validation_fraction", "embedding_features") and not v > 0
    ]
    if bad or hp.embedding_features < 0:
        raise ConfigError(f"NPE hyperparameters must be positive: {bad or ['embedding_features']}")
    if hp.max_epochs < 2:
        raise ConfigError(f"max_epochs must be at least 2 (sbi trains two), got {hp.max_epochs}")
    return hp


# --- parameter space --------------------------------------------------------------------


class ParameterTransform(NamedTuple):
    """``u = T(theta)`` per parameter, from the prior's bounds."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_prior(cls, prior: Prior) -> ParameterTransform:
        return cls(np.asarray(prior.low, float), np.asarray(prior.high, float))

    @classmethod
    def identity(cls, n_parameters: int) -> ParameterTransform:
        return cls(np.full(n_parameters, -np.inf), np.full(n_parameters, np.inf))

    @classmethod
    def for_space(cls, prior: Prior, parameters: str) -> ParameterTransform:
        """The transform of a parameter space (``Hyperparameters.parameters``)."""
        if parameters == "prior_bounded":
            return cls.identity(len(prior.marginals))
        t = cls.from_prior(prior)
        if parameters == "mixed":
            t.low[:MIXED_RAW], t.high[:MIXED_RAW] = -np.inf, np.inf
        return t

    def _kinds(self):
        lo, hi = np.isfinite(self.low), np.isfinite(self.high)
        return lo & hi, lo & ~hi, ~lo & hi

    def forward(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, float)
        both, below, above = self._kinds()
        outside = (theta < self.low) | (theta > self.high)
        if np.any(outside):
            raise DataError(f"{int(outside.sum())} parameter values outside the prior's bounds")
        u = theta.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (theta - self.low) / (self.high - self.low)
            u = np.where(both, np.log(s) - np.log1p(-s), u)
            u = np.where(below, np.log(theta - self.low), u)
            u = np.where(above, np.log(self.high - theta), u)
        return u

    def inverse(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, float)
        both, below, above = self._kinds()
        with np.errstate(over="ignore", invalid="ignore"):
            theta = np.where(both, self.low + (self.high - self.low) / (1 + np.exp(-u)), u)
            theta = np.where(below, self.low + np.exp(u), theta)
            theta = np.where(above, self.high - np.exp(u), theta)
        return theta

    def log_jacobian(self, u: np.ndarray) -> np.ndarray:
        """``log |d theta / d u|`` summed over parameters."""
        u = np.asarray(u, float)
        both, below, above = self._kinds()
        width = np.where(both, self.high - self.low, 1.0)
        # log of (b - a) s (1 - s) with s the logistic function, stable for large |u|
        log_logistic = np.log(width) - np.logaddexp(0, u) - np.logaddexp(0, -u)
        per = np.where(both, log_logistic, np.where(below | above, u, 0.0))
        return per.sum(axis=-1)


class UnconstrainedPrior(Distribution):
    """The prior pushed forward to ``u = T(theta)``: what sbi sees.

    ``sample`` draws theta from the numpy prior with a seed taken from torch's generator
    (so ``torch.manual_seed`` makes it reproducible); ``log_prob`` is the prior density of
    ``T^-1(u)`` times the Jacobian.
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's class attribute)
    support = constraints.independent(constraints.real, 1)
    has_rsample = False

    def __init__(self, prior: Prior, device: str = "cpu", parameters: str = "unconstrained"):
        self.prior = prior
        self.device = device
        self.transform = ParameterTransform.for_space(prior, parameters)
        super().__init__(
            batch_shape=torch.Size(),
            event_shape=torch.Size([len(prior.marginals)]),
            validate_args=False,
        )

    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        n = math.prod(shape)
        seed = int(torch.randint(0, 2**62, (1,)).item())
        theta = self.prior.sample(n, np.random.default_rng(seed))
        u = self.transform.forward(theta)
        return torch.as_tensor(u, dtype=torch.float32, device=self.device).reshape(*shape, -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        u = value.detach().cpu().numpy().astype(float)
        logp = self.prior.log_prob(self.transform.inverse(u).reshape(-1, u.shape[-1]))
        logp = logp.reshape(u.shape[:-1]) + self.transform.log_jacobian(u)
        return torch.as_tensor(logp, dtype=value.dtype, device=value.device)


# --- the estimator ----------------------------------------------------------------------


class AsinhColumns(torch.nn.Module):
    """``(asinh((x - centre) / scale) - mean) / std`` per column, fitted to training data.

    ``centre`` is the column's median and ``scale`` 1.4826 x its median absolute deviation
    (the sd for a normal column; the column's sd where the MAD is zero, 1 where both are);
    ``mean`` and ``std`` z-score the transformed column.  A per-column scale and shift,
    the identity when fitted, is learnt with the flow (sbi requires an embedding network to
    have parameters; the flow's first layer is affine in its input, so this adds no freedom).
    """

    def __init__(self, x: torch.Tensor):
        super().__init__()
        x = x.detach().double().cpu().numpy()
        centre = np.median(x, axis=0)
        scale = 1.4826 * np.median(np.abs(x - centre), axis=0)
        sd = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros_like(centre)
        scale = np.where(scale > 0, scale, np.where(sd > 0, sd, 1.0))
        z = np.arcsinh((x - centre) / scale)
        mean = z.mean(axis=0)
        std = z.std(axis=0, ddof=1) if x.shape[0] > 1 else np.ones_like(mean)
        std = np.where(std > 0, std, 1.0)
        for name, value in (("centre", centre), ("scale", scale), ("mean", mean), ("std", std)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))
        self.weight = torch.nn.Parameter(torch.ones(x.shape[1]))
        self.bias = torch.nn.Parameter(torch.zeros(x.shape[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (torch.asinh((x - self.centre) / self.scale) - self.mean) / self.std
        return z * self.weight + self.bias


def _builder(hp: Hyperparameters):
    """sbi's network builder for ``hp``: called with the training pairs (for z-scoring and
    the data transform) or, in ``rebuild``, with placeholders whose buffers are then
    overwritten by the saved state."""
    from sbi.neural_nets import posterior_nn
    from sbi.neural_nets.embedding_nets import FCEmbedding

    def build(batch_theta: torch.Tensor, batch_x: torch.Tensor):
        layers: list[torch.nn.Module] = []
        if hp.data_transform == "asinh":
            layers.append(AsinhColumns(batch_x))
        if hp.embedding_features > 0:
            layers.append(
                FCEmbedding(
                    batch_x.shape[1],
                    hp.embedding_features,
                    num_layers=2,
                    num_hiddens=hp.hidden_features,
                    activation=torch.nn.Tanh,
                )
            )
        embedding = torch.nn.Sequential(*layers) if layers else torch.nn.Identity()
        with warnings.catch_warnings():
            # `activation` goes on to zuko's MADE networks, which sbi reports as unknown
            warnings.filterwarnings("ignore", "Unknown kwargs passed", UserWarning)
            return posterior_nn(
                "zuko_maf",
                z_score_theta="independent",
                z_score_x="none" if hp.data_transform == "asinh" else "independent",
                hidden_features=[hp.hidden_features] * hp.num_layers,
                num_transforms=hp.num_transforms,
                activation=torch.nn.Tanh,
                embedding_net=embedding,
            )(batch_theta, batch_x)

    return build


class Trained(NamedTuple):
    estimator: torch.nn.Module
    hyperparameters: Hyperparameters
    training_loss: np.ndarray  # per epoch (mean negative log probability)
    validation_loss: np.ndarray
    epochs: int
    best_validation_loss: float


def _check_pairs(theta: np.ndarray, x: np.ndarray, n_parameters: int) -> None:
    if theta.ndim != 2 or theta.shape[1] != n_parameters:
        raise DataError(f"theta has shape {theta.shape}, expected (n, {n_parameters})")
    if x.ndim != 2 or x.shape[0] != theta.shape[0]:
        raise DataError(f"x has shape {x.shape} for {theta.shape[0]} parameter vectors")
    for name, arr in (("theta", theta), ("x", x)):
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{name} contains NaN or inf")


def training_device(gpus: int) -> str:
    """``cuda`` when the job was given GPUs and torch sees one, else ``cpu``."""
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


class _NoTracker:
    """sbi's experiment-tracker protocol, doing nothing (no TensorBoard folder per job)."""

    log_dir = None

    def log_metric(self, name, value, step=None) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_params(self, params) -> None:
        pass

    def add_figure(self, name, figure, step=None) -> None:
        pass

    def flush(self) -> None:
        pass


class TrainingReport:
    """Per-epoch progress of a training run, printed at most every ``every_s`` seconds."""

    every_s = 10.0

    def __init__(self, hp: Hyperparameters, label: str, logger: logging.Logger | None = None):
        self.hp, self.label = hp, label
        self.logger = logger or logging.getLogger(__name__)
        self.epochs = 0
        self.best = math.inf
        self.since_best = 0
        self.t_start = self.t_last = time.perf_counter()

    def epoch(self, train_loss: float, val_loss: float) -> None:
        self.epochs += 1
        if val_loss < self.best:
            self.best, self.since_best = val_loss, 0
        else:
            self.since_best += 1
        now = time.perf_counter()
        final = self.epochs >= self.hp.max_epochs or self.since_best >= self.hp.stop_after_epochs
        if self.epochs > 1 and not final and now - self.t_last < self.every_s:
            return
        self.t_last = now
        per_epoch = (now - self.t_start) / self.epochs
        # early stopping ends the run within stop_after_epochs unless the loss improves
        left_max = self.hp.max_epochs - self.epochs
        left_patience = min(left_max, self.hp.stop_after_epochs - self.since_best)
        self.logger.info(
            f"{self.label}: epoch {self.epochs}/{self.hp.max_epochs}, "
            f"loss {train_loss:.4f}, validation {val_loss:.4f} (best {self.best:.4f}, "
            f"{self.since_best}/{self.hp.stop_after_epochs} epochs without improvement), "
            f"{per_epoch:.2f} s/epoch, elapsed {format_seconds(now - self.t_start)}, "
            f"ETA {format_seconds(left_patience * per_epoch)} if no further improvement, "
            f"at most {format_seconds(left_max * per_epoch)}"
        )


def train(
    theta: np.ndarray,
    x: np.ndarray,
    prior: Prior,
    hp: Hyperparameters,
    seed: int,
    label: str = "training",
    device: str = "cpu",
) -> Trained:
    """Fit q(theta | x) to simulated pairs (theta drawn from ``prior``).

    Progress lines (epoch, losses, epochs without improvement, s/epoch, ETA to the epoch
    cap) go to stdout, at most one per ``TrainingReport.every_s`` seconds.  ``device``
    ("cpu" or "cuda") is where the network and the training data live; the returned
    estimator is on the CPU either way.
    """
    from sbi.inference import NPE

    theta, x = np.asarray(theta, float), np.asarray(x, float)
    _check_pairs(theta, x, len(prior.marginals))
    n_validation = int(hp.validation_fraction * theta.shape[0])
    if n_validation < 1 or theta.shape[0] - n_validation < hp.batch_size // 8:
        raise DataError(
            f"{theta.shape[0]} simulations are too few to train with a validation "
            f"fraction of {hp.validation_fraction} and batches of {hp.batch_size}"
        )
    torch.manual_seed(seed)
    outside = (theta < prior.low) | (theta > prior.high)
    if np.any(outside):
        raise DataError(f"{int(outside.sum())} parameter values outside the prior's bounds")
    u = ParameterTransform.for_space(prior, hp.parameters).forward(theta)

    class ReportingNPE(NPE):
        """sbi's NPE with a progress line per epoch (rate, ETA) instead of a progress bar."""

        def _summarize_epoch(self, train_loss, val_loss, *args, **kwargs):
            super()._summarize_epoch(train_loss, val_loss, *args, **kwargs)
            report.epoch(train_loss, val_loss)

    report = TrainingReport(hp, label)
    inference = ReportingNPE(
        prior=UnconstrainedPrior(prior, device, hp.parameters),
        density_estimator=_builder(hp),
        device=device,
        tracker=_NoTracker(),
        show_progress_bars=False,
    )
    inference.append_simulations(
        torch.as_tensor(u, dtype=torch.float32), torch.as_tensor(x, dtype=torch.float32)
    )
    estimator = inference.train(
        training_batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        validation_fraction=hp.validation_fraction,
        stop_after_epochs=hp.stop_after_epochs,
        max_num_epochs=hp.max_epochs - 1,  # sbi counts from 0 and trains max + 1 epochs
        clip_max_norm=hp.clip_max_norm,
    )
    estimator = estimator.to("cpu").eval()  # saved and sampled on the CPU
    summary = inference._summary
    return Trained(
        estimator,
        hp,
        np.asarray(summary["training_loss"], float),
        np.asarray(summary["validation_loss"], float),
        int(summary["epochs_trained"][-1]),
        float(summary["best_validation_loss"][-1]),
    )


def state_arrays(estimator: torch.nn.Module) -> dict[str, np.ndarray]:
    """The estimator's weights and buffers as numpy arrays (for the HDF5 product)."""
    return {k: v.detach().cpu().numpy() for k, v in estimator.state_dict().items()}


def rebuild(
    state: Mapping[str, np.ndarray], hp: Hyperparameters, n_parameters: int, n_data: int
) -> torch.nn.Module:
    """The estimator of ``state_arrays`` (strict: every weight must match the architecture)."""
    estimator = _builder(hp)(torch.zeros(2, n_parameters), torch.zeros(2, n_data))
    try:
        estimator.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    except RuntimeError as err:
        raise DataError(f"saved weights do not fit the architecture {hp}: {err}") from err
    estimator.eval()
    return estimator


class Posterior(NamedTuple):
    """A trained estimator with its prior: samples and densities in theta."""

    estimator: torch.nn.Module
    prior: Prior
    parameters: str = "unconstrained"  # Hyperparameters.parameters of the estimator

    # prior_bounded: give up when fewer than this fraction of a posterior's samples fall
    # inside the prior (the flow has learnt nothing of the support)
    min_acceptance = 1e-3
    draw_batch = 200_000  # flow draws per call (conditions are repeated per draw)

    @property
    def transform(self) -> ParameterTransform:
        return ParameterTransform.for_space(self.prior, self.parameters)

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, float))
        n_data = int(self.estimator.condition_shape[0])
        if x.ndim != 2 or x.shape[1] != n_data:
            raise DataError(f"data vectors of length {x.shape[-1]}; the estimator takes {n_data}")
        if not np.all(np.isfinite(x)):
            raise DataError("data vector contains NaN or inf")
        return x

    def sample(self, x: np.ndarray, n: int, seed: int) -> np.ndarray:
        """``[len(x), n, n_parameters]`` posterior samples for each data vector."""
        x = self._check_x(x)
        torch.manual_seed(seed)
        theta = self.transform.inverse(self._draw(x, n))
        if self.parameters == "unconstrained":
            return theta  # inside the prior's support by construction
        return self._inside_prior(x, n, theta)

    def _draw(self, x: np.ndarray, n: int) -> np.ndarray:
        """``[len(x), n, d]`` flow draws, at most ``draw_batch`` per call of the flow (its
        memory grows with draws x data-vector length)."""
        parts = []
        rows = max(1, self.draw_batch // n)
        for start in range(0, x.shape[0], rows):
            cond = torch.as_tensor(x[start : start + rows], dtype=torch.float32)
            pieces = []
            for done in range(0, n, self.draw_batch):
                m = min(self.draw_batch, n - done)
                with torch.no_grad():
                    u = self.estimator.sample(torch.Size((m,)), condition=cond)  # [m, rows, d]
                pieces.append(u.permute(1, 0, 2).double().numpy())
            parts.append(np.concatenate(pieces, axis=1))
        return np.concatenate(parts, axis=0)

    def _inside_prior(self, x: np.ndarray, n: int, theta: np.ndarray) -> np.ndarray:
        """Rejection to the prior's support: redraw for the data vectors still short of n,
        each as many as its acceptance so far suggests (rows grouped by powers of two)."""
        low, high = self.prior.low, self.prior.high
        out = np.empty((x.shape[0], n, theta.shape[-1]))
        have = np.zeros(x.shape[0], int)
        drawn = np.zeros(x.shape[0], int)
        groups = [(np.arange(x.shape[0]), theta)]
        while groups:
            for rows, draws in groups:
                drawn[rows] += draws.shape[1]
                for j, i in enumerate(rows):
                    keep = draws[j][np.all((draws[j] >= low) & (draws[j] <= high), axis=-1)]
                    take = min(n - have[i], keep.shape[0])
                    out[i, have[i] : have[i] + take] = keep[:take]
                    have[i] += take
            short = np.flatnonzero(have < n)
            rate = have[short] / drawn[short]
            bad = (rate < self.min_acceptance) & (drawn[short] >= 10 * n)
            if np.any(bad):
                worst = short[bad][0]
                raise DataError(
                    f"only {have[worst]} of {drawn[worst]} posterior samples of data vector "
                    f"{worst} fall inside the prior's support: the estimator has not "
                    "learnt the prior (train longer or on more simulations)"
                )
            need = np.ceil((n - have[short]) / np.maximum(rate, 0.01) * 1.2)
            size = np.clip(2 ** np.ceil(np.log2(np.maximum(need, 16))), 16, 32 * n).astype(int)
            groups = [(short[size == m], int(m)) for m in np.unique(size)]
            groups = [(rows, self.transform.inverse(self._draw(x[rows], m))) for rows, m in groups]
        return out

    def log_prob(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log q(theta | x)`` for theta ``[m, d]`` and one data vector or one per theta."""
        x = self._check_x(x)
        theta = np.atleast_2d(np.asarray(theta, float))
        inside = np.all((theta >= self.prior.low) & (theta <= self.prior.high), axis=-1)
        u = self.transform.forward(np.clip(theta, self.prior.low, self.prior.high))
        if x.shape[0] == 1:
            x = np.repeat(x, theta.shape[0], axis=0)
        with torch.no_grad():
            logq = self.estimator.log_prob(
                torch.as_tensor(u, dtype=torch.float32)[None],
                condition=torch.as_tensor(x, dtype=torch.float32),
            )[0]
        logq = logq.double().numpy() - self.transform.log_jacobian(u)
        # a value on a finite bound maps to u = -+inf: zero density there, not NaN
        inside &= np.all(np.isfinite(u), axis=-1)
        return np.where(inside, logq, -np.inf)
