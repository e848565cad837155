# Figures of both papers (bmodesep/stages/figures.py -> bmodesep/plots/) from small
# summary products; `snakemake figures` builds them all and `snakemake --report report.html`
# collects them.

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
        config=simulation_stage_config,
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
        "bmodesep figures fig_grid_search --config {params.config} --selection "
        "{input.selection} --output {output} > {log} 2>&1"


rule fig_patches:
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
        config=simulation_stage_config,
    log:
        log_file("figures", "fig_patches", "{sim}", "{zone}"),
    benchmark:
        benchmark_file("figures", "fig_patches", "{sim}", "{zone}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_patches --config {params.config} --fits {input.fits} "
        "--output {output} > {log} 2>&1"


rule fig_residual_maps:
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
        config=simulation_stage_config,
        nside=simulation_nside,
    log:
        log_file("figures", "fig_residual_maps", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_residual_maps", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_residual_maps --config {params.config} --fits {input.fits} "
        "--sky {input.sky} --nside {params.nside} --output {output} > {log} 2>&1"


rule fig_metrics:
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
        config=simulation_stage_config,
    log:
        log_file("figures", "fig_metrics", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_metrics", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_metrics --config {params.config} --fits {input.fits} "
        "--rlike {input.rlike} --output {output} > {log} 2>&1"


rule fig_residual_spectra:
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
        config=simulation_stage_config,
    log:
        log_file("figures", "fig_residual_spectra", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_residual_spectra", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_residual_spectra --config {params.config} --rlike "
        "{input.rlike} --output {output} > {log} 2>&1"


rule fig_r_likelihood:
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
        config=simulation_stage_config,
    log:
        log_file("figures", "fig_r_likelihood", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_r_likelihood", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_r_likelihood --config {params.config} --rlike {input.rlike} "
        "--output {output} > {log} 2>&1"


rule fig_r_hat_vs_k:
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
        config=simulation_stage_config,
    log:
        log_file("figures", "fig_r_hat_vs_k", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_r_hat_vs_k", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_r_hat_vs_k --config {params.config} --selections "
        "{input.selections} --rlike {input.rlike} --output {output} > {log} 2>&1"


rule r_summary:
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
        config=simulation_stage_config,
    log:
        log_file("figures", "r_summary", "{sim}"),
    benchmark:
        benchmark_file("figures", "r_summary", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures r_summary --config {params.config} --rlike {input.rlike} "
        "--output {output} > {log} 2>&1"


rule fig_tarp:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_tarp", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_tarp", "{compression}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_tarp --config {params.config} --coverage {input.coverage} "
        "--output {output} > {log} 2>&1"


rule fig_training_size:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_training_size", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_training_size", "{compression}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_training_size --config {params.config} --coverage "
        "{input.coverage} --estimators {input.estimators} --output {output} > {log} 2>&1"


rule fig_corner:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_corner", "{compression}", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_corner", "{compression}", "{set}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_corner --config {params.config} --posteriors "
        "{input.posteriors} --output {output} > {log} 2>&1"


rule fig_corner_observed:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_corner_observed", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_corner_observed", "{compression}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_corner --config {params.config} --posteriors "
        "{input.posteriors} --output {output} > {log} 2>&1"


rule fig_predictive:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_predictive", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_predictive", "{compression}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_predictive --config {params.config} --observed "
        "{input.observed} --output {output} > {log} 2>&1"


rule fig_predictive_fixed:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_predictive_fixed", "{compression}"),
    benchmark:
        benchmark_file("figures", "fig_predictive_fixed", "{compression}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_predictive --config {params.config} --observed "
        "{input.observed} --output {output} > {log} 2>&1"


rule fig_likelihood:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_likelihood", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_likelihood", "{set}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_likelihood --config {params.config} --posteriors "
        "{input.posteriors} --likelihood {input.likelihood} --output {output} > {log} 2>&1"


rule npe_table3:
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
        config=npe_stage_config,
    log:
        log_file("figures", "npe_table3"),
    benchmark:
        benchmark_file("figures", "npe_table3")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures npe_table3 --config {params.config} --posteriors {input.posteriors} "
        "--output {output} > {log} 2>&1"


rule fig_fixed_foreground:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_fixed_foreground"),
    benchmark:
        benchmark_file("figures", "fig_fixed_foreground")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_fixed_foreground --config {params.config} --posteriors "
        "{input.posteriors} --output {output} > {log} 2>&1"


rule fig_r_vs_sigma_beta:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_r_vs_sigma_beta", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_r_vs_sigma_beta", "{set}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_r_vs_sigma_beta --config {params.config} --posteriors "
        "{input.posteriors} --output {output} > {log} 2>&1"


rule fig_sigma_r:
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
        config=npe_stage_config,
    log:
        log_file("figures", "fig_sigma_r", "{set}"),
    benchmark:
        benchmark_file("figures", "fig_sigma_r", "{set}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_sigma_r --config {params.config} --posteriors "
        "{input.posteriors} --output {output} > {log} 2>&1"


rule npe_summary:
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
        config=npe_stage_config,
    log:
        log_file("figures", "npe_summary"),
    benchmark:
        benchmark_file("figures", "npe_summary")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures npe_summary --config {params.config} --posteriors {input.posteriors} "
        "--output {output} > {log} 2>&1"


rule fig_recovery:
    input:
        recovery=recovery_file(),
        selections=zone_selections,
    output:
        compsep_figure("recovery"),
    params:
        config=simulation_stage_config,
    log:
        log_file("figures", "fig_recovery", "{sim}"),
    benchmark:
        benchmark_file("figures", "fig_recovery", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures fig_recovery --config {params.config} --recovery {input.recovery} "
        "--selections {input.selections} --output {output} > {log} 2>&1"


rule recovery_table:
    input:
        parts=[recovery_file(s) for s in validation_simulations()],
    output:
        recovery_table_file(),
    params:
        config=cmb_config,
    log:
        log_file("figures", "recovery_table"),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep figures recovery_table --config {params.config} --parts {input.parts} "
        "--output {output} > {log} 2>&1"


# kabalan2025 sec. 5.1: which selection rules recover the true patch counts
# (config/validation.yaml; the simulations with K-means true patches)
rule validation_all:
    input:
        validation_targets,


rule figures:
    input:
        [f for s in COMPSEP_SIMULATIONS for f in compsep_figure_targets(s)],
        npe_figure_targets(),
