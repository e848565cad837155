# Component separation (kabalan2025): K-means patches -> grid-search chunks -> selection
# -> fits of the selected K-means, multi-resolution and single-patch configurations.


rule kmeans_patches:
    input:
        masks=f"{RESULTS}/sims/{{sim}}/masks.h5",
    output:
        expand(
            f"{COMPSEP_DIR}/{{sim}}/patches/{{zone}}/kmeans_K{{k}}_seed{{seed}}.h5",
            k=KMEANS_COUNTS,
            seed=COMPSEP["kmeans_seed"],
            allow_missing=True,
        ),
    params:
        config=compsep_config_json,
        directory=patches_dir,
    log:
        f"{LOGS}/kmeans_patches/{{sim}}_{{zone}}.log",
    benchmark:
        f"{BENCHMARKS}/kmeans_patches/{{sim}}_{{zone}}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        JAX_ENV
    shell:
        "python -m bmodesep.separate patches --config-json {params.config:q} "
        "--simulation {wildcards.sim} --zone {wildcards.zone} --masks {input.masks} "
        "--output-dir {params.directory} > {log} 2>&1"


rule grid_chunk:
    input:
        masks=f"{RESULTS}/sims/{{sim}}/masks.h5",
        signal=f"{RESULTS}/sims/{{sim}}/signal.h5",
        sky=f"{RESULTS}/sims/{{sim}}/sky.h5",
        patches=kmeans_patch_files,
    output:
        f"{COMPSEP_DIR}/{{sim}}/grid/{{zone}}/chunk{{chunk}}.h5",
    params:
        config=compsep_config_json,
        directory=patches_dir,
    log:
        f"{LOGS}/grid_chunk/{{sim}}_{{zone}}_{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/grid_chunk/{{sim}}_{{zone}}_{{chunk}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 120 * attempt,  # a retry resumes, with more time
        gpu=0,  # profiles set it; a chunk spreads its realisations over all its GPUs
    conda:
        JAX_ENV
    shell:
        "python -m bmodesep.separate chunk --config-json {params.config:q} "
        "--simulation {wildcards.sim} --zone {wildcards.zone} --chunk {wildcards.chunk} "
        "--masks {input.masks} --signal {input.signal} --patches-dir {params.directory} "
        "--sky {input.sky} --devices {resources.gpu} --output {output} > {log} 2>&1"


rule grid_select:
    input:
        chunks=grid_chunk_files,
        spectra=SPECTRA,
    output:
        f"{COMPSEP_DIR}/{{sim}}/grid/{{zone}}/selection.h5",
    params:
        config=compsep_config_json,
    log:
        f"{LOGS}/grid_select/{{sim}}_{{zone}}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        JAX_ENV
    shell:
        "python -m bmodesep.separate select --config-json {params.config:q} "
        "--simulation {wildcards.sim} --zone {wildcards.zone} --chunks {input.chunks} "
        "--spectra {input.spectra} --output {output} > {log} 2>&1"


rule compsep_fit:
    input:
        unpack(compsep_fit_inputs),
    output:
        f"{COMPSEP_DIR}/{{sim}}/{{zone}}/{{method}}.h5",
    params:
        config=compsep_config_json,
        extra=compsep_fit_extra_args,
    log:
        f"{LOGS}/compsep_fit/{{sim}}_{{zone}}_{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/compsep_fit/{{sim}}_{{zone}}_{{method}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=0,
    conda:
        JAX_ENV
    shell:
        "python -m bmodesep.separate fit --config-json {params.config:q} "
        "--simulation {wildcards.sim} --zone {wildcards.zone} --method {wildcards.method} "
        "--masks {input.masks} --signal {input.signal} {params.extra} "
        "--devices {resources.gpu} --output {output} > {log} 2>&1"


rule compsep_all:
    input:
        expand(
            f"{COMPSEP_DIR}/{{sim}}/{{zone}}/{{method}}.h5",
            sim=COMPSEP_SIMULATIONS,
            zone=COMPSEP_ZONES,
            method=COMPSEP_METHODS,
        ),
