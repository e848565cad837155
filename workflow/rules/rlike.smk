# Residual BB spectra and the r likelihood (kabalan2025 sec. 4) per simulation and method.


rule r_likelihood:
    input:
        sky=f"{RESULTS}/sims/{{sim}}/sky.h5",
        spectra=SPECTRA,
        fits=method_fits,
    output:
        f"{RESULTS}/rlike/{{sim}}/{{method}}.h5",
    params:
        config=compsep_config_json,
    log:
        f"{LOGS}/r_likelihood/{{sim}}_{{method}}.log",
    benchmark:
        f"{BENCHMARKS}/r_likelihood/{{sim}}_{{method}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        SIM_ENV
    shell:
        "python -m bmodesep.estimate_r --config-json {params.config:q} "
        "--simulation {wildcards.sim} --method {wildcards.method} --sky {input.sky} "
        "--spectra {input.spectra} --fits {input.fits} --output {output} > {log} 2>&1"


rule rlike_all:
    input:
        expand(
            f"{RESULTS}/rlike/{{sim}}/{{method}}.h5",
            sim=COMPSEP_SIMULATIONS,
            method=COMPSEP_METHODS,
        ),
