# Simulation stage: CAMB spectra -> sky -> masks, frequency maps, noise realisations.


rule camb_spectra:
    output:
        SPECTRA,
    params:
        config=cmb_config_json,
    log:
        f"{LOGS}/camb_spectra.log",
    benchmark:
        f"{BENCHMARKS}/camb_spectra.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.simulate spectra --config-json {params.config:q} "
        "--output {output} > {log} 2>&1"


rule sky:
    input:
        spectra=SPECTRA,
    output:
        f"{RESULTS}/sims/{{sim}}/sky.h5",
    params:
        config=simulation_config_json,
    log:
        f"{LOGS}/sky/{{sim}}.log",
    benchmark:
        f"{BENCHMARKS}/sky/{{sim}}.tsv"
    threads: 1
    resources:
        mem_mb=signal_mem_mb,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.simulate sky --config-json {params.config:q} "
        "--simulation {wildcards.sim} --spectra {input.spectra} --output {output} > {log} 2>&1"


rule masks:
    input:
        unpack(masks_inputs),
    output:
        f"{RESULTS}/sims/{{sim}}/masks.h5",
    params:
        config=simulation_config_json,
    log:
        f"{LOGS}/masks/{{sim}}.log",
    benchmark:
        f"{BENCHMARKS}/masks/{{sim}}.tsv"
    threads: 1
    resources:
        mem_mb=signal_mem_mb,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.simulate masks --config-json {params.config:q} "
        "--simulation {wildcards.sim} --sky {input.sky} --output {output} > {log} 2>&1"


rule frequency_maps:
    input:
        sky=f"{RESULTS}/sims/{{sim}}/sky.h5",
    output:
        f"{RESULTS}/sims/{{sim}}/signal.h5",
    params:
        config=simulation_config_json,
    log:
        f"{LOGS}/frequency_maps/{{sim}}.log",
    benchmark:
        f"{BENCHMARKS}/frequency_maps/{{sim}}.tsv"
    threads: 1
    resources:
        mem_mb=signal_mem_mb,
        runtime=20,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.simulate signal --config-json {params.config:q} "
        "--simulation {wildcards.sim} --sky {input.sky} --threads {threads} "
        "--output {output} > {log} 2>&1"


rule noise:
    output:
        f"{RESULTS}/sims/{{sim}}/noise.h5",
    params:
        config=simulation_config_json,
    log:
        f"{LOGS}/noise/{{sim}}.log",
    benchmark:
        f"{BENCHMARKS}/noise/{{sim}}.tsv"
    threads: 1
    resources:
        mem_mb=noise_mem_mb,
        runtime=30,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.simulate noise --config-json {params.config:q} "
        "--simulation {wildcards.sim} --threads {threads} --output {output} > {log} 2>&1"


rule simulate_all:
    input:
        expand(
            f"{RESULTS}/sims/{{sim}}/{{product}}.h5",
            sim=SIMULATIONS,
            product=["sky", "masks", "signal", "noise"],
        ),
