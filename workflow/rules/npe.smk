# Simulation-based inference (duivenvoorden2025): simulation sets in chunks, one posterior
# estimator per compression, posteriors of the test sets, TARP coverage, observed skies.


rule npe_chunk:
    input:
        spectra=SPECTRA,
    output:
        f"{NPE_DIR}/simulations/{{set}}/chunk{{chunk}}.h5",
    params:
        config=npe_config_json,
    log:
        f"{LOGS}/npe_chunk/{{set}}_{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/npe_chunk/{{set}}_{{chunk}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 120 * attempt,  # a retry resumes, with more time
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.campaign --config-json {params.config:q} --spectra {input.spectra} "
        "--set {wildcards.set} --chunk {wildcards.chunk} --output {output} > {log} 2>&1"


rule npe_simulations:
    input:
        [chunk for name in NPE_SETS for chunk in npe_set_chunks(name)],


rule npe_tune:
    input:
        chunks=npe_set_chunks("train") if NPE_SETS else [],
    output:
        f"{NPE_DIR}/{{compression}}/tuning.h5",
    params:
        config=npe_config_json,
    log:
        f"{LOGS}/npe_tune/{{compression}}.log",
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 720 * attempt,  # a retry resumes, with more time
        gpu=0,
    conda:
        TORCH_ENV
    shell:
        "python -m bmodesep.npe tune --config-json {params.config:q} "
        "--compression {wildcards.compression} --chunks {input.chunks} --gpus {resources.gpu} "
        "--output {output} > {log} 2>&1"


rule npe_train:
    input:
        unpack(npe_training_inputs),
    output:
        f"{NPE_DIR}/{{compression}}/estimator.h5",
    params:
        config=npe_config_json,
        tuning=npe_tuning_arg,
    log:
        f"{LOGS}/npe_train/{{compression}}.log",
    benchmark:
        f"{BENCHMARKS}/npe_train/{{compression}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=0,
    conda:
        TORCH_ENV
    shell:
        "python -m bmodesep.npe train --config-json {params.config:q} "
        "--compression {wildcards.compression} --chunks {input.chunks} {params.tuning} "
        "--gpus {resources.gpu} --output {output} > {log} 2>&1"


rule npe_posterior:
    input:
        estimator=f"{NPE_DIR}/{{compression}}/estimator.h5",
        chunks=lambda w: npe_set_chunks(w.set),
    output:
        f"{NPE_DIR}/{{compression}}/posteriors/{{set}}.h5",
    params:
        config=npe_config_json,
    log:
        f"{LOGS}/npe_posterior/{{compression}}_{{set}}.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        TORCH_ENV
    shell:
        "python -m bmodesep.npe posterior --config-json {params.config:q} "
        "--estimator {input.estimator} --chunks {input.chunks} --output {output} > {log} 2>&1"


rule npe_coverage:
    input:
        f"{NPE_DIR}/{{compression}}/posteriors/coverage.h5",
    output:
        f"{NPE_DIR}/{{compression}}/coverage.h5",
    params:
        config=npe_config_json,
    log:
        f"{LOGS}/npe_coverage/{{compression}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        TORCH_ENV
    shell:
        "python -m bmodesep.npe coverage --config-json {params.config:q} --posteriors {input} "
        "--output {output} > {log} 2>&1"


rule npe_observed:
    input:
        estimator=f"{NPE_DIR}/{{compression}}/estimator.h5",
        nilc=f"{NILC_DIR}/{{sim}}/{{compression}}.h5",
        spectra=SPECTRA,
    output:
        f"{NPE_DIR}/{{compression}}/observed/{{sim}}.h5",
    params:
        config=npe_config_json,
    log:
        f"{LOGS}/npe_observed/{{compression}}_{{sim}}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        TORCH_ENV
    shell:
        "python -m bmodesep.npe observed --config-json {params.config:q} "
        "--estimator {input.estimator} --nilc {input.nilc} --spectra {input.spectra} "
        "--simulation {wildcards.sim} --output {output} > {log} 2>&1"


