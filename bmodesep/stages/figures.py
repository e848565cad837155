"""Figures stage (``workflow/rules/figures.smk``): one function per figure rule.

    bmodesep figures fig_grid_search --config C --selection SEL.h5 --output PNG
    bmodesep figures fig_r_likelihood --config C --rlike R1.h5 R2.h5 ... --output PNG
    bmodesep figures --help                       (every figure and its inputs)

Each reads small summary products and draws with :mod:`bmodesep.plots.compsep`
(kabalan2025) or :mod:`bmodesep.plots.npe` (duivenvoorden2025).  The config is accepted
for a uniform command line; the figures depend on their products only.
"""

from __future__ import annotations

from bmodesep.plots import compsep as kabalan
from bmodesep.plots import npe as sbi


def fig_grid_search(config, selection, output) -> None:
    """Variance and NLL of every grid configuration against the patch counts."""
    kabalan.grid_search([selection], output)


def fig_patches(config, fits, output) -> None:
    """Patch maps of every method in one zone (kabalan2025 Figs. 1, 7, 8)."""
    kabalan.patches(fits, output)


def fig_residual_maps(config, fits, sky, nside, output) -> None:
    """Residual maps of every method (Fig. 9)."""
    kabalan.residual_maps(fits, output, sky=sky, nside=nside)


def fig_metrics(config, fits, rlike, output) -> None:
    """Variance, systematic residual and total BB power per method (Fig. 11)."""
    kabalan.metrics(fits, output, rlike=rlike)


def fig_residual_spectra(config, rlike, output) -> None:
    """Residual BB spectra per method (Fig. 10)."""
    kabalan.residual_spectra(rlike, output)


def fig_r_likelihood(config, rlike, output) -> None:
    """L(r) per method (Fig. 12)."""
    kabalan.r_likelihood(rlike, output)


def r_summary(config, rlike, output) -> None:
    """r-hat, 68% interval, 68% upper limit and sigma(r) per method (CSV)."""
    kabalan.r_summary(rlike, output)


def fig_r_hat_vs_k(config, selections, rlike, output) -> None:
    """r-hat of every grid configuration against K_beta_d (Fig. 13)."""
    kabalan.r_hat_vs_k(selections, output, rlike=rlike)


def fig_tarp(config, coverage, output) -> None:
    """TARP expected coverage (duivenvoorden2025 Figs. 1, 11)."""
    sbi.tarp([coverage], output)


def fig_corner(config, posteriors, output) -> None:
    """Corner plot of posterior samples (Figs. 2, 5)."""
    sbi.corner(posteriors, output)


def fig_predictive(config, observed, output) -> None:
    """Posterior predictive chi^2 of the observed skies (Fig. 9)."""
    sbi.predictive(observed, output)


def fig_r_vs_sigma_beta(config, posteriors, output) -> None:
    """r against the inferred spectral-index power (Fig. 3)."""
    sbi.r_vs_sigma_beta(posteriors, output)


def fig_sigma_r(config, posteriors, output) -> None:
    """sigma_r per compression (Fig. 4)."""
    sbi.sigma_r(posteriors, output)


def npe_summary(config, posteriors, output) -> None:
    """Summary table of every test set and observed sky (Table 3 style)."""
    sbi.summary(posteriors, output)


def npe_table3(config, posteriors, output) -> None:
    """Table 3: mean r, mean posterior width and bias per fixed-foreground sky (CSV)."""
    sbi.table3(posteriors, output)


def fig_fixed_foreground(config, posteriors, output) -> None:
    """Posterior means of r per fixed-foreground sky (Figs. 5-6)."""
    sbi.fixed_foreground(posteriors, output)


def fig_likelihood(config, posteriors, likelihood, output) -> None:
    """SBI against the power-spectrum likelihood on one test set (Figs. 2, 3)."""
    sbi.likelihood(posteriors, likelihood, output)


def fig_training_size(config, coverage, estimators, output) -> None:
    """TARP coverage against the training-set size (Fig. 1)."""
    sbi.training_size(coverage, estimators, output)


def fig_recovery(config, recovery, selections, output) -> None:
    """The selection objectives through the true patch counts, per zone (sec. 5.1)."""
    kabalan.recovery(recovery, selections, output)


def recovery_table(config, parts, output) -> None:
    """The recovery tables of the simulations, one after the other."""
    from bmodesep.products import compsep as cp

    cp.write_recovery(output, [row for part in parts for row in cp.read_recovery(part)])
