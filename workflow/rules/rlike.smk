# Residual BB spectra and the r likelihood (kabalan2025 sec. 4; bmodesep/stages/rlike.py)
# per simulation and method.


rule r_likelihood:
    input:
        unpack(rlike_inputs),
    output:
        rlike_file(),
    params:
        config=compsep_config,
        sky=rlike_sky_arg,
    log:
        log_file("r_likelihood", "{sim}", "{method}"),
    benchmark:
        benchmark_file("r_likelihood", "{sim}", "{method}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        SIM_ENV
    shell:
        "bmodesep rlike r_likelihood --config {params.config} --simulation {wildcards.sim} "
        "--method {wildcards.method} {params.sky} --spectra {input.spectra} "
        "--fits {input.fits} --output {output} > {log} 2>&1"


rule rlike_all:
    input:
        [rlike_file(s, m) for s in COMPSEP_SIMULATIONS for m in COMPSEP_METHODS],
