"""The repository keeps its promises: CI runs the README's test command; benchmarks print JSON."""

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys

from conftest import REPO


def readme_commands():
    text = (REPO / "README.md").read_text()
    return re.findall(r"^    (python3\.11 -m venv .*)$", text, flags=re.MULTILINE)


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    tests = [c for c in commands if "pytest" in c]
    assert len(tests) == 1
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests[0] in ci_lines


def test_readme_pipeline_command_runs_the_workflow():
    pipeline = [c for c in readme_commands() if "snakemake" in c]
    assert len(pipeline) == 1 and pipeline[0].endswith("snakemake --profile profiles/local")


BENCHMARK_NAMES = [
    "simulate-litebird",
    "simulate-sosat",
    "maps-read",
    "compsep-multires",
    "compsep-multires-hard",
    "compsep-cold",
    "compsep-multires-100",
    "compsep-kmeans",
    "compsep-screened",
    "nilc",
    "nilc-64",
    "ilc-kernel",
    "npe-sim",
    "npe-sim-32",
    "npe-sim-64",
    "npe-train",
]


def benchmarks_command(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_benchmarks_list_their_names():
    r = benchmarks_command("--list")
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == BENCHMARK_NAMES


def test_benchmark_prints_one_json_object_last():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = benchmarks_command("simulate-litebird", "--repeats", "1", "--no-baseline", env=env)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["name"] == "simulate-litebird"
    for key in ("median_s", "cpu_s", "peak_rss_mb"):
        assert isinstance(result[key], float) and result[key] > 0
    assert result["omp_num_threads"] == "1"  # recorded from the environment, not set


def test_unknown_benchmark_is_an_error():
    r = benchmarks_command("nope")
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr


def test_the_package_has_no_bench_module():
    assert not (REPO / "bmodesep" / "bench.py").exists()
    assert not (REPO / "bmodesep" / "bench").exists()
    assert importlib.util.find_spec("bmodesep.bench") is None


# the public methods of NamedTuple, which start with an underscore
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def private_uses(tree: ast.AST) -> list[str]:
    """Private names used in ``tree``, including Python code held in string constants."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bmodesep"):
            names = [*node.module.split("."), *(a.name for a in node.names)]
            found += [f"line {node.lineno}: {n}" for n in names if n.startswith("_")]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "bmodesep" and any(p.startswith("_") for p in parts):
                    found.append(f"line {node.lineno}: {alias.name}")
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and name not in NAMEDTUPLE_API:
                found.append(f"line {node.lineno}: .{name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "import" in node.value:
                try:
                    found += private_uses(ast.parse(node.value))
                except SyntaxError:
                    pass
    return found


def environment_changes(tree: ast.AST) -> list[str]:
    """Every use of ``os.environ`` other than ``os.environ.get(...)``, and ``os.putenv``."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        if node.value.id != "os":
            continue
        if node.attr in ("putenv", "unsetenv"):
            found.append(f"line {node.lineno}: os.{node.attr}")
        elif node.attr == "environ":
            parent = parents.get(node)
            read = (
                isinstance(parent, ast.Attribute)
                and parent.attr == "get"
                and isinstance(parents.get(parent), ast.Call)
            )
            if not read:
                found.append(f"line {node.lineno}: os.environ")
    return found


def monkey_patches(tree: ast.AST) -> list[str]:
    """Assignments to attributes of names imported from bmodesep (``harmonics.analysis = f``)."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bmodesep"):
            imported |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {
                a.asname or a.name.split(".")[0]
                for a in node.names
                if a.name.split(".")[0] == "bmodesep"
            }
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for t in ast.walk(target):
                base = t
                while isinstance(base, ast.Attribute):
                    base = base.value
                if t is not base and isinstance(base, ast.Name) and base.id in imported:
                    found.append(f"line {t.lineno}: {ast.unparse(t)} = ...")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "setattr" and node.args:
                base = node.args[0]
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in imported:
                    found.append(f"line {node.lineno}: setattr({ast.unparse(node.args[0])}, ...)")
    return found


def test_benchmarks_use_only_public_names_and_leave_the_environment_alone():
    files = sorted((REPO / "benchmarks").glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "__main__.py"}
    problems = {}
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        issues = private_uses(tree) + environment_changes(tree) + monkey_patches(tree)
        if issues:
            problems[path.name] = issues
    assert not problems
    script = (
        "import os; before = dict(os.environ); import benchmarks.__main__; "
        "assert dict(os.environ) == before, 'importing the benchmarks changed os.environ'"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_the_checks_catch_private_names_patches_and_environment_changes():
    code = """
import os
from bmodesep.core.compsep.gridsearch import _compiled_fitter
from bmodesep.core import harmonics
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["X"] = "1"
harmonics._alm_lm(3)
x = os.environ.get("HOME")
p = problem._replace(n=1)
harmonics.synthesis, harmonics.analysis = f, g
setattr(harmonics, "synthesis", f)
local = {}
local.x = 1
SCRIPT = "from benchmarks import compsep as b; b._private()"
"""
    tree = ast.parse(code)
    assert len(private_uses(tree)) == 3  # _compiled_fitter, ._alm_lm, ._private
    assert len(environment_changes(tree)) == 2  # setdefault, item assignment
    assert len(monkey_patches(tree)) == 3  # the two attributes, setattr
