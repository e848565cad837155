# Helpers shared by all rules: paths, stage configs passed to the commands, constraints.
import json
from pathlib import Path

from bmodesep.config import check_consistency, compsep_methods, simulation_config, simulation_lmax
from bmodesep.campaign import npe_config, simulation_sets
from bmodesep.errors import ConfigError

try:
    check_consistency(config, "workflow config")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
if not config["simulations"]:
    raise WorkflowError("the config defines no simulations")

RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
SIMULATIONS = list(config["simulations"])
SPECTRA = f"{RESULTS}/spectra/camb.h5"

# Conda environments per rule family (used with --sdm conda; see envs/ and README).
ENVS = Path(workflow.basedir) / "envs"
SIM_ENV = str(ENVS / "simulation.yaml")
JAX_ENV = str(ENVS / f"jax-{config['accelerator']}.yaml")
TORCH_ENV = str(ENVS / "torch-sbi.yaml")
PLOT_ENV = str(ENVS / "plotting.yaml")


wildcard_constraints:
    sim="|".join(SIMULATIONS),


def cmb_config_json(wildcards):
    """The CMB spectra depend on the cmb section alone."""
    return json.dumps({"cmb": config["cmb"]}, sort_keys=True)


def simulation_config_json(wildcards):
    """The resolved config restricted to one simulation (its sky, instrument, masks)."""
    return json.dumps(simulation_config(config, wildcards.sim), sort_keys=True)


def compsep_config_json(wildcards):
    """The simulation's config plus the component-separation settings."""
    return json.dumps(simulation_config(config, wildcards.sim, with_compsep=True), sort_keys=True)


def npix(wildcards):
    return 12 * config["simulations"][wildcards.sim]["nside"] ** 2


def noise_mem_mb(wildcards):
    """Memory of the noise job: all realisations of all splits and bands held at once."""
    from bmodesep.instrument import resolve_instrument

    sim = config["simulations"][wildcards.sim]
    inst = resolve_instrument(config, sim["instrument"])
    per_map = 8 * npix(wildcards) * (3 if inst.b_maps else 2)
    total = per_map * inst.n_freq * inst.splits * max(sim["noise_realisations"], 1)
    return 1000 + 3 * total // 1_000_000


def signal_mem_mb(wildcards):
    return 1000 + 40 * 8 * npix(wildcards) * 20 // 1_000_000


def masks_inputs(wildcards):
    inputs = {"sky": f"{RESULTS}/sims/{wildcards.sim}/sky.h5"}
    if config["masks"]["source"] == "planck":
        inputs["planck"] = config["masks"]["planck_file"]
    return inputs


# ---------------------------------------------------------------- component separation
COMPSEP = config["compsep"]
COMPSEP_SIMULATIONS = COMPSEP["simulations"]
COMPSEP_ZONES = COMPSEP["zones"]
COMPSEP_METHODS = compsep_methods(config)
KMEANS_COUNTS = sorted(set().union(*(COMPSEP["grid"][p] for p in ("beta_d", "temperature_d", "beta_s"))))
GRID_CHUNKS = list(range(COMPSEP["chunks"]))
COMPSEP_DIR = f"{RESULTS}/compsep"


wildcard_constraints:
    zone="GAL0[246]0_[UL]",
    method="kmeans|single|multires(_[a-z0-9]+)?",
    chunk=r"\d+",


def patches_dir(wildcards):
    return f"{COMPSEP_DIR}/{wildcards.sim}/patches/{wildcards.zone}"


def kmeans_patch_files(wildcards):
    return expand(
        "{dir}/kmeans_K{k}_seed{seed}.h5",
        dir=patches_dir(wildcards),
        k=KMEANS_COUNTS,
        seed=COMPSEP["kmeans_seed"],
    )


def grid_chunk_files(wildcards):
    return expand(
        "{dir}/{sim}/grid/{zone}/chunk{chunk}.h5",
        dir=COMPSEP_DIR,
        sim=wildcards.sim,
        zone=wildcards.zone,
        chunk=GRID_CHUNKS,
    )


def compsep_fit_inputs(wildcards):
    inputs = {
        "masks": f"{RESULTS}/sims/{wildcards.sim}/masks.h5",
        "signal": f"{RESULTS}/sims/{wildcards.sim}/signal.h5",
    }
    if wildcards.method == "kmeans":
        inputs["selection"] = f"{COMPSEP_DIR}/{wildcards.sim}/grid/{wildcards.zone}/selection.h5"
        inputs["patches"] = kmeans_patch_files(wildcards)
    return inputs


