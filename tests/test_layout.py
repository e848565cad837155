"""The house plan: rules -> stages -> core in two hops, layers that import only downwards."""

import ast
import re
import subprocess
import sys

import pytest
from conftest import REPO

from bmodesep import cli

PACKAGE = REPO / "bmodesep"
RULES = REPO / "workflow" / "rules"


def imports_of(path):
    """Every module a file imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def rule_commands():
    """(rule file stem, rule name, stage, step) of every rule that runs a command."""
    found = []
    for path in sorted(RULES.glob("*.smk")):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0]
            command = re.search(r'"bmodesep (\w+) (\w+)', block)
            if command:
                found.append((path.stem, name, *command.groups()))
    return found


def test_every_rule_reaches_its_stage_function_through_files_of_the_same_name():
    commands = rule_commands()
    assert len(commands) > 30
    for stem, rule, stage, step in commands:
        assert stage == stem, f"rule {rule} in {stem}.smk runs the {stage} stage"
        module = PACKAGE / "stages" / f"{stage}.py"
        assert module.exists()
        functions = {
            n.name for n in ast.parse(module.read_text()).body if isinstance(n, ast.FunctionDef)
        }
        assert step in functions, f"rule {rule}: no function {step} in stages/{stage}.py"
        assert step in cli.STAGES[stage][1], f"rule {rule}: no step {step} in the command line"
    # every step of the command line is a rule's, and every stage has its core
    steps = {(stage, step) for _, _, stage, step in commands}
    for stage, (_, table) in cli.STAGES.items():
        assert {(stage, s) for s in table} <= steps | {("figures", "fig_corner")}
        if stage != "figures":
            assert (PACKAGE / "core" / stage / "__init__.py").exists()
    assert (RULES / "figures.smk").exists() and (PACKAGE / "plots").is_dir()


@pytest.mark.parametrize("layer", ["core", "stages", "products", "plots"])
def test_layers_import_only_downwards(layer):
    forbidden = {
        "core": ("h5py", "yaml", "bmodesep.products", "bmodesep.stages", "bmodesep.plots",
                 "bmodesep.config", "bmodesep.settings", "bmodesep.cli", "snakemake"),
        "products": ("bmodesep.stages", "bmodesep.plots", "bmodesep.cli"),
        "plots": ("bmodesep.stages", "bmodesep.cli"),
        "stages": ("bmodesep.cli",),
    }[layer]  # fmt: skip
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imports_of(path):
            bad = [f for f in forbidden if name == f or name.startswith(f"{f}.")]
            assert not bad, f"{path.relative_to(REPO)} imports {name}"
            if layer == "stages" and name.startswith("bmodesep.stages."):
                pytest.fail(f"{path.relative_to(REPO)} imports another stage: {name}")


def test_no_print_in_core_products_or_stages():
    for layer in ("core", "products", "stages"):
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            calls = [
                n.lineno
                for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
            ]
            assert not calls, f"print in {path.relative_to(REPO)} at lines {calls}"


@pytest.mark.parametrize("args", [[], ["compsep"], ["npe", "npe_train"], ["figures"]])
def test_help_at_every_level_exits_0_without_importing_jax_or_torch(args):
    code = (
        "import sys\n"
        "from bmodesep import cli\n"
        "try:\n"
        f"    cli.main({[*args, '--help']!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = sorted(m for m in ('jax', 'torch', 'sbi', 'h5py', 'healpy') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"
    console = subprocess.run(
        [sys.executable, "-m", "bmodesep", *args, "--help"], capture_output=True, text=True
    )
    assert console.returncode == 0 and "usage: bmodesep" in console.stdout


def test_a_file_name_is_spelled_once_in_the_workflow():
    """Product paths live in common.smk's helpers; rule files call them, never spell them."""
    for path in sorted(RULES.glob("*.smk")):
        if path.name == "common.smk":
            continue
        text = path.read_text()
        assert ".h5" not in text, f"{path.name} spells an HDF5 file name"
        assert "RESULTS" not in text, f"{path.name} builds a path from RESULTS"
    assert "--patches-dir" not in (RULES / "compsep.smk").read_text()
