# kabalan2025 figures from small summary products; `snakemake figures` builds them all and
# `snakemake --report report.html` collects them.


rule fig_grid_search:
    input:
        f"{COMPSEP_DIR}/{{sim}}/grid/{{zone}}/selection.h5",
    output:
        report(
            f"{FIGURES}/{{sim}}/grid_search_{{zone}}.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/grid_search.rst",
        ),
    log:
        f"{LOGS}/figures/{{sim}}_grid_search_{{zone}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures grid_search --inputs {input} --output {output} > {log} 2>&1"


rule fig_patches:
    input:
        zone_method_fits,
    output:
        report(
            f"{FIGURES}/{{sim}}/patches_{{zone}}.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/patches.rst",
        ),
    log:
        f"{LOGS}/figures/{{sim}}_patches_{{zone}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures patches --inputs {input} --output {output} > {log} 2>&1"


rule fig_residual_maps:
    input:
        fits=all_method_fits,
        sky=f"{RESULTS}/sims/{{sim}}/sky.h5",
    output:
        report(
            f"{FIGURES}/{{sim}}/residual_maps.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/residual_maps.rst",
        ),
    params:
        nside=simulation_nside,
    log:
        f"{LOGS}/figures/{{sim}}_residual_maps.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures residual_maps --inputs {input.fits} --sky {input.sky} "
        "--nside {params.nside} --output {output} > {log} 2>&1"


rule fig_metrics:
    input:
        fits=all_method_fits,
        rlike=method_r_likelihoods,
    output:
        report(
            f"{FIGURES}/{{sim}}/metrics.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/metrics.rst",
        ),
    log:
        f"{LOGS}/figures/{{sim}}_metrics.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures metrics --inputs {input.fits} --rlike {input.rlike} "
        "--output {output} > {log} 2>&1"


rule fig_residual_spectra:
    input:
        method_r_likelihoods,
    output:
        report(
            f"{FIGURES}/{{sim}}/residual_spectra.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/residual_spectra.rst",
        ),
    log:
        f"{LOGS}/figures/{{sim}}_residual_spectra.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures residual_spectra --inputs {input} --output {output} "
        "> {log} 2>&1"


rule fig_r_likelihood:
    input:
        method_r_likelihoods,
    output:
        report(
            f"{FIGURES}/{{sim}}/r_likelihood.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/r_likelihood.rst",
        ),
    log:
        f"{LOGS}/figures/{{sim}}_r_likelihood.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures r_likelihood --inputs {input} --output {output} > {log} 2>&1"


rule fig_r_hat_vs_k:
    input:
        selections=expand(
            f"{COMPSEP_DIR}/{{{{sim}}}}/grid/{{zone}}/selection.h5",
            zone=COMPSEP_ZONES,
        ),
        rlike=method_r_likelihoods,
    output:
        report(
            f"{FIGURES}/{{sim}}/r_hat_vs_k.png",
            category="kabalan2025",
            subcategory="{sim}",
            caption="../report/r_hat_vs_k.rst",
        ),
    log:
        f"{LOGS}/figures/{{sim}}_r_hat_vs_k.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.figures r_hat_vs_k --inputs {input.selections} --rlike {input.rlike} "
        "--output {output} > {log} 2>&1"


rule figures:
    input:
        expand(
            f"{FIGURES}/{{sim}}/{{name}}_{{zone}}.png",
            sim=COMPSEP_SIMULATIONS,
            name=["grid_search", "patches"],
            zone=COMPSEP_ZONES,
        ),
        expand(
            f"{FIGURES}/{{sim}}/{{name}}.png",
            sim=COMPSEP_SIMULATIONS,
            name=["residual_maps", "metrics", "residual_spectra", "r_likelihood", "r_hat_vs_k"],
        ),
