"""The multi-frequency BB power-spectrum likelihood of duivenvoorden2025 App. E.

Data: the binned cross-split spectra of the frequency maps, symmetrised over the band
order (the data vector of :mod:`bmodesep.core.nilc.datavector` with bands in place of
components: pairs ``a <= b`` pair-major, then bins).  Model (the forward model of
sec. II.1 with constant spectral indices, B_d = B_s = 0):

    C_l^{ab} = T_a T_b w2 [ r C_l^T + A_lens C_l^lens + f_d^a f_d^b C_l^d + f_s^a f_s^b C_l^s
                           + rho_ds sqrt(C_l^d C_l^s) (f_d^a f_s^b + f_s^a f_d^b) ]

with T the beam x filter transfer, f the dust (T_d = 19.6 K) and synchrotron SEDs in
K_CMB relative to 353 and 23 GHz, ``l(l+1) C_l^{d,s} / 2 pi = A (l/80)^alpha`` (eqs. 8,
12), and ``w2 = mean(m^2)`` the pseudo-spectrum scaling of the footprint (the spectra of
masked maps are used without mode-coupling correction, as for the SBI data vector).

Likelihood: Gaussian (eq. E1) with the Knox covariance of the symmetrised cross-split
spectra (eqs. E2, E3): per multipole

    Cov(X^{ab}, X^{cd}) = [(S + N)^{ac} (S + N)^{bd} + S^{ad} S^{bc}] / ((2l + 1) f_modes)

for ``X^{ab} = <d1^a d2^b*>``, averaged over the four band orders, summed over the bin's
multipoles and divided by their number squared; S the signal and N the per-split noise
(both x w2), ``f_modes = w2^2 / w4`` the footprint's effective mode fraction.  As in the
paper the covariance is held fixed: evaluated at a fiducial parameter vector, here the
best fit of a first pass (the paper uses the true values, which a misspecified sky does
not have).  The posterior is sampled with emcee's affine-invariant ensemble.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bmodesep.core import seds
from bmodesep.core.nilc import datavector
from bmodesep.core.npe import prior as npe_prior
from bmodesep.core.simulate.sky import ELL_PIVOT
from bmodesep.errors import ConfigError, DataError

SAMPLED = ("r", "A_lens", "A_d", "alpha_d", "beta_d", "A_s", "alpha_s", "beta_s", "rho_ds")
DUST_TEMPERATURE_K = 19.6


class Model(NamedTuple):
    freqs_ghz: np.ndarray  # [f]
    transfer: np.ndarray  # beam x filter [f, lmax+1]
    noise_cl: np.ndarray  # per split [f, lmax+1]
    tensor_cl: np.ndarray  # [lmax+1], r = 1
    lensing_cl: np.ndarray  # [lmax+1]
    edges: np.ndarray  # bin edges
    w2: float = 1.0
    f_modes: float = 1.0
    dust_freq_ref_ghz: float = 353.0
    sync_freq_ref_ghz: float = 23.0

    @property
    def ell(self) -> np.ndarray:
        return np.arange(self.edges[0], self.edges[-1])

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return datavector.component_pairs(len(self.freqs_ghz))


def model_from_setup(setup) -> Model:
    """The likelihood's model of the SBI simulator's instrument, bins and footprint."""
    mask = setup.mask
    w2 = 1.0 if mask is None else float(np.mean(mask**2))
    f_modes = 1.0 if mask is None else w2**2 / float(np.mean(mask**4))
    return Model(
        np.asarray(setup.instrument.frequencies_ghz, float),
        setup.transfer,
        setup.noise_cl,
        setup.tensor_cl,
        setup.lensing_cl,
        setup.edges,
        w2,
        f_modes,
        setup.dust_freq_ref_ghz,
        setup.sync_freq_ref_ghz,
    )


def signal_spectra(model: Model, theta: np.ndarray, pairs=None) -> np.ndarray:
    """``S[..., a, b, l]`` over the model's multipoles (transfer and w2 applied) for
    ``theta[..., 9]`` in the order of SAMPLED; with ``pairs`` (index arrays ``(a, b)``)
    only those, ``S[..., pair, l]``."""
    theta = np.asarray(theta, float)
    n_f = len(model.freqs_ghz)
    if pairs is None:
        a, b = (g.ravel() for g in np.meshgrid(np.arange(n_f), np.arange(n_f), indexing="ij"))
    else:
        a, b = (np.asarray(g) for g in pairs)
    p = {name: theta[..., i, None] for i, name in enumerate(SAMPLED)}  # [..., 1]
    ell = model.ell
    logl = np.log(ell / ELL_PIVOT)
    shape = 2 * np.pi / (ell * (ell + 1.0))
    cmb = p["r"] * model.tensor_cl[ell] + p["A_lens"] * model.lensing_cl[ell]  # [..., L]
    cd = p["A_d"] * np.exp(p["alpha_d"] * logl) * shape
    cs = p["A_s"] * np.exp(p["alpha_s"] * logl) * shape
    nu = model.freqs_ghz
    fd = seds.dust_sed(nu, p["beta_d"], DUST_TEMPERATURE_K, model.dust_freq_ref_ghz)  # [..., f]
    fs = seds.synchrotron_sed(nu, p["beta_s"], model.sync_freq_ref_ghz)
    dd, ss = (fd[..., a] * fd[..., b])[..., None], (fs[..., a] * fs[..., b])[..., None]
    ds = (fd[..., a] * fs[..., b] + fs[..., a] * fd[..., b])[..., None]
    cmb, cd, cs = cmb[..., None, :], cd[..., None, :], cs[..., None, :]
    rho = p["rho_ds"][..., None]
    sig = cmb + dd * cd + ss * cs + rho * ds * np.sqrt(cd * cs)  # [..., pair, L]
    t = model.transfer[:, ell]
    sig = model.w2 * sig * t[a] * t[b]
    return sig if pairs is not None else sig.reshape(*sig.shape[:-2], n_f, n_f, ell.size)


def binned_model(model: Model, theta: np.ndarray) -> np.ndarray:
    """The expected data vector ``[..., n_pairs * n_bins]`` (pair-major, as the data)."""
    per_pair = signal_spectra(model, theta, tuple(np.array(model.pairs).T))  # [..., P, L]
    lo = model.edges[:-1] - model.edges[0]
    binned = np.add.reduceat(per_pair, lo, axis=-1) / np.diff(model.edges)
    return binned.reshape(*binned.shape[:-2], -1)


def covariance(model: Model, theta: np.ndarray) -> np.ndarray:
    """The Gaussian covariance ``[n, n]`` of the data vector at ``theta`` (block-diagonal
    in the bins, pair-major like the data)."""
    s = signal_spectra(model, theta)  # [f, f, L]
    ell = model.ell
    total = s + model.w2 * np.eye(len(model.freqs_ghz))[:, :, None] * model.noise_cl[:, None, ell]
    pairs = model.pairs
    n_p, n_b = len(pairs), len(model.edges) - 1
    per_l = np.zeros((n_p, n_p, ell.size))
    for u, (a, b) in enumerate(pairs):
        for v, (c, d) in enumerate(pairs):
            k = 0.0
            for a1, b1 in ((a, b), (b, a)):
                for c1, d1 in ((c, d), (d, c)):
                    k = k + total[a1, c1] * total[b1, d1] + s[a1, d1] * s[b1, c1]
            per_l[u, v] = 0.25 * k
    per_l /= (2 * ell + 1) * model.f_modes
    cov = np.zeros((n_p, n_b, n_p, n_b))
    for q, (lo, hi) in enumerate(zip(model.edges[:-1], model.edges[1:], strict=True)):
        sel = slice(lo - model.edges[0], hi - model.edges[0])
        cov[:, q, :, q] = per_l[:, :, sel].sum(axis=-1) / (hi - lo) ** 2
    return cov.reshape(n_p * n_b, n_p * n_b)


class Likelihood:
    """-2 ln L of eq. E1 with a fixed covariance, and the prior of the SBI run."""

    def __init__(self, model: Model, data: np.ndarray, cov: np.ndarray, prior_variant: str):
        from scipy import linalg

        self.model, self.data = model, np.asarray(data, float)
        if self.data.shape != (cov.shape[0],):
            raise DataError(f"data vector of length {self.data.size}, covariance {cov.shape}")
        self.chol = linalg.cholesky(cov, lower=True)
        from scipy import special

        full = npe_prior.prior(prior_variant)
        self.marginals = [full.marginals[npe_prior.PARAMETERS.index(p)] for p in SAMPLED]
        m = self.marginals
        self._mu = np.array([x.mu for x in m])
        self._sigma = np.array([x.sigma for x in m])
        self._low, self._high = np.array([x.low for x in m]), np.array([x.high for x in m])
        mass = [special.ndtr(x._ab[1]) - special.ndtr(x._ab[0]) for x in m]
        self._log_norm = float(np.sum(np.log(self._sigma) + 0.5 * np.log(2 * np.pi) + np.log(mass)))

    def chi2(self, theta: np.ndarray) -> np.ndarray:
        from scipy import linalg

        theta = np.atleast_2d(theta)
        with np.errstate(over="ignore", invalid="ignore"):  # far tails: inf, ruled out below
            resid = self.data - binned_model(self.model, theta)  # [w, n]
        finite = np.all(np.isfinite(resid), axis=1)
        out = np.full(theta.shape[0], np.inf)
        if finite.any():
            z = linalg.solve_triangular(self.chol, resid[finite].T, lower=True)
            out[finite] = np.sum(z**2, axis=0)
        return out

    def log_prior(self, theta: np.ndarray) -> np.ndarray:
        """The truncated normals of the prior (``prior.Normal.log_prob``, in closed form)."""
        theta = np.atleast_2d(theta)
        z = (theta - self._mu) / self._sigma
        inside = np.all((theta >= self._low) & (theta <= self._high), axis=-1)
        return np.where(inside, -0.5 * np.sum(z**2, axis=-1) - self._log_norm, -np.inf)

    def log_posterior(self, theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        lp = self.log_prior(theta)
        out = np.full(theta.shape[0], -np.inf)
        ok = np.isfinite(lp)
        if ok.any():
            out[ok] = lp[ok] - 0.5 * self.chi2(theta[ok])  # -inf where the model overflows
        return out

    @property
    def bounds(self) -> list[tuple[float | None, float | None]]:
        return [
            (None if not np.isfinite(m.low) else m.low, None if not np.isfinite(m.high) else m.high)
            for m in self.marginals
        ]

    def start(self) -> np.ndarray:
        return np.array([m.mean() for m in self.marginals])


def maximum_posterior(like: Likelihood, start: np.ndarray) -> np.ndarray:
    """The maximum of the posterior: L-BFGS-B inside the prior's bounds, with a forward-
    difference gradient evaluated as one batch of parameter vectors."""
    from scipy import optimize

    low, high = like._low, like._high

    def value_and_gradient(x):
        step = 1e-7 * np.maximum(np.abs(x), 1e-2)
        step = np.where(x + step > high, -step, step)  # stay inside the bounds
        batch = np.vstack([x, x + np.diag(step)])
        f = -like.log_posterior(batch)
        if not np.isfinite(f[0]):
            return 1e300, np.zeros_like(x)
        with np.errstate(invalid="ignore", over="ignore"):
            return f[0], np.where(np.isfinite(f[1:]), (f[1:] - f[0]) / step, 0.0)

    x = np.clip(start, low, high)
    for _ in range(2):  # a second start polishes a stop on a flat stretch
        x = optimize.minimize(
            value_and_gradient, x, jac=True, method="L-BFGS-B", bounds=like.bounds
        ).x
    return x


def best_of_starts(like: Likelihood, rng, starts: int, first=None) -> np.ndarray:
    """The best of optimisations from ``first`` (default: the prior's mean) and
    ``starts - 1`` draws of the prior."""
    points = [like.start() if first is None else np.asarray(first, float)]
    points += [np.array([m.sample(1, rng)[0] for m in like.marginals]) for _ in range(starts - 1)]
    fits = np.array([maximum_posterior(like, x) for x in points])
    return fits[int(np.argmax(like.log_posterior(fits)))]


class Chain(NamedTuple):
    samples: np.ndarray  # [n, 9]
    best_fit: np.ndarray  # [9]
    acceptance: float
    chi2_best: float


def analyse(
    model: Model,
    data: np.ndarray,
    prior_variant: str,
    rng: np.random.Generator,
    walkers: int = 32,
    steps: int = 2000,
    burn: int = 500,
    n_samples: int = 1000,
    fiducial: np.ndarray | None = None,
    starts: int = 6,
) -> Chain:
    """The posterior of one data vector: covariance at ``fiducial`` (default: the prior's
    mean), best fit, covariance again at the best fit, then emcee from a ball around it.
    Each best fit is the best of ``starts`` optimisations (from the prior's mean or the
    previous fit, and prior draws): a misspecified sky can give the posterior several
    modes, and a start far from the data can stall."""
    import emcee

    first = Likelihood(
        model, data, covariance(model, _start(fiducial, prior_variant, model)), prior_variant
    )
    fid = best_of_starts(first, rng, starts)
    like = Likelihood(model, data, covariance(model, fid), prior_variant)
    best = best_of_starts(like, rng, starts, fid)
    scale = np.maximum(1e-3 * np.abs(best), 1e-5)
    p0 = best + scale * rng.standard_normal((walkers, best.size))
    low = np.array([m.low for m in like.marginals])
    below = np.isfinite(low) & (p0 < low)
    p0 = np.where(below, 2 * low - p0, p0)  # reflect into r >= 0 etc.
    sampler = emcee.EnsembleSampler(walkers, best.size, like.log_posterior, vectorize=True)
    sampler.random_state = np.random.RandomState(int(rng.integers(2**31))).get_state()
    sampler.run_mcmc(p0, steps, progress=False)
    chain = sampler.get_chain(discard=burn, flat=True)
    pick = rng.choice(chain.shape[0], size=min(n_samples, chain.shape[0]), replace=False)
    return Chain(
        chain[pick],
        best,
        float(np.mean(sampler.acceptance_fraction)),
        float(like.chi2(best)[0]),
    )


def _start(fiducial, prior_variant: str, model: Model) -> np.ndarray:
    if fiducial is not None:
        return np.asarray(fiducial, float)
    full = npe_prior.prior(prior_variant)
    return np.array([full.marginals[npe_prior.PARAMETERS.index(p)].mean() for p in SAMPLED])


class Chains(NamedTuple):
    """:func:`analyse` of every dataset, stacked."""

    samples: np.ndarray  # [dataset, n, 9]
    best_fit: np.ndarray  # [dataset, 9]
    acceptance: np.ndarray  # [dataset]
    chi2_best: np.ndarray  # [dataset]


def analyse_datasets(
    model: Model,
    x: np.ndarray,
    prior_variant: str,
    rng_of,
    walkers: int,
    steps: int,
    burn: int,
    n_samples: int,
    label: str,
) -> Chains:
    """:func:`analyse` of each data vector ``x[i]`` with the generator ``rng_of(i)``; the
    progress (r, chi^2 of the best fit, acceptance) goes to the log under ``label``.
    Fewer than ``n_samples`` samples after burn-in is a config error."""
    from bmodesep.log import Progress

    progress = Progress(label, x.shape[0], "datasets")
    chains = []
    for i, data in enumerate(x):
        chain = analyse(model, data, prior_variant, rng_of(i), walkers, steps, burn, n_samples)
        if chain.samples.shape[0] < n_samples:
            raise ConfigError(
                f"npe.ps_likelihood: {chain.samples.shape[0]} samples after burn-in, "
                f"npe.posterior_samples asks {n_samples}: raise steps or walkers"
            )
        chains.append(chain)
        progress.step(
            f"r = {chain.samples[:, 0].mean():.4f}, chi2 {chain.chi2_best:.1f} / {data.size}, "
            f"acceptance {chain.acceptance:.2f}"
        )
    return Chains(
        np.stack([c.samples for c in chains]),
        np.stack([c.best_fit for c in chains]),
        np.array([c.acceptance for c in chains]),
        np.array([c.chi2_best for c in chains]),
    )
