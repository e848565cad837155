# Simulation-based inference (duivenvoorden2025): the simulation campaign in chunks.


rule npe_chunk:
    input:
        spectra=SPECTRA,
    output:
        f"{NPE_DIR}/simulations/chunk{{chunk}}.h5",
    params:
        config=npe_config_json,
    log:
        f"{LOGS}/npe_chunk/{{chunk}}.log",
    benchmark:
        f"{BENCHMARKS}/npe_chunk/{{chunk}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../envs/bmodesep.yaml"
    shell:
        "python -m bmodesep.campaign --config-json {params.config:q} --spectra {input.spectra} "
        "--chunk {wildcards.chunk} --output {output} > {log} 2>&1"


rule npe_simulations:
    input:
        expand(f"{NPE_DIR}/simulations/chunk{{chunk}}.h5", chunk=range(NPE["chunks"])),
