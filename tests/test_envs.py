"""Conda environments per rule family: every rule has one that holds what its code imports.

Conda itself cannot run here (no conda channels), so this checks what can go wrong
without it: each rule's environment file, that the modules its command runs import no
third-party package missing from that file, and the post-deploy script that installs the
checkout into an environment (run for real, into a fresh virtual environment).
"""

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, workflow_rules

ENVS = REPO / "workflow" / "envs"
# pip distribution -> import name, for every runtime dependency of the package
IMPORT_NAMES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "h5py": "h5py",
    "pyyaml": "yaml",
    "jsonschema": "jsonschema",
    "healpy": "healpy",
    "ducc0": "ducc0",
    "numba": "numba",
    "camb": "camb",
    "pysm3": "pysm3",
    "astropy": "astropy",
    "jax": "jax",
    "jaxlib": "jaxlib",
    "optax": "optax",
    "torch": "torch",
    "sbi": "sbi",
    "optuna": "optuna",
    "tarp": "tarp",
    "deprecation": "deprecation",
    "matplotlib": "matplotlib",
    "emcee": "emcee",
    "getdist": "getdist",
}
# imported inside the function that needs it (so the step's --help stays quick): not seen
# by importing the stage module
LAZY_IMPORTS = {"PLOT_ENV": {"getdist"}}
FAMILY_FILES = {
    "SIM_ENV": ["simulation.yaml"],
    "JAX_ENV": ["jax-cpu.yaml", "jax-gpu.yaml"],
    "TORCH_ENV": ["torch-sbi.yaml"],
    "PLOT_ENV": ["plotting.yaml"],
}


def rules_with_environments():
    """(rule, environment variable, module of its command) for every rule with a shell."""
    return [(rule, env, f"bmodesep.stages.{stage}") for _, rule, stage, _, env in workflow_rules()]


def pip_requirements(env_file) -> set[str]:
    spec = yaml.safe_load((ENVS / env_file).read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    return {re.split(r"[<>=\[ ]", req, maxsplit=1)[0].lower() for req in pip}


def third_party_imports(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in out.stdout.split()}
    return {dist for dist, name in IMPORT_NAMES.items() if name in loaded}


def test_every_rule_with_a_command_has_a_family_environment():
    rules = rules_with_environments()
    assert len(rules) > 30
    missing = [name for name, env, _ in rules if env not in FAMILY_FILES]
    assert not missing, f"rules without a family environment: {missing}"


@pytest.mark.parametrize("family", sorted(FAMILY_FILES))
def test_environment_files_hold_what_their_rules_import(family):
    modules = {module for _, env, module in rules_with_environments() if env == family}
    assert modules
    needed = set().union(*(third_party_imports(m) for m in modules)) - {"jaxlib"}
    needed |= LAZY_IMPORTS.get(family, set())
    for env_file in FAMILY_FILES[family]:
        spec = yaml.safe_load((ENVS / env_file).read_text())
        assert "python=3.11" in spec["dependencies"] and "pip" in spec["dependencies"]
        missing = needed - pip_requirements(env_file)
        assert not missing, f"{env_file} lacks {sorted(missing)} imported by {sorted(modules)}"
        hook = ENVS / env_file.replace(".yaml", ".post-deploy.sh")
        assert hook.resolve() == ENVS / "install-bmodesep.sh"
    if family == "JAX_ENV":
        assert "jax[cuda12]>=0.4.30" in (ENVS / "jax-gpu.yaml").read_text()


@pytest.mark.slow
def test_post_deploy_script_installs_this_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "env")], check=True)
    env = dict(os.environ, PATH=f"{tmp_path / 'env' / 'bin'}:{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)
    script = str(ENVS / "install-bmodesep.sh")
    unset = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
    assert unset.returncode != 0 and "BMODESEP_SOURCE is not set" in unset.stderr
    env["BMODESEP_SOURCE"] = str(REPO)
    done = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    where = subprocess.run(
        [
            str(tmp_path / "env" / "bin" / "python"),
            "-c",
            "import bmodesep; print(bmodesep.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.stdout.strip() == str(REPO / "bmodesep" / "__init__.py")


def test_accelerator_is_validated(tmp_path):
    args = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
    ]
    args += ["--configfile", str(REPO / "config" / "config.yaml")]
    ok = subprocess.run([*args, "--config", "accelerator=gpu"], capture_output=True, cwd=tmp_path)
    assert ok.returncode == 0
    bad = subprocess.run(
        [*args, "--config", "accelerator=tpu"], capture_output=True, text=True, cwd=tmp_path
    )
    assert bad.returncode != 0 and "'tpu' is not one of ['cpu', 'gpu']" in bad.stdout + bad.stderr
