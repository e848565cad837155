"""Paper figures from the products (``workflow/rules/figures.smk``), one function per rule.

    bmodesep figures fig_grid_search --selection SEL.h5 --output PNG
    bmodesep figures fig_r_likelihood --rlike R1.h5 R2.h5 ... --output PNG
    bmodesep figures --help                       (every figure and its inputs)

Each reads small summary products and draws with :mod:`bmodesep.plots.compsep`
(kabalan2025) or :mod:`bmodesep.plots.npe` (duivenvoorden2025).  A figure takes no config:
it depends on its products (and its own arguments) alone, so an edit of the config reruns
a figure only where it changes the figure's products.
"""

from __future__ import annotations

from bmodesep.plots import compsep as kabalan
from bmodesep.plots import npe as sbi
from bmodesep.steps import File, step


@step
def fig_grid_search(selection: File, output: File) -> None:
    """Variance and NLL of every grid configuration against the patch counts."""
    kabalan.grid_search([selection], output)


@step
def fig_patches(fits: list[File], output: File) -> None:
    """Patch maps of every method in one zone (kabalan2025 Figs. 1, 7, 8)."""
    kabalan.patches(fits, output)


@step
def fig_residual_maps(fits: list[File], sky: File, nside: int, output: File) -> None:
    """Residual maps of every method (Fig. 9)."""
    kabalan.residual_maps(fits, output, sky=sky, nside=nside)


@step
def fig_metrics(fits: list[File], rlike: list[File], output: File) -> None:
    """Variance, systematic residual and total BB power per method (Fig. 11)."""
    kabalan.metrics(fits, output, rlike=rlike)


@step
def fig_residual_spectra(rlike: list[File], output: File) -> None:
    """Residual BB spectra per method (Fig. 10)."""
    kabalan.residual_spectra(rlike, output)


@step
def fig_r_likelihood(rlike: list[File], output: File) -> None:
    """L(r) per method (Fig. 12)."""
    kabalan.r_likelihood(rlike, output)


@step
def r_summary(rlike: list[File], output: File) -> None:
    """r-hat, 68% interval, 68% upper limit and sigma(r) per method (CSV)."""
    kabalan.r_summary(rlike, output)


@step
def fig_r_hat_vs_k(selections: list[File], rlike: list[File], output: File) -> None:
    """r-hat of every grid configuration against K_beta_d (Fig. 13)."""
    kabalan.r_hat_vs_k(selections, output, rlike=rlike)


@step
def fig_tarp(coverage: File, output: File) -> None:
    """TARP expected coverage (duivenvoorden2025 Figs. 1, 11)."""
    sbi.tarp([coverage], output)


@step
def fig_corner(posteriors: list[File], output: File) -> None:
    """Corner plot of posterior samples (Figs. 2, 5)."""
    sbi.corner(posteriors, output)


@step
def fig_corner_observed(posteriors: list[File], output: File) -> None:
    """Corner plot of the observed skies' posteriors (Fig. 5)."""
    sbi.corner(posteriors, output)


@step
def fig_predictive(observed: list[File], output: File) -> None:
    """Posterior predictive chi^2 of the observed skies (Fig. 9)."""
    sbi.predictive(observed, output)


@step
def fig_predictive_fixed(observed: list[File], output: File) -> None:
    """Posterior predictive chi^2 of the fixed-foreground skies' first datasets (Fig. 9)."""
    sbi.predictive(observed, output)


@step
def fig_r_vs_sigma_beta(posteriors: list[File], output: File) -> None:
    """r against the inferred spectral-index power (Fig. 3)."""
    sbi.r_vs_sigma_beta(posteriors, output)


@step
def fig_sigma_r(posteriors: list[File], output: File) -> None:
    """sigma_r per compression (Fig. 4)."""
    sbi.sigma_r(posteriors, output)


@step
def npe_summary(posteriors: list[File], output: File) -> None:
    """Summary table of every test set and observed sky (Table 3 style)."""
    sbi.summary(posteriors, output)


@step
def npe_table3(posteriors: list[File], output: File) -> None:
    """Table 3: mean r, mean posterior width and bias per fixed-foreground sky (CSV)."""
    sbi.table3(posteriors, output)


@step
def fig_fixed_foreground(posteriors: list[File], output: File) -> None:
    """Posterior means of r per fixed-foreground sky (Figs. 5-6)."""
    sbi.fixed_foreground(posteriors, output)


@step
def fig_likelihood(posteriors: list[File], likelihood: File, output: File) -> None:
    """SBI against the power-spectrum likelihood on one test set (Figs. 2, 3)."""
    sbi.likelihood(posteriors, likelihood, output)


@step
def fig_training_size(coverage: list[File], estimators: list[File], output: File) -> None:
    """TARP coverage against the training-set size (Fig. 1)."""
    sbi.training_size(coverage, estimators, output)


@step
def fig_recovery(recovery: File, selections: list[File], output: File) -> None:
    """The selection objectives through the true patch counts, per zone (sec. 5.1)."""
    kabalan.recovery(recovery, selections, output)


@step
def recovery_table(parts: list[File], output: File) -> None:
    """The recovery tables of the simulations, one after the other."""
    from bmodesep.products import compsep as cp

    cp.write_recovery(output, [row for part in parts for row in cp.read_recovery(part)])
