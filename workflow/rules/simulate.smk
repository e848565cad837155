# Simulation stage (bmodesep/stages/simulate.py): CAMB spectra -> sky -> masks, frequency
# maps, noise realisations.


rule camb_spectra:
    output:
        spectra_file(),
    params:
        config=cmb_config,
    log:
        log_file("camb_spectra"),
    benchmark:
        benchmark_file("camb_spectra")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "bmodesep simulate camb_spectra --config {params.config} --output {output} > {log} 2>&1"


rule sky:
    input:
        spectra=spectra_file(),
    output:
        sky_file(),
    params:
        config=simulation_stage_config,
    log:
        log_file("sky", "{sim}"),
    benchmark:
        benchmark_file("sky", "{sim}")
    threads: 1
    resources:
        mem_mb=signal_mem_mb,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "bmodesep simulate sky --config {params.config} --simulation {wildcards.sim} "
        "--spectra {input.spectra} --output {output} > {log} 2>&1"


rule masks:
    input:
        unpack(masks_inputs),
    output:
        masks_file(),
    params:
        config=simulation_stage_config,
        inputs=masks_args,
    log:
        log_file("masks", "{sim}"),
    benchmark:
        benchmark_file("masks", "{sim}")
    threads: 1
    resources:
        mem_mb=signal_mem_mb,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "bmodesep simulate masks --config {params.config} --simulation {wildcards.sim} "
        "{params.inputs} --output {output} > {log} 2>&1"


rule frequency_maps:
    input:
        sky=sky_file(),
    output:
        signal_file(),
    params:
        config=simulation_stage_config,
    log:
        log_file("frequency_maps", "{sim}"),
    benchmark:
        benchmark_file("frequency_maps", "{sim}")
    threads: 1
    resources:
        mem_mb=signal_mem_mb,
        runtime=20,
    conda:
        SIM_ENV
    shell:
        "bmodesep simulate frequency_maps --config {params.config} --simulation {wildcards.sim} "
        "--sky {input.sky} --threads {threads} --output {output} > {log} 2>&1"


rule noise:
    output:
        noise_file(),
    params:
        config=simulation_stage_config,
    log:
        log_file("noise", "{sim}"),
    benchmark:
        benchmark_file("noise", "{sim}")
    threads: 1
    resources:
        mem_mb=noise_mem_mb,
        runtime=30,
    conda:
        SIM_ENV
    shell:
        "bmodesep simulate noise --config {params.config} --simulation {wildcards.sim} "
        "--threads {threads} --output {output} > {log} 2>&1"


rule simulate_all:
    input:
        [f(s) for s in SIMULATIONS for f in (sky_file, masks_file, signal_file, noise_file)],
