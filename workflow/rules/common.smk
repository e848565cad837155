# Shared by all rules: one path helper per product (the only place a file name is spelled),
# the stage configs handed to the jobs (content-addressed files), wildcard constraints.
#
# A path helper called without arguments gives the wildcard pattern (for output:), called
# with values the concrete path (for input functions and targets).
import hashlib
import json
import math
import os
import re
from pathlib import Path

from bmodesep.config import compsep_methods, npe_config, npe_set_config, simulation_config
from bmodesep.core.maps import band_paths, noise_paths, observation_paths
from bmodesep.core.npe.sets import subset_chunks
from bmodesep.core.simulate.masks import ZONE_NAMES
from bmodesep.products.fits import EXPORTS
from bmodesep.settings import kmeans_counts, resolve_instrument, simulation_sets

if not config["simulations"]:
    raise WorkflowError("the config defines no simulations")

RESULTS = config["results_dir"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
CONFIGS = f"{RESULTS}/configs"
FIGURES = f"{RESULTS}/figures"
SIMULATIONS = list(config["simulations"])

# Conda environments per rule family (used with --sdm conda; see workflow/envs/ and docs/slurm.md).
ENVS = Path(workflow.basedir) / "envs"
SIM_ENV = str(ENVS / "simulation.yaml")
JAX_ENV = str(ENVS / f"jax-{config['accelerator']}.yaml")
TORCH_ENV = str(ENVS / "torch-sbi.yaml")
PLOT_ENV = str(ENVS / "plotting.yaml")

COMPSEP = config["compsep"]
COMPSEP_SIMULATIONS = COMPSEP["simulations"]
COMPSEP_ZONES = COMPSEP["zones"]
COMPSEP_METHODS = compsep_methods(config)
KMEANS_COUNTS = kmeans_counts(COMPSEP)
KMEANS_SEED = COMPSEP["kmeans_seed"]
GRID_CHUNKS = list(range(COMPSEP["chunks"]))
SCREENED = COMPSEP["grid"]["search"] == "screened"

NILC = config["nilc"]

NPE = config["npe"]
NPE_SETS = simulation_sets(config) if NPE["chunks"] else {}
NPE_COMPRESSIONS = NPE["compressions"] if NPE["chunks"] else []
NPE_TEST_SETS = [s for s in NPE_SETS if s != "train"]
NPE_FIXED_SETS = [s for s, v in NPE_SETS.items() if v.foreground is not None]
NPE_PS_SETS = NPE["ps_likelihood"]["sets"] if NPE_SETS else []
# Fig. 1: nested training subsets, named by their fraction ("0.1") -> number of chunks
NPE_SUBSETS = {
    f"{f:g}": subset_chunks(f, NPE["chunks"])
    for f in (NPE["training_fractions"] if NPE_SETS else [])
}


def one_of(names):
    """A wildcard constraint matching exactly the given names."""
    return "|".join(re.escape(str(n)) for n in names) or "(?!)"


wildcard_constraints:
    sim=one_of(SIMULATIONS),
    zone=one_of(ZONE_NAMES),
    method=one_of(COMPSEP_METHODS),
    compression=one_of(NILC["compressions"]),
    set=one_of(NPE_SETS),
    fraction=one_of(NPE_SUBSETS),
    chunk=r"\d+",
    k=r"\d+",
    seed=r"\d+",


# ---------------------------------------------------------------- product paths
def spectra_file():
    return f"{RESULTS}/spectra/camb.h5"


def sky_file(sim="{sim}"):
    return f"{RESULTS}/sims/{sim}/sky.h5"


def masks_file(sim="{sim}"):
    return f"{RESULTS}/sims/{sim}/masks.h5"


def true_patch_file(sim="{sim}"):
    return f"{RESULTS}/sims/{sim}/true_patches.h5"


def signal_file(sim="{sim}"):
    return f"{RESULTS}/sims/{sim}/signal.h5"


def noise_file(sim="{sim}"):
    return f"{RESULTS}/sims/{sim}/noise.h5"


def patch_file(sim="{sim}", zone="{zone}", k="{k}"):
    return f"{RESULTS}/compsep/{sim}/patches/{zone}/kmeans_K{k}_seed{KMEANS_SEED}.h5"


def grid_chunk_file(sim="{sim}", zone="{zone}", chunk="{chunk}"):
    return f"{RESULTS}/compsep/{sim}/grid/{zone}/chunk{chunk}.h5"


def screen_chunk_file(sim="{sim}", zone="{zone}", chunk="{chunk}"):
    return f"{RESULTS}/compsep/{sim}/grid/{zone}/screen_chunk{chunk}.h5"


def screen_file(sim="{sim}", zone="{zone}"):
    return f"{RESULTS}/compsep/{sim}/grid/{zone}/screen.h5"


def selection_file(sim="{sim}", zone="{zone}"):
    return f"{RESULTS}/compsep/{sim}/grid/{zone}/selection.h5"


def fit_file(sim="{sim}", zone="{zone}", method="{method}"):
    return f"{RESULTS}/compsep/{sim}/{zone}/{method}.h5"


def recovery_file(sim="{sim}"):
    return f"{RESULTS}/compsep/{sim}/recovery.csv"


def recovery_table_file():
    return f"{RESULTS}/recovery.csv"


def rlike_file(sim="{sim}", method="{method}"):
    return f"{RESULTS}/rlike/{sim}/{method}.h5"


def export_file(sim="{sim}", method="{method}", what="{what}"):
    """A method's maps as HEALPix FITS (what: one of EXPORTS)."""
    return f"{RESULTS}/compsep/{sim}/fits/{method}_{what}.fits"


def nilc_file(sim="{sim}", compression="{compression}"):
    return f"{RESULTS}/nilc/{sim}/{compression}.h5"


def nilc_export_file(sim="{sim}", compression="{compression}"):
    """A NILC compression's component B maps as HEALPix FITS."""
    return f"{RESULTS}/nilc/{sim}/fits/{compression}_b.fits"


def npe_chunk_file(set="{set}", chunk="{chunk}"):
    return f"{RESULTS}/npe/simulations/{set}/chunk{chunk}.h5"


def tuning_file(compression="{compression}"):
    return f"{RESULTS}/npe/{compression}/tuning.h5"


def estimator_file(compression="{compression}"):
    return f"{RESULTS}/npe/{compression}/estimator.h5"


def posterior_file(compression="{compression}", set="{set}"):
    return f"{RESULTS}/npe/{compression}/posteriors/{set}.h5"


def coverage_file(compression="{compression}"):
    return f"{RESULTS}/npe/{compression}/coverage.h5"


def observed_file(compression="{compression}", sim="{sim}"):
    return f"{RESULTS}/npe/{compression}/observed/{sim}.h5"


def compsep_figure(name, sim="{sim}", ext="png"):
    return f"{FIGURES}/{sim}/{name}.{ext}"


def predictive_file(compression="{compression}", set="{set}"):
    return f"{RESULTS}/npe/{compression}/predictive/{set}.h5"


def yardstick_file(compression="{compression}"):
    return f"{RESULTS}/npe/{compression}/yardstick.csv"


def subset_file(name, compression="{compression}", fraction="{fraction}"):
    return f"{RESULTS}/npe/{compression}/subsets/{fraction}/{name}.h5"


def subset_training_chunks(wildcards):
    return npe_set_chunks("train")[: NPE_SUBSETS[wildcards.fraction]]


def ps_likelihood_file(set="{set}"):
    return f"{RESULTS}/npe/ps_likelihood/posteriors/{set}.h5"


def ps_observed_file(sim="{sim}"):
    return f"{RESULTS}/npe/ps_likelihood/observed/{sim}.h5"


def npe_figure(name, compression=None):
    folder = f"{FIGURES}/npe" if compression is None else f"{FIGURES}/npe/{compression}"
    return f"{folder}/{name}"


def log_file(rule, *wildcards):
    return f"{LOGS}/{rule}/{'_'.join(wildcards) or rule}.log"


def benchmark_file(rule, *wildcards):
    return f"{BENCHMARKS}/{rule}/{'_'.join(wildcards) or rule}.tsv"


# ---------------------------------------------------------------- stage configs for the jobs
def stage_config_file(name, stage_config):
    """Write ``stage_config`` once to ``configs/<name>-<sha256 prefix>.json``; its path.

    The path is the job's ``params.config``: an edit of the config changes the hash, so
    Snakemake reruns exactly the jobs whose stage config changed, while the console shows
    a short path instead of the whole config.
    """
    text = json.dumps(stage_config, sort_keys=True, indent=1)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(CONFIGS) / f"{name}-{digest}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return str(path)


def cmb_config(wildcards):
    """The CMB spectra depend on the cmb section alone."""
    return stage_config_file("cmb", {"cmb": config["cmb"]})


def simulation_stage_config(wildcards):
    """The resolved config restricted to one simulation (its sky, instrument, masks)."""
    return stage_config_file(f"sim-{wildcards.sim}", simulation_config(config, wildcards.sim))


def compsep_config(wildcards):
    """The simulation's config plus the component-separation settings."""
    stage = simulation_config(config, wildcards.sim, with_compsep=True)
    return stage_config_file(f"compsep-{wildcards.sim}", stage)


def nilc_config(wildcards):
    """The simulation's config plus the NILC settings."""
    stage = simulation_config(config, wildcards.sim, with_nilc=True)
    return stage_config_file(f"nilc-{wildcards.sim}", stage)


def npe_set_stage_config(wildcards):
    """A simulation set's chunks depend on that set and the simulator's settings alone."""
    return stage_config_file(f"npe-{wildcards.set}", npe_set_config(config, wildcards.set))


def npe_likelihood_stage_config(wildcards):
    """The power-spectrum likelihood of a set: the simulator's settings, the likelihood's
    own and the number of posterior samples (not the estimator's training)."""
    cfg = npe_config(config)
    own = {"ps_likelihood": NPE["ps_likelihood"], "posterior_samples": NPE["posterior_samples"]}
    return stage_config_file("npe-likelihood", cfg | {"npe": cfg["npe"] | own})


def npe_stage_config(wildcards):
    """The SBI stages depend on the cmb, npe, its instrument and its compressions alone
    (``observed`` names simulations, which are not passed on)."""
    npe = {k: v for k, v in NPE.items() if k != "observed"}
    return stage_config_file("npe", npe_config(config) | {"npe": npe})


# ---------------------------------------------------------------- resources
def npix(wildcards):
    return 12 * config["simulations"][wildcards.sim]["nside"] ** 2


def noise_mem_mb(wildcards):
    """Memory of the noise job: all realisations of all splits and bands held at once."""
    sim = config["simulations"][wildcards.sim]
    inst = resolve_instrument(config, sim["instrument"])
    per_map = 8 * npix(wildcards) * (3 if inst.b_maps else 2)
    total = per_map * inst.n_freq * inst.splits * max(sim["noise_realisations"], 1)
    return 1000 + 3 * total // 1_000_000


def signal_mem_mb(wildcards):
    return 1000 + 40 * 8 * npix(wildcards) * 20 // 1_000_000


def simulation_nside(wildcards):
    return config["simulations"][wildcards.sim]["nside"]


def figure_args(step, **settings):
    """params.args of a figure rule: its step (named like the rule), ``--<input> FILES`` for
    each named input, then ``--<name> VALUE`` for each of the figure's own settings
    (functions of the wildcards); the command is ``bmodesep figures {params.args} --output
    {output}``."""

    def args(wildcards, input):
        words = [step]
        for name, files in input.items():
            files = [files] if isinstance(files, str) else list(files)
            words += [f"--{name.replace('_', '-')}", *map(str, files)]
        for name, value in settings.items():
            words += [f"--{name.replace('_', '-')}", str(value(wildcards))]
        return " ".join(words)

    return args


# ---------------------------------------------------------------- input functions
def user_maps(sim):
    """The maps key of a simulation whose sky is of kind maps (the user's FITS files), or None."""
    sky = config["skies"][config["simulations"][sim]["sky"]]
    return sky["maps"] if sky["kind"] == "maps" else None


def user_map_files(sim, key):
    """The user's file of each band (key total or foregrounds; [] if not given); of maps
    that contain their noise, of each split and band."""
    spec = user_maps(sim)
    if not spec or not spec[key]:
        return []
    inst = resolve_instrument(config, config["simulations"][sim]["instrument"])
    if key == "total" and spec["contains_noise"]:
        return observation_paths(spec[key], inst.frequencies_ghz, inst.splits)
    return band_paths(spec[key], inst.frequencies_ghz)


def contains_noise(sim):
    """Whether the simulation's maps are an observation that contains its noise."""
    spec = user_maps(sim)
    return bool(spec) and spec["contains_noise"]


def selection_source(sim):
    """The simulation whose grid-search selection the K-means fit of ``sim`` takes: its
    own, or for maps that contain their noise, compsep.selection_from's."""
    return COMPSEP["selection_from"].get(sim, sim)


def file_noise(sim):
    """Whether the simulation's noise comes from files (a maps sky: variance or simulations)."""
    spec = user_maps(sim)
    return bool(spec) and spec["noise"] != "instrument"


def noise_inputs(wildcards):
    spec = user_maps(wildcards.sim)
    if not file_noise(wildcards.sim):
        return {}
    signal = {"signal": signal_file(wildcards.sim)}  # the noise must cover what it observes
    if spec["noise"] == "variance":
        return signal | {"variance": user_map_files(wildcards.sim, "variance")}
    sim = config["simulations"][wildcards.sim]
    inst = resolve_instrument(config, sim["instrument"])
    files = noise_paths(
        spec["noise_simulations"], inst.frequencies_ghz, sim["noise_realisations"], inst.splits
    )
    return signal | {"noise_files": files}


def noise_args(wildcards, input):
    if not file_noise(wildcards.sim):
        return ""
    if "variance" in input.keys():
        return f"--signal {input.signal} --variance {input.variance}"
    files = f" --noise-files {input.noise_files}" if input.noise_files else ""
    return f"--signal {input.signal}{files}"


def compsep_noise(wildcards):
    """The noise product component separation reads: only where the noise is from files
    (otherwise each job regenerates its realisations from the seed)."""
    return [noise_file(wildcards.sim)] if file_noise(wildcards.sim) else []


def compsep_noise_arg(wildcards, input):
    return f"--noise {input.noise}" if input.noise else ""


def masks_inputs(wildcards):
    inputs = {"signal": signal_file(wildcards.sim)} if user_maps(wildcards.sim) else {}
    if config["masks"]["source"] == "planck":
        return inputs | {"planck": config["masks"]["planck_file"]}
    if config["masks"]["source"] == "latitude":
        return inputs
    return inputs | {"sky": sky_file(wildcards.sim)}


def masks_args(wildcards, input):
    args = f"--signal {input.signal} " if user_maps(wildcards.sim) else ""
    if config["masks"]["source"] == "planck":
        return args + f"--planck {input.planck}"
    if config["masks"]["source"] == "latitude":
        return args
    return args + f"--sky {input.sky}"


def frequency_maps_inputs(wildcards):
    if not user_maps(wildcards.sim):
        return {"sky": sky_file(wildcards.sim)}
    return {
        "total": user_map_files(wildcards.sim, "total"),
        "foregrounds": user_map_files(wildcards.sim, "foregrounds"),
    }


def frequency_maps_args(wildcards, input):
    if not user_maps(wildcards.sim):
        return f"--sky {input.sky}"
    fg = input.foregrounds
    return f"--total {input.total}" + (f" --foregrounds {fg}" if fg else "")


def has_kmeans_true_patches(sim):
    sky = config["skies"][config["simulations"][sim]["sky"]]
    patches = sky.get("patches", {}) if sky["kind"] == "true_patch" else {}
    return any("kmeans" in spec for spec in patches.values())


def sky_inputs(wildcards):
    spec = user_maps(wildcards.sim)
    if spec:
        return {"cmb": spec["cmb"]} if spec["cmb"] else {}
    inputs = {"spectra": spectra_file()}
    if has_kmeans_true_patches(wildcards.sim):
        inputs["patches"] = true_patch_file(wildcards.sim)
    return inputs


def sky_args(wildcards, input):
    if user_maps(wildcards.sim):
        return f"--cmb {input.cmb}" if "cmb" in input.keys() else ""
    args = f"--spectra {input.spectra}"
    return args + (f" --patches {input.patches}" if has_kmeans_true_patches(wildcards.sim) else "")


def has_sky(sim):
    """Whether the simulation has a sky product: every simulated sky; a maps sky with its CMB."""
    spec = user_maps(sim)
    return not spec or bool(spec["cmb"])


def validation_simulations():
    """The separated simulations whose skies have K-means true patches (sec. 5.1)."""
    return [s for s in COMPSEP_SIMULATIONS if has_kmeans_true_patches(s)]


# compsep jobs cover every zone of their simulation (workflow/rules/compsep.smk)
ZONE_ARGS = " ".join(COMPSEP_ZONES)


def kmeans_patch_files(wildcards):
    return [patch_file(wildcards.sim, z, k) for z in COMPSEP_ZONES for k in KMEANS_COUNTS]


def grid_chunk_files(wildcards):
    return [grid_chunk_file(wildcards.sim, z, c) for z in COMPSEP_ZONES for c in GRID_CHUNKS]


def screen_chunk_files(wildcards):
    return [screen_chunk_file(wildcards.sim, z, c) for z in COMPSEP_ZONES for c in GRID_CHUNKS]


def grid_screens(wildcards):
    """The zones' screens where the search is screened (compsep.grid.search), else none."""
    return [screen_file(wildcards.sim, z) for z in COMPSEP_ZONES] if SCREENED else []


def screen_arg(wildcards, input):
    return f"--screen {' '.join(input.screen)}" if input.screen else ""


def compsep_fit_inputs(wildcards):
    inputs = {"masks": masks_file(wildcards.sim), "signal": signal_file(wildcards.sim)}
    inputs["noise"] = compsep_noise(wildcards)
    if wildcards.method == "kmeans":
        source = selection_source(wildcards.sim)
        inputs["selection"] = [selection_file(source, z) for z in COMPSEP_ZONES]
        inputs["patches"] = kmeans_patch_files(wildcards)
    return inputs


def compsep_fit_args(wildcards, input):
    noise = compsep_noise_arg(wildcards, input)
    if wildcards.method != "kmeans":
        return noise
    kmeans = f"--patches {' '.join(input.patches)} --selection {' '.join(input.selection)}"
    return f"{kmeans} {noise}".strip()


def method_fits(wildcards):
    return [fit_file(wildcards.sim, z, wildcards.method) for z in COMPSEP_ZONES]


def all_method_fits(wildcards):
    return [fit_file(wildcards.sim, z, m) for z in COMPSEP_ZONES for m in COMPSEP_METHODS]


def zone_method_fits(wildcards):
    return [fit_file(wildcards.sim, wildcards.zone, m) for m in COMPSEP_METHODS]


def method_r_likelihoods(wildcards):
    return [rlike_file(wildcards.sim, m) for m in COMPSEP_METHODS]


def rlike_inputs(wildcards):
    """The fits, CAMB spectra and, of a simulated sky, its CMB (the residuals' truth)."""
    inputs = {"spectra": spectra_file(), "fits": method_fits(wildcards)}
    return inputs | ({"sky": sky_file(wildcards.sim)} if has_sky(wildcards.sim) else {})


def rlike_sky_arg(wildcards, input):
    return f"--sky {input.sky}" if "sky" in input.keys() else ""


def compsep_figure_targets(sim):
    """kabalan2025's figures of one separated simulation; of maps that contain their noise
    (no grid search, no truth) those of its fits and r likelihood only."""
    if contains_noise(sim):
        names = ["residual_spectra", "r_likelihood"]
        out = [compsep_figure(f"patches_{z}", sim) for z in COMPSEP_ZONES]
        return out + [compsep_figure(n, sim) for n in names] + [compsep_figure("r_summary", sim, ext="csv")]
    names = ["residual_maps", "metrics", "residual_spectra", "r_likelihood", "r_hat_vs_k"]
    out = [compsep_figure(f"{n}_{z}", sim) for n in ("grid_search", "patches") for z in COMPSEP_ZONES]
    out += [compsep_figure(n, sim) for n in names]
    return out + [compsep_figure(n, sim, ext="csv") for n in ("r_summary", "selection_rules")]


def zone_selections(wildcards):
    return [selection_file(wildcards.sim, z) for z in COMPSEP_ZONES]


def nilc_inputs(wildcards):
    inputs = {"signal": signal_file(wildcards.sim), "noise": noise_file(wildcards.sim)}
    if NILC["mask"] is not None:
        inputs["masks"] = masks_file(wildcards.sim)
    return inputs


def nilc_mask_arg(wildcards, input):
    return f"--masks {input.masks}" if NILC["mask"] is not None else ""


def npe_chunk_inputs(wildcards):
    """CAMB spectra, the sky of a fixed-foreground set, the footprint's hits map."""
    inputs = {"spectra": spectra_file()}
    fixed = NPE_SETS[wildcards.set].foreground
    if fixed is not None:
        inputs["foreground"] = sky_file(fixed)
    if NPE["footprint"]["source"] == "hits":
        inputs["hits"] = NPE["footprint"]["hits_file"]
    return inputs


def npe_foreground_arg(wildcards, input):
    return f"--foreground {input.foreground}" if hasattr(input, "foreground") else ""


def npe_set_chunks(name):
    return [npe_chunk_file(name, i) for i in range(NPE_SETS[name].chunks)]


def npe_wildcard_set_chunks(wildcards):
    return npe_set_chunks(wildcards.set)


def npe_training_inputs(wildcards):
    inputs = {"chunks": npe_set_chunks("train")}
    if NPE["tune"]["trials"]:
        inputs["tuning"] = tuning_file(wildcards.compression)
    return inputs


def npe_tuning_arg(wildcards, input):
    return f"--tuning {input.tuning}" if NPE["tune"]["trials"] else ""


def observed_files(wildcards):
    return [observed_file(wildcards.compression, s) for s in NPE["observed"]]


def fixed_predictive_files(wildcards):
    return [predictive_file(wildcards.compression, s) for s in NPE_FIXED_SETS]


def fixed_set_posteriors():
    """SBI posteriors of every fixed-foreground set, and the likelihood's where it runs."""
    out = [posterior_file(c, s) for c in NPE_COMPRESSIONS for s in NPE_FIXED_SETS]
    return out + [ps_likelihood_file(s) for s in NPE_FIXED_SETS if s in NPE_PS_SETS]


def set_posteriors(wildcards):
    return [posterior_file(c, wildcards.set) for c in NPE_COMPRESSIONS]


def runtime_per_attempt(minutes):
    """Runtime that grows with each retry (a retried long job resumes from its checkpoints)."""

    def runtime(wildcards, attempt):
        return minutes * attempt

    return runtime


# ---------------------------------------------------------------- targets
def npe_figure_targets():
    """The duivenvoorden2025 figures and the summary table of the configured SBI run."""
    if not NPE_COMPRESSIONS or not NPE_TEST_SETS:
        return []
    out = [npe_figure("summary.csv")]
    for c in NPE_COMPRESSIONS:
        if "coverage" in NPE_SETS:
            out.append(npe_figure("tarp.png", c))
        out += [npe_figure(f"corner_{s}.png", c) for s in NPE_TEST_SETS if s != "coverage"]
        if NPE["observed"]:
            out += [npe_figure("corner_observed.png", c), npe_figure("predictive.png", c)]
    for s in NPE_TEST_SETS:
        if s != "coverage":
            out += [npe_figure(f"r_vs_sigma_beta_{s}.png"), npe_figure(f"sigma_r_{s}.png")]
    out += [npe_figure(f"likelihood_{s}.png") for s in NPE_PS_SETS]
    if NPE_SUBSETS:
        out += [npe_figure("training_size.png", c) for c in NPE_COMPRESSIONS]
        if "coverage" in NPE_SETS:
            out += [yardstick_file(c) for c in NPE_COMPRESSIONS]
    if NPE_FIXED_SETS:
        out += [npe_figure("table3.csv"), npe_figure("fixed_foreground.png")]
        out += [npe_figure("predictive_fixed.png", c) for c in NPE_COMPRESSIONS]
    return out


def validation_targets(wildcards):
    """The products of target validation_all (kabalan2025 sec. 5.1)."""
    sims = validation_simulations()
    if not sims:
        raise WorkflowError(
            "validation_all: no simulation of compsep.simulations has a true_patch sky with "
            "K-means patches (skies.<name>.patches.<parameter>.kmeans); see "
            "config/validation.yaml"
        )
    out = [recovery_table_file()]
    out += [compsep_figure("recovery", s) for s in sims]
    out += [compsep_figure(f"grid_search_{z}", s) for s in sims for z in COMPSEP_ZONES]
    return out


# ---------------------------------------------------------------- one sky, two methods
# The simulations both methods analyse: separated (compsep.simulations) and observed by
# SBI (npe.observed, with its estimator: same instrument, nside and lmax)
COMPARE_SIMULATIONS = [s for s in COMPSEP_SIMULATIONS if NPE_COMPRESSIONS and s in NPE["observed"]]


def compare_figure(name):
    return f"{FIGURES}/compare/{name}"


def compare_rows():
    """Per simulation and method: the product holding its r and the benchmark files of
    the jobs that product needs (the simulation itself and CAMB, common to all, left out)."""
    rows = []
    for s in COMPARE_SIMULATIONS:
        sim = config["simulations"][s]
        base = {"simulation": s, "sky": sim["sky"], "instrument": sim["instrument"]}
        for m in COMPSEP_METHODS:
            jobs = [benchmark_file("compsep_fit", s, m)]  # every zone in one job
            if m == "kmeans":
                jobs += [benchmark_file("kmeans_patches", s)]
                g = selection_source(s)  # the grid search it takes its selection from
                if SCREENED:
                    jobs += [benchmark_file("grid_screen_chunk", g, str(c)) for c in GRID_CHUNKS]
                    jobs += [benchmark_file("grid_screen", g)]
                jobs += [benchmark_file("grid_chunk", g, str(c)) for c in GRID_CHUNKS]
                jobs += [benchmark_file("grid_select", g)]
            jobs.append(benchmark_file("r_likelihood", s, m))
            rows.append(base | {"method": m, "kind": "rlike", "result": rlike_file(s, m), "benchmarks": jobs})
        for c in NPE_COMPRESSIONS:
            # the training campaign is counted whole for every sky (one needs all of it for
            # any single result); its chunks compute every compression at once
            jobs = [benchmark_file("npe_chunk", "train", str(i)) for i in range(NPE["chunks"])]
            jobs.append(benchmark_file("npe_train", c))
            if NPE["tune"]["trials"]:
                jobs.append(benchmark_file("npe_tune", c))
            jobs += [benchmark_file("nilc", s, c), benchmark_file("npe_observed", c, s)]
            rows.append(
                base | {"method": f"sbi_{c}", "kind": "sbi", "result": observed_file(c, s), "benchmarks": jobs}
            )
        if NPE["ps_likelihood"]["observed"]:
            rows.append(
                base
                | {
                    "method": "ps_likelihood",
                    "kind": "ps_likelihood",
                    "result": ps_observed_file(s),
                    "benchmarks": [benchmark_file("npe_ps_observed", s)],
                }
            )
    return rows


def compare_rows_file(wildcards):
    """The rows as a JSON file for the job (content-addressed, as the stage configs)."""
    return stage_config_file("compare-rows", compare_rows())


def compare_targets(wildcards):
    if not COMPARE_SIMULATIONS:
        raise WorkflowError(
            "compare_all: no simulation is both in compsep.simulations and in npe.observed "
            "(with npe.chunks > 0); see config/compare.yaml"
        )
    return [compare_figure("summary.csv"), compare_figure("compare.png")]


# ---------------------------------------------------------------- unknown targets
def target_rules():
    """The rules one can ask for by name (those without wildcards)."""
    return sorted(r.name for r in workflow.rules if not r.wildcard_names and r.name != "all")


def unknown_target(wildcards):
    import difflib

    names = ["all", *target_rules()]
    close = difflib.get_close_matches(wildcards.target, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise WorkflowError(
        f"unknown target '{wildcards.target}'{hint}; targets: {', '.join(names)}, "
        f"or a file under {config['results_dir']}/"
    )
