# Component separation (kabalan2025; bmodesep/stages/compsep.py): K-means patches ->
# grid-search chunks -> selection -> fits of the selected K-means, multi-resolution and
# single-patch configurations.  A screened search (compsep.grid.search: screened) runs
# pass 1 (grid_screen_chunk: noiseless fits and predictions), grid_screen (the
# candidates), then the grid chunks over the candidates only.
#
# Every job covers all zones of its simulation (products stay one per zone): a JAX job's
# start-up (imports, tracing, compilation) is most of a small fit's cost, so it is paid
# once per simulation, chunk or method rather than once per zone (issue 28 item 4).


rule kmeans_patches:
    input:
        masks=masks_file(),
    output:
        [patch_file(zone=z, k=k) for z in COMPSEP_ZONES for k in KMEANS_COUNTS],
    params:
        config=compsep_config,
        zones=ZONE_ARGS,
    log:
        log_file("kmeans_patches", "{sim}"),
    benchmark:
        benchmark_file("kmeans_patches", "{sim}")
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30 * len(COMPSEP_ZONES),
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep kmeans_patches --config {params.config} --simulation {wildcards.sim} "
        "--zone {params.zones} --masks {input.masks} --outputs {output} > {log} 2>&1"


rule grid_screen_chunk:
    input:
        masks=masks_file(),
        signal=signal_file(),
        sky=sky_file(),
        patches=kmeans_patch_files,
        noise=compsep_noise,
    output:
        [screen_chunk_file(zone=z) for z in COMPSEP_ZONES],
    params:
        config=compsep_config,
        zones=ZONE_ARGS,
        noise=compsep_noise_arg,
    log:
        log_file("grid_screen_chunk", "{sim}", "{chunk}"),
    benchmark:
        benchmark_file("grid_screen_chunk", "{sim}", "{chunk}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=runtime_per_attempt(60 * len(COMPSEP_ZONES)),
        gpu=0,
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep grid_screen_chunk --config {params.config} --simulation "
        "{wildcards.sim} --zone {params.zones} --chunk {wildcards.chunk} --masks {input.masks} "
        "--signal {input.signal} --patches {input.patches} --sky {input.sky} {params.noise} "
        "--devices {resources.gpu} --output {output} > {log} 2>&1"


rule grid_screen:
    input:
        chunks=screen_chunk_files,
        spectra=spectra_file(),
    output:
        [screen_file(zone=z) for z in COMPSEP_ZONES],
    params:
        config=compsep_config,
        zones=ZONE_ARGS,
    log:
        log_file("grid_screen", "{sim}"),
    benchmark:
        benchmark_file("grid_screen", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep grid_screen --config {params.config} --simulation {wildcards.sim} "
        "--zone {params.zones} --chunks {input.chunks} --spectra {input.spectra} "
        "--output {output} > {log} 2>&1"


rule grid_chunk:
    input:
        masks=masks_file(),
        signal=signal_file(),
        sky=sky_file(),
        patches=kmeans_patch_files,
        screen=grid_screens,
        noise=compsep_noise,
    output:
        [grid_chunk_file(zone=z) for z in COMPSEP_ZONES],
    params:
        config=compsep_config,
        zones=ZONE_ARGS,
        screen=screen_arg,
        noise=compsep_noise_arg,
    log:
        log_file("grid_chunk", "{sim}", "{chunk}"),
    benchmark:
        benchmark_file("grid_chunk", "{sim}", "{chunk}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=runtime_per_attempt(120 * len(COMPSEP_ZONES)),  # a retry resumes, with more time
        gpu=0,  # profiles set it; a chunk spreads its realisations over all its GPUs
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep grid_chunk --config {params.config} --simulation {wildcards.sim} "
        "--zone {params.zones} --chunk {wildcards.chunk} --masks {input.masks} "
        "--signal {input.signal} --patches {input.patches} --sky {input.sky} {params.noise} "
        "--devices {resources.gpu} {params.screen} --output {output} > {log} 2>&1"


rule grid_select:
    input:
        chunks=grid_chunk_files,
        spectra=spectra_file(),
        screen=grid_screens,
    output:
        [selection_file(zone=z) for z in COMPSEP_ZONES],
    params:
        config=compsep_config,
        zones=ZONE_ARGS,
        screen=screen_arg,
    log:
        log_file("grid_select", "{sim}"),
    benchmark:
        benchmark_file("grid_select", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep grid_select --config {params.config} --simulation {wildcards.sim} "
        "--zone {params.zones} --chunks {input.chunks} --spectra {input.spectra} "
        "{params.screen} --output {output} > {log} 2>&1"


rule compsep_fit:
    input:
        unpack(compsep_fit_inputs),
    output:
        [fit_file(zone=z) for z in COMPSEP_ZONES],
    params:
        config=compsep_config,
        zones=ZONE_ARGS,
        kmeans=compsep_fit_args,
    log:
        log_file("compsep_fit", "{sim}", "{method}"),
    benchmark:
        benchmark_file("compsep_fit", "{sim}", "{method}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=runtime_per_attempt(60 * len(COMPSEP_ZONES)),
        gpu=0,
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep compsep_fit --config {params.config} --simulation {wildcards.sim} "
        "--zone {params.zones} --method {wildcards.method} --masks {input.masks} "
        "--signal {input.signal} {params.kmeans} --devices {resources.gpu} "
        "--output {output} > {log} 2>&1"


rule compsep_all:
    input:
        [
            fit_file(s, z, m)
            for s in COMPSEP_SIMULATIONS
            for z in COMPSEP_ZONES
            for m in COMPSEP_METHODS
        ],


rule recovery:
    input:
        selections=zone_selections,
        spectra=spectra_file(),
    output:
        recovery_file(),
    params:
        config=compsep_config,
    log:
        log_file("recovery", "{sim}"),
    benchmark:
        benchmark_file("recovery", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep recovery --config {params.config} --simulation {wildcards.sim} "
        "--selections {input.selections} --spectra {input.spectra} --output {output} "
        "> {log} 2>&1"


rule selection_rules:
    input:
        selections=zone_selections,
        spectra=spectra_file(),
    output:
        compsep_figure("selection_rules", ext="csv"),
    params:
        config=compsep_config,
    log:
        log_file("selection_rules", "{sim}"),
    benchmark:
        benchmark_file("selection_rules", "{sim}")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        JAX_ENV
    shell:
        "bmodesep compsep selection_rules --config {params.config} --simulation "
        "{wildcards.sim} --selections {input.selections} --spectra {input.spectra} "
        "--output {output} > {log} 2>&1"

