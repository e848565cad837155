# One sky, two methods (bmodesep/stages/compare.py): r of the parametric separation's
# methods, of SBI and of the power-spectrum likelihood on the same simulations.


rule compare_summary:
    input:
        [row["result"] for row in compare_rows()],
    output:
        report(
            compare_figure("summary.csv"),
            category="one sky, two methods",
            caption="../report/compare.rst",
        ),
    params:
        config=cmb_config,
        rows=compare_rows_file,
    log:
        log_file("figures", "compare_summary"),
    benchmark:
        benchmark_file("figures", "compare_summary")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep compare compare_summary --config {params.config} --rows {params.rows} "
        "--output {output} > {log} 2>&1"


rule fig_compare:
    input:
        summary=compare_figure("summary.csv"),
    output:
        report(
            compare_figure("compare.png"),
            category="one sky, two methods",
            caption="../report/compare.rst",
        ),
    params:
        config=cmb_config,
    log:
        log_file("figures", "fig_compare"),
    benchmark:
        benchmark_file("figures", "fig_compare")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "bmodesep compare fig_compare --config {params.config} --summary {input.summary} "
        "--output {output} > {log} 2>&1"


rule compare_all:
    input:
        compare_targets,