def compsep_fit_extra_args(wildcards, input):
    if wildcards.method != "kmeans":
        return ""
    return f"--patches-dir {patches_dir(wildcards)} --selection {input.selection}"


def method_fits(wildcards):
    return expand(
        "{dir}/{sim}/{zone}/{method}.h5",
        dir=COMPSEP_DIR,
        sim=wildcards.sim,
        zone=COMPSEP_ZONES,
        method=wildcards.method,
    )


FIGURES = f"{RESULTS}/figures"


def all_method_fits(wildcards):
    return expand(
        "{dir}/{sim}/{zone}/{method}.h5",
        dir=COMPSEP_DIR,
        sim=wildcards.sim,
        zone=COMPSEP_ZONES,
        method=COMPSEP_METHODS,
    )


def zone_method_fits(wildcards):
    return expand(
        "{dir}/{sim}/{zone}/{method}.h5",
        dir=COMPSEP_DIR,
        sim=wildcards.sim,
        zone=wildcards.zone,
        method=COMPSEP_METHODS,
    )


def method_r_likelihoods(wildcards):
    return expand(
        "{dir}/rlike/{sim}/{method}.h5", dir=RESULTS, sim=wildcards.sim, method=COMPSEP_METHODS
    )


def simulation_nside(wildcards):
    return config["simulations"][wildcards.sim]["nside"]


# ---------------------------------------------------------------- needlet ILC
NILC = config["nilc"]
NILC_DIR = f"{RESULTS}/nilc"


wildcard_constraints:
    compression="[a-z0-9_]+",


def nilc_config_json(wildcards):
    """The simulation's config plus the NILC settings."""
    return json.dumps(simulation_config(config, wildcards.sim, with_nilc=True), sort_keys=True)


def nilc_inputs(wildcards):
    inputs = {
        "signal": f"{RESULTS}/sims/{wildcards.sim}/signal.h5",
        "noise": f"{RESULTS}/sims/{wildcards.sim}/noise.h5",
    }
    if NILC["mask"] is not None:
        inputs["masks"] = f"{RESULTS}/sims/{wildcards.sim}/masks.h5"
    return inputs


def nilc_mask_arg(wildcards, input):
    return f"--masks {input.masks}" if NILC["mask"] is not None else ""


# ---------------------------------------------------------------- SBI campaign
NPE = config["npe"]
NPE_DIR = f"{RESULTS}/npe"


NPE_SETS = simulation_sets(config) if NPE["chunks"] else {}
NPE_COMPRESSIONS = NPE["compressions"] if NPE["chunks"] else []
NPE_TEST_SETS = [s for s in NPE_SETS if s != "train"]


wildcard_constraints:
    set="[A-Za-z0-9_]+",
    chunk="[0-9]+",


def npe_config_json(wildcards):
    """The SBI stages depend on the cmb, npe, its instrument and its compressions alone
    (``observed`` names simulations, which are not passed on)."""
    npe = {k: v for k, v in NPE.items() if k != "observed"}
    return json.dumps(npe_config(config) | {"npe": npe}, sort_keys=True)


def npe_set_chunks(name):
    return [f"{NPE_DIR}/simulations/{name}/chunk{i}.h5" for i in range(NPE_SETS[name].chunks)]


def npe_training_inputs(wildcards):
    inputs = {"chunks": npe_set_chunks("train")}
    if NPE["tune"]["trials"]:
        inputs["tuning"] = f"{NPE_DIR}/{wildcards.compression}/tuning.h5"
    return inputs


def npe_tuning_arg(wildcards, input):
    return f"--tuning {input.tuning}" if NPE["tune"]["trials"] else ""


def npe_figure_targets():
    """The duivenvoorden2025 figures and the summary table of the configured SBI run."""
    if not NPE_COMPRESSIONS or not NPE_TEST_SETS:
        return []
    out = [f"{FIGURES}/npe/summary.csv"]
    for c in NPE_COMPRESSIONS:
        if "coverage" in NPE_SETS:
            out.append(f"{FIGURES}/npe/{c}/tarp.png")
        out += [f"{FIGURES}/npe/{c}/corner_{s}.png" for s in NPE_TEST_SETS if s != "coverage"]
        if NPE["observed"]:
            out += [f"{FIGURES}/npe/{c}/corner_observed.png", f"{FIGURES}/npe/{c}/predictive.png"]
    for s in NPE_TEST_SETS:
        if s != "coverage":
            out += [f"{FIGURES}/npe/r_vs_sigma_beta_{s}.png", f"{FIGURES}/npe/sigma_r_{s}.png"]
    return out
