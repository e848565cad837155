# Needlet / harmonic ILC compression (duivenvoorden2025 sec. II.3) per simulation and compression.


rule nilc:
    input:
        unpack(nilc_inputs),
    output:
        f"{NILC_DIR}/{{sim}}/{{compression}}.h5",
    params:
        config=nilc_config_json,
        masks=nilc_mask_arg,
    log:
        f"{LOGS}/nilc/{{sim}}_{{compression}}.log",
    benchmark:
        f"{BENCHMARKS}/nilc/{{sim}}_{{compression}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.nilc --config-json {params.config:q} --simulation {wildcards.sim} "
        "--compression {wildcards.compression} --signal {input.signal} --noise {input.noise} "
        "{params.masks} --output {output} > {log} 2>&1"


rule nilc_all:
    input:
        expand(
            f"{NILC_DIR}/{{sim}}/{{compression}}.h5",
            sim=NILC["simulations"],
            compression=NILC["run"],
        ),
