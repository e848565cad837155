# Simulation-based inference (duivenvoorden2025; bmodesep/stages/npe.py): simulation sets in
# chunks, one posterior estimator per compression, posteriors of the test sets, TARP
# coverage, observed skies.  Its figures are in figures.smk.


rule npe_chunk:
    input:
        unpack(npe_chunk_inputs),
    output:
        npe_chunk_file(),
    params:
        config=npe_set_stage_config,
        foreground=npe_foreground_arg,
    log:
        log_file("npe_chunk", "{set}", "{chunk}"),
    benchmark:
        benchmark_file("npe_chunk", "{set}", "{chunk}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=runtime_per_attempt(120),  # a retry resumes, with more time
    conda:
        SIM_ENV
    shell:
        "bmodesep npe npe_chunk --config {params.config} --spectra {input.spectra} "
        "--set {wildcards.set} --chunk {wildcards.chunk} {params.foreground} --output {output} "
        "> {log} 2>&1"


rule npe_simulations:
    input:
        [chunk for name in NPE_SETS for chunk in npe_set_chunks(name)],


rule npe_tune:
    input:
        chunks=npe_set_chunks("train") if NPE_SETS else [],
    output:
        tuning_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_tune", "{compression}"),
    benchmark:
        benchmark_file("npe_tune", "{compression}")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_per_attempt(720),  # a retry resumes, with more time
        gpu=0,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_tune --config {params.config} --compression {wildcards.compression} "
        "--chunks {input.chunks} --gpus {resources.gpu} --output {output} > {log} 2>&1"


rule npe_train:
    input:
        unpack(npe_training_inputs),
    output:
        estimator_file(),
    params:
        config=npe_stage_config,
        tuning=npe_tuning_arg,
    log:
        log_file("npe_train", "{compression}"),
    benchmark:
        benchmark_file("npe_train", "{compression}")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_per_attempt(240),
        gpu=0,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_train --config {params.config} --compression {wildcards.compression} "
        "--chunks {input.chunks} {params.tuning} --gpus {resources.gpu} --output {output} "
        "> {log} 2>&1"


rule npe_posterior:
    input:
        estimator=estimator_file(),
        chunks=npe_wildcard_set_chunks,
    output:
        posterior_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_posterior", "{compression}", "{set}"),
    benchmark:
        benchmark_file("npe_posterior", "{compression}", "{set}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_posterior --config {params.config} --estimator {input.estimator} "
        "--chunks {input.chunks} --output {output} > {log} 2>&1"


rule npe_coverage:
    input:
        posteriors=posterior_file(set="coverage"),
    output:
        coverage_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_coverage", "{compression}"),
    benchmark:
        benchmark_file("npe_coverage", "{compression}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_coverage --config {params.config} --posteriors {input.posteriors} "
        "--output {output} > {log} 2>&1"


rule npe_observed:
    input:
        estimator=estimator_file(),
        nilc=nilc_file(),
        spectra=spectra_file(),
    output:
        observed_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_observed", "{compression}", "{sim}"),
    benchmark:
        benchmark_file("npe_observed", "{compression}", "{sim}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_observed --config {params.config} --estimator {input.estimator} "
        "--nilc {input.nilc} --spectra {input.spectra} --simulation {wildcards.sim} "
        "--output {output} > {log} 2>&1"


# the estimator's yardstick: regressions of r on x at each training subset (issue 27)
rule npe_yardstick:
    input:
        chunks=npe_set_chunks("train") if "train" in NPE_SETS else [],
        coverage=npe_set_chunks("coverage") if "coverage" in NPE_SETS else [],
    output:
        yardstick_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_yardstick", "{compression}"),
    benchmark:
        benchmark_file("npe_yardstick", "{compression}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_yardstick --config {params.config} --compression {wildcards.compression} "
        "--chunks {input.chunks} --coverage {input.coverage} --output {output} > {log} 2>&1"


# Fig. 1: the same training on nested subsets of the training chunks, TARP for each
rule npe_train_subset:
    input:
        chunks=subset_training_chunks,
    output:
        subset_file("estimator"),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_train_subset", "{compression}", "{fraction}"),
    benchmark:
        benchmark_file("npe_train_subset", "{compression}", "{fraction}")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=runtime_per_attempt(240),
        gpu=0,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_train --config {params.config} --compression {wildcards.compression} "
        "--chunks {input.chunks} --gpus {resources.gpu} --output {output} > {log} 2>&1"


rule npe_coverage_subset:
    input:
        estimator=subset_file("estimator"),
        chunks=npe_set_chunks("coverage") if "coverage" in NPE_SETS else [],
    output:
        posteriors=subset_file("posteriors_coverage"),
        coverage=subset_file("coverage"),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_coverage_subset", "{compression}", "{fraction}"),
    benchmark:
        benchmark_file("npe_coverage_subset", "{compression}", "{fraction}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        TORCH_ENV
    shell:
        "(bmodesep npe npe_posterior --config {params.config} --estimator {input.estimator} "
        "--chunks {input.chunks} --output {output.posteriors} && "
        "bmodesep npe npe_coverage --config {params.config} --posteriors {output.posteriors} "
        "--output {output.coverage}) > {log} 2>&1"


rule npe_ps_likelihood:
    input:
        chunks=npe_wildcard_set_chunks,
        spectra=spectra_file(),
    output:
        ps_likelihood_file(),
    params:
        config=npe_likelihood_stage_config,
    log:
        log_file("npe_ps_likelihood", "{set}"),
    benchmark:
        benchmark_file("npe_ps_likelihood", "{set}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    conda:
        SIM_ENV
    shell:
        "bmodesep npe npe_ps_likelihood --config {params.config} --chunks {input.chunks} "
        "--spectra {input.spectra} --output {output} > {log} 2>&1"


rule npe_ps_observed:
    input:
        signal=signal_file(),
        noise=noise_file(),
        spectra=spectra_file(),
    output:
        ps_observed_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_ps_observed", "{sim}"),
    benchmark:
        benchmark_file("npe_ps_observed", "{sim}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        SIM_ENV
    shell:
        "bmodesep npe npe_ps_observed --config {params.config} --signal {input.signal} "
        "--noise {input.noise} --spectra {input.spectra} --simulation {wildcards.sim} "
        "--output {output} > {log} 2>&1"


rule npe_predictive:
    input:
        posteriors=posterior_file(),
        spectra=spectra_file(),
    output:
        predictive_file(),
    params:
        config=npe_stage_config,
    log:
        log_file("npe_predictive", "{compression}", "{set}"),
    benchmark:
        benchmark_file("npe_predictive", "{compression}", "{set}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        TORCH_ENV
    shell:
        "bmodesep npe npe_predictive --config {params.config} --posteriors {input.posteriors} "
        "--spectra {input.spectra} --output {output} > {log} 2>&1"


rule npe_all:
    input:
        rules.npe_simulations.input,
        [estimator_file(c) for c in NPE_COMPRESSIONS],
        [coverage_file(c) for c in NPE_COMPRESSIONS if "coverage" in NPE_SETS],
        npe_figure_targets(),
        [ps_observed_file(s) for s in NPE["observed"] if NPE["ps_likelihood"]["observed"]],
