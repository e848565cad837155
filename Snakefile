# bmodesep: CMB B-mode foreground cleaning and r inference.
#   snakemake --profile profiles/local                      (default config, all stages)
#   snakemake --profile profiles/local --configfile config/paper1.yaml
#   snakemake --profile profiles/local simulate_all         (one stage)
#   snakemake --profile profiles/slurm --configfile config/paper1.yaml   (SLURM; README)
import os

from snakemake.utils import min_version, validate

min_version("9.0")


# The small default, unless config files are given with --configfile (which would
# otherwise be merged into it, mixing the default's simulations into a paper run).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")
# envs/install-bmodesep.sh installs this checkout into each conda environment (--sdm conda)
os.environ.update(BMODESEP_SOURCE=workflow.basedir)  # set, not read: no envvars directive


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/compsep.smk"
include: "workflow/rules/rlike.smk"
include: "workflow/rules/nilc.smk"
include: "workflow/rules/npe.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        rules.simulate_all.input,
        rules.compsep_all.input,
        rules.rlike_all.input,
        rules.nilc_all.input,
        rules.npe_all.input,
        rules.figures.input,