rule fig_tarp:
    input:
        f"{NPE_DIR}/{{compression}}/coverage.h5",
    output:
        report(
            f"{FIGURES}/npe/{{compression}}/tarp.png",
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/tarp.rst",
        ),
    log:
        f"{LOGS}/figures/npe_{{compression}}_tarp.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures tarp --inputs {input} --output {output} > {log} 2>&1"


rule fig_corner_set:
    input:
        f"{NPE_DIR}/{{compression}}/posteriors/{{set}}.h5",
    output:
        report(
            f"{FIGURES}/npe/{{compression}}/corner_{{set}}.png",
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/corner.rst",
        ),
    log:
        f"{LOGS}/figures/npe_{{compression}}_corner_{{set}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures corner --inputs {input} --output {output} > {log} 2>&1"


rule fig_corner_observed:
    input:
        expand(f"{NPE_DIR}/{{{{compression}}}}/observed/{{sim}}.h5", sim=NPE["observed"]),
    output:
        report(
            f"{FIGURES}/npe/{{compression}}/corner_observed.png",
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/corner.rst",
        ),
    log:
        f"{LOGS}/figures/npe_{{compression}}_corner_observed.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures corner --inputs {input} --output {output} > {log} 2>&1"


rule fig_predictive:
    input:
        expand(f"{NPE_DIR}/{{{{compression}}}}/observed/{{sim}}.h5", sim=NPE["observed"]),
    output:
        report(
            f"{FIGURES}/npe/{{compression}}/predictive.png",
            category="duivenvoorden2025",
            subcategory="{compression}",
            caption="../report/predictive.rst",
        ),
    log:
        f"{LOGS}/figures/npe_{{compression}}_predictive.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures predictive --inputs {input} --output {output} > {log} 2>&1"


rule fig_r_vs_sigma_beta:
    input:
        expand(f"{NPE_DIR}/{{compression}}/posteriors/{{{{set}}}}.h5", compression=NPE_COMPRESSIONS),
    output:
        report(
            f"{FIGURES}/npe/r_vs_sigma_beta_{{set}}.png",
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/r_vs_sigma_beta.rst",
        ),
    log:
        f"{LOGS}/figures/npe_r_vs_sigma_beta_{{set}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures r_vs_sigma_beta --inputs {input} --output {output} "
        "> {log} 2>&1"


rule fig_sigma_r:
    input:
        expand(f"{NPE_DIR}/{{compression}}/posteriors/{{{{set}}}}.h5", compression=NPE_COMPRESSIONS),
    output:
        report(
            f"{FIGURES}/npe/sigma_r_{{set}}.png",
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/sigma_r.rst",
        ),
    log:
        f"{LOGS}/figures/npe_sigma_r_{{set}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures sigma_r --inputs {input} --output {output} > {log} 2>&1"


rule npe_summary:
    input:
        expand(
            f"{NPE_DIR}/{{compression}}/posteriors/{{set}}.h5",
            compression=NPE_COMPRESSIONS,
            set=NPE_TEST_SETS,
        ),
        expand(
            f"{NPE_DIR}/{{compression}}/observed/{{sim}}.h5",
            compression=NPE_COMPRESSIONS,
            sim=NPE["observed"],
        ),
    output:
        report(
            f"{FIGURES}/npe/summary.csv",
            category="duivenvoorden2025",
            subcategory="test sets",
            caption="../report/summary.rst",
        ),
    log:
        f"{LOGS}/figures/npe_summary.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        PLOT_ENV
    shell:
        "python -m bmodesep.sbi_figures summary --inputs {input} --output {output} > {log} 2>&1"


rule npe_all:
    input:
        rules.npe_simulations.input,
        expand(f"{NPE_DIR}/{{compression}}/estimator.h5", compression=NPE_COMPRESSIONS),
        [f"{NPE_DIR}/{c}/coverage.h5" for c in NPE_COMPRESSIONS if "coverage" in NPE_SETS],
        npe_figure_targets(),
