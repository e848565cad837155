# Standard outputs (bmodesep/stages/export.py): each component-separation method's maps of
# every zone of a simulation, and each NILC compression's component B maps, as HEALPix
# FITS files next to their HDF5 products.


rule export_maps:
    input:
        fits=method_fits,
    output:
        [export_file(what=w) for w in EXPORTS],
    params:
        config=compsep_config,
    log:
        log_file("export_maps", "{sim}", "{method}"),
    benchmark:
        benchmark_file("export_maps", "{sim}", "{method}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "bmodesep export export_maps --config {params.config} --simulation {wildcards.sim} "
        "--method {wildcards.method} --fits {input.fits} --outputs {output} > {log} 2>&1"


rule export_nilc:
    input:
        nilc=nilc_file(),
    output:
        nilc_export_file(),
    params:
        config=nilc_config,
    log:
        log_file("export_nilc", "{sim}", "{compression}"),
    benchmark:
        benchmark_file("export_nilc", "{sim}", "{compression}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        SIM_ENV
    shell:
        "bmodesep export export_nilc --config {params.config} --simulation {wildcards.sim} "
        "--compression {wildcards.compression} --nilc {input.nilc} --output {output} "
        "> {log} 2>&1"


rule export_all:
    input:
        [export_file(s, m, w) for s in COMPSEP_SIMULATIONS for m in COMPSEP_METHODS for w in EXPORTS],
        [nilc_export_file(s, c) for s in NILC["simulations"] for c in NILC["run"]],
