"""The repository keeps its promises: CI runs the README's test command; benchmarks print JSON."""

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


def test_benchmark_prints_one_json_object_last():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bmodesep.bench",
            "simulate-litebird",
            "--repeats",
            "1",
            "--no-baseline",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["name"] == "simulate-litebird"
    for key in ("median_s", "cpu_s", "peak_rss_mb"):
        assert isinstance(result[key], float) and result[key] > 0


def test_unknown_benchmark_is_an_error():
    r = subprocess.run(
        [sys.executable, "-m", "bmodesep.bench", "nope"], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr
