# Needlet / harmonic ILC compression (duivenvoorden2025 sec. II.3; bmodesep/stages/nilc.py)
# per simulation and compression.


rule nilc_compress:
    input:
        unpack(nilc_inputs),
    output:
        nilc_file(),
    params:
        config=nilc_config,
        masks=nilc_mask_arg,
    log:
        log_file("nilc", "{sim}", "{compression}"),
    benchmark:
        benchmark_file("nilc", "{sim}", "{compression}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        SIM_ENV
    shell:
        "bmodesep nilc nilc_compress --config {params.config} --simulation {wildcards.sim} "
        "--compression {wildcards.compression} --signal {input.signal} --noise {input.noise} "
        "{params.masks} --output {output} > {log} 2>&1"


rule nilc_all:
    input:
        [nilc_file(s, c) for s in NILC["simulations"] for c in NILC["run"]],
