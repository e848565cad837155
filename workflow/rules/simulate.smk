# Simulation stage (bmodesep/stages/simulate.py): CAMB spectra -> sky -> masks, frequency
# maps, noise realisations.  A true-patch sky with K-means patches is drawn after its
# masks instead (masks -> true_patches -> sky), which is why those masks must not depend
# on the sky (masks.source latitude or planck; the config check says so).


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


rule true_patches:
    input:
        masks=masks_file(),
    output:
        true_patch_file(),
    params:
        config=simulation_stage_config,
    log:
        log_file("true_patches", "{sim}"),
    benchmark:
        benchmark_file("true_patches", "{sim}")
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        JAX_ENV
    shell:
        "bmodesep simulate true_patches --config {params.config} --simulation {wildcards.sim} "
        "--masks {input.masks} --output {output} > {log} 2>&1"


rule sky:
    input:
        unpack(sky_inputs),
    output:
        sky_file(),
    params:
        config=simulation_stage_config,
        inputs=sky_args,
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
        "{params.inputs} --output {output} > {log} 2>&1"


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
        unpack(frequency_maps_inputs),
    output:
        signal_file(),
    params:
        config=simulation_stage_config,
        inputs=frequency_maps_args,
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
        "{params.inputs} --threads {threads} --output {output} > {log} 2>&1"


rule noise:
    input:
        unpack(noise_inputs),
    output:
        noise_file(),
    params:
        config=simulation_stage_config,
        inputs=noise_args,
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
        "{params.inputs} --threads {threads} --output {output} > {log} 2>&1"


rule simulate_all:
    input:
        [f(s) for s in SIMULATIONS for f in (masks_file, signal_file, noise_file)],
        [sky_file(s) for s in SIMULATIONS if has_sky(s)],
