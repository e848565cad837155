# Figures of both papers (bmodesep/stages/figures.py -> bmodesep/plots/) from small
# summary products; `snakemake figures` builds them all and `snakemake --report report.html`
# collects them.
# Every figure rule is the first one's with its own inputs, output, params, log and
# benchmark (`use rule ... with:`).  The command is `bmodesep figures <rule> --<input>
# FILES ... --output OUT` (params.args: figure_args, the step named like the rule, then the
# inputs by their names; the figures stage has one function per rule).  No figure carries the config: it reruns when its products, or
# its own settings (fig_residual_maps' nside), change, not on any config edit.


rule fig_grid_search:
    input:
        selection=selection_file(),
    output:
        report(
            compsep_figure("grid_search_{zone}"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/grid_search.rst",
        ),
    params:
        args=figure_args("fig_grid_search"),
    log:
        log_file("figures", "fig_grid_search", "{sim}", "{zone}"),
    benchmark:
        benchmark_file("figures", "fig_grid_search", "{sim}", "{zone}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures {params.args} --output {output} > {log} 2>&1"


use rule fig_grid_search as fig_patches with:
    input:
        fits=zone_method_fits,
    output:
        report(
            compsep_figure("patches_{zone}"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/patches.rst",
        ),
    params:
        args=figure_args("fig_patches"),
    log:
        log_file("figures", "fig_patches", "{sim}", "{zone}"),
    benchmark:
        benchmark_file("figures", "fig_patches", "{sim}", "{zone}")


use rule fig_grid_search as fig_residual_maps with:
    input:
        fits=all_method_fits,
        sky=sky_file(),
    output:
        report(
            compsep_figure("residual_maps"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/residual_maps.rst",
        ),
    params:
        args=figure_args("fig_residual_maps", nside=simulation_nside),
    log:
        log_file("figures", "fig_residual_maps", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_residual_maps", "{sim}")


use rule fig_grid_search as fig_metrics with:
    input:
        fits=all_method_fits,
        rlike=method_r_likelihoods,
    output:
        report(
            compsep_figure("metrics"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/metrics.rst",
        ),
    params:
        args=figure_args("fig_metrics"),
    log:
        log_file("figures", "fig_metrics", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_metrics", "{sim}")


use rule fig_grid_search as fig_residual_spectra with:
    input:
        rlike=method_r_likelihoods,
    output:
        report(
            compsep_figure("residual_spectra"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/residual_spectra.rst",
        ),
    params:
        args=figure_args("fig_residual_spectra"),
    log:
        log_file("figures", "fig_residual_spectra", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_residual_spectra", "{sim}")


use rule fig_grid_search as fig_r_likelihood with:
    input:
        rlike=method_r_likelihoods,
    output:
        report(
            compsep_figure("r_likelihood"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/r_likelihood.rst",
        ),
    params:
        args=figure_args("fig_r_likelihood"),
    log:
        log_file("figures", "fig_r_likelihood", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_r_likelihood", "{sim}")


use rule fig_grid_search as fig_r_hat_vs_k with:
    input:
        selections=zone_selections,
        rlike=method_r_likelihoods,
    output:
        report(
            compsep_figure("r_hat_vs_k"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/r_hat_vs_k.rst",
        ),
    params:
        args=figure_args("fig_r_hat_vs_k"),
    log:
        log_file("figures", "fig_r_hat_vs_k", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_r_hat_vs_k", "{sim}")


use rule fig_grid_search as r_summary with:
    input:
        rlike=method_r_likelihoods,
    output:
        report(
            compsep_figure("r_summary", ext="csv"),
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/r_summary.rst",
        ),
    params:
        args=figure_args("r_summary"),
    log:
        log_file("figures", "r_summary", "{sim}"),
    benchmark:
        benchmark_file("figures", "r_summary", "{sim}")


use rule fig_grid_search as fig_tarp with:
    input:
        coverage=coverage_file(),
    output:
        report(
            npe_figure("tarp.png", "{compression}"),
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/tarp.rst",
        ),
    params:
        args=figure_args("fig_tarp"),
    log:
        log_file("figures", "fig_tarp", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_tarp", "{compression}")


use rule fig_grid_search as fig_training_size with:
    input:
        coverage=[subset_file("coverage", fraction=f) for f in NPE_SUBSETS],
        estimators=[subset_file("estimator", fraction=f) for f in NPE_SUBSETS],
    output:
        report(
            npe_figure("training_size.png", "{compression}"),
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/training_size.rst",
        ),
    params:
        args=figure_args("fig_training_size"),
    log:
        log_file("figures", "fig_training_size", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_training_size", "{compression}")


use rule fig_grid_search as fig_corner with:
    input:
        posteriors=posterior_file(),
    output:
        report(
            npe_figure("corner_{set}.png", "{compression}"),
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/corner.rst",
        ),
    params:
        args=figure_args("fig_corner"),
    log:
        log_file("figures", "fig_corner", "{compression}", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_corner", "{compression}", "{set}")


use rule fig_grid_search as fig_corner_observed with:
    input:
        posteriors=observed_files,
    output:
        report(
            npe_figure("corner_observed.png", "{compression}"),
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/corner.rst",
        ),
    params:
        args=figure_args("fig_corner_observed"),
    log:
        log_file("figures", "fig_corner_observed", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_corner_observed", "{compression}")


use rule fig_grid_search as fig_predictive with:
    input:
        observed=observed_files,
    output:
        report(
            npe_figure("predictive.png", "{compression}"),
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/predictive.rst",
        ),
    params:
        args=figure_args("fig_predictive"),
    log:
        log_file("figures", "fig_predictive", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_predictive", "{compression}")


use rule fig_grid_search as fig_predictive_fixed with:
    input:
        observed=fixed_predictive_files,
    output:
        report(
            npe_figure("predictive_fixed.png", "{compression}"),
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/predictive.rst",
        ),
    params:
        args=figure_args("fig_predictive_fixed"),
    log:
        log_file("figures", "fig_predictive_fixed", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_predictive_fixed", "{compression}")


use rule fig_grid_search as fig_likelihood with:
    input:
        posteriors=set_posteriors,
        likelihood=ps_likelihood_file(),
    output:
        report(
            npe_figure("likelihood_{set}.png"),
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/likelihood.rst",
        ),
    params:
        args=figure_args("fig_likelihood"),
    log:
        log_file("figures", "fig_likelihood", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_likelihood", "{set}")


use rule fig_grid_search as npe_table3 with:
    input:
        posteriors=fixed_set_posteriors(),
    output:
        report(
            npe_figure("table3.csv"),
            category="duivenvoorden2025",
            subcategory="fixed-foreground skies",
            caption="../report/table3.rst",
        ),
    params:
        args=figure_args("npe_table3"),
    log:
        log_file("figures", "npe_table3"),
    benchmark:
        benchmark_file("figures", "npe_table3")


use rule fig_grid_search as fig_fixed_foreground with:
    input:
        posteriors=fixed_set_posteriors(),
    output:
        report(
            npe_figure("fixed_foreground.png"),
            category="duivenvoorden2025",
            subcategory="fixed-foreground skies",
            caption="../report/fixed_foreground.rst",
        ),
    params:
        args=figure_args("fig_fixed_foreground"),
    log:
        log_file("figures", "fig_fixed_foreground"),
    benchmark:
        benchmark_file("figures", "fig_fixed_foreground")


use rule fig_grid_search as fig_r_vs_sigma_beta with:
    input:
        posteriors=set_posteriors,
    output:
        report(
            npe_figure("r_vs_sigma_beta_{set}.png"),
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/r_vs_sigma_beta.rst",
        ),
    params:
        args=figure_args("fig_r_vs_sigma_beta"),
    log:
        log_file("figures", "fig_r_vs_sigma_beta", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_r_vs_sigma_beta", "{set}")


use rule fig_grid_search as fig_sigma_r with:
    input:
        posteriors=set_posteriors,
    output:
        report(
            npe_figure("sigma_r_{set}.png"),
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/sigma_r.rst",
        ),
    params:
        args=figure_args("fig_sigma_r"),
    log:
        log_file("figures", "fig_sigma_r", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_sigma_r", "{set}")


use rule fig_grid_search as npe_summary with:
    input:
        posteriors=[posterior_file(c, s) for c in NPE_COMPRESSIONS for s in NPE_TEST_SETS]
        + [observed_file(c, s) for c in NPE_COMPRESSIONS for s in NPE["observed"]],
    output:
        report(
            npe_figure("summary.csv"),
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/summary.rst",
        ),
    params:
        args=figure_args("npe_summary"),
    log:
        log_file("figures", "npe_summary"),
    benchmark:
        benchmark_file("figures", "npe_summary")


use rule fig_grid_search as fig_recovery with:
    input:
        recovery=recovery_file(),
        selections=zone_selections,
    output:
        compsep_figure("recovery"),
    params:
        args=figure_args("fig_recovery"),
    log:
        log_file("figures", "fig_recovery", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_recovery", "{sim}")


use rule fig_grid_search as recovery_table with:
    input:
        parts=[recovery_file(s) for s in validation_simulations()],
    output:
        recovery_table_file(),
    params:
        args=figure_args("recovery_table"),
    log:
        log_file("figures", "recovery_table"),
    benchmark:
        benchmark_file("figures", "recovery_table")
    resources:
        mem_mb=500,
        runtime=5,


# kabalan2025 sec. 5.1: which selection rules recover the true patch counts
# (config/validation.yaml; the simulations with K-means true patches)
rule validation_all:
    input:
        validation_targets,


rule figures:
    input:
        [f for s in COMPSEP_SIMULATIONS for f in compsep_figure_targets(s)],
        npe_figure_targets(),
