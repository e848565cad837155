"""The house plan: rules -> stages -> core in two hops, layers that import only downwards."""

import ast
import subprocess
import sys

import pytest
from conftest import REPO, workflow_rules

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
    return [(stem, rule, stage, step) for stem, rule, stage, step, _ in workflow_rules()]


def test_every_rule_reaches_its_stage_function_through_files_of_the_same_name():
    commands = rule_commands()
    assert len(commands) > 30
    for stem, rule, stage, step in commands:
        assert stage == stem, f"rule {rule} in {stem}.smk runs the {stage} stage"
        if stem == "figures":  # one function per rule, of the rule's name
            assert step == rule, f"rule {rule} runs the figure step {step}"
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
        assert {(stage, s) for s in table} <= steps
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


def test_the_command_line_is_the_stage_functions_signatures():
    """One declaration: each step's options are its @step function's parameters (names,
    lists, optional ones, integer defaults); a figure takes no --config."""
    import importlib
    import inspect

    for stage, (_, steps) in cli.STAGES.items():
        module = importlib.import_module(f"bmodesep.stages.{stage}")
        for name, step in steps.items():
            sig = inspect.signature(getattr(module, name))
            params = [p for p in sig.parameters if p != "config"]
            assert [a.name for a in step.args] == params, f"{stage} {name}"
            assert step.takes_config == ("config" in sig.parameters)
            for arg in step.args:
                p = sig.parameters[arg.name]
                has_default = p.default is not inspect.Parameter.empty
                assert arg.required == (not has_default and "None" not in str(p.annotation))
                if arg.kind == "int" and has_default:
                    assert arg.default == p.default
    assert not any(s.takes_config for s in cli.STAGES["figures"][1].values())
    assert all(s.takes_config for s in cli.STAGES["npe"][1].values())


def test_a_step_argument_of_no_known_kind_is_named(monkeypatch):
    source = (
        '"""A stage (``workflow/rules/x.smk``)."""\n'
        "@step\n"
        "def good(config, simulation: Name, fits: list[File], spectra: File | None = None,"
        " chunk: int = 3, output: File = None) -> None:\n"
        '    """Rule good: does a thing, 50% of the time."""\n'
        "@step\n"
        "def bad(config, when: float, output: File) -> None:\n"
        '    """Rule bad: takes a float."""\n'
    )
    monkeypatch.setattr(cli, "_stage_source", lambda stage: source)
    with pytest.raises(TypeError, match=r"x\.py:bad: argument 'when' is annotated 'float'"):
        cli.stage_steps("x")
    monkeypatch.setattr(cli, "_stage_source", lambda stage: source.split("@step\ndef bad")[0])
    text, steps = cli.stage_steps("x")
    assert text == "A stage" and list(steps) == ["good"]
    good = steps["good"]
    assert good.help == "does a thing, 50%% of the time" and good.takes_config
    kinds = [(a.name, a.kind, a.many, a.required, a.default) for a in good.args]
    assert kinds == [
        ("simulation", "name", False, True, None),
        ("fits", "file", True, True, None),
        ("spectra", "file", False, False, None),
        ("chunk", "int", False, False, 3),
        ("output", "file", False, False, None),
    ]
    monkeypatch.setattr(
        cli, "_stage_source", lambda stage: source.replace("a thing, 50% of the time.", "a thing")
    )
    with pytest.raises(TypeError, match="first line is not a sentence"):
        cli.stage_steps("x")


def test_a_figure_step_runs_without_a_config(tmp_path):
    """`bmodesep figures <step>` takes its products and output alone (no --config)."""
    r = subprocess.run(
        [sys.executable, "-m", "bmodesep", "figures", "fig_tarp", "--help"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "--coverage" in r.stdout and "--config" not in r.stdout
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmodesep",
            "figures",
            "fig_tarp",
            "--config",
            "c.yaml",
            "--coverage",
            "c.h5",
            "--output",
            str(tmp_path / "t.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "unrecognized arguments: --config" in r.stderr
