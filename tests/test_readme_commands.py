"""Every `snakemake` command line of the documentation runs: a dry run of each.

The command lines are read from README.md, config/README.md and the pages of docs/ (code
blocks indented by four spaces or fenced, and inline code that starts with ``snakemake ``)
and from the example comments of the shipped configs, the profiles and the Snakefile. Each
is run as written plus ``-n`` (``--report`` and ``--unlock`` lines as written: they run no
job), in a copy of the checkout's workflow/, config/ and profiles/ (the configs' ``results_dir`` is
relative), so nothing is written into the repository. Before that, each is parsed with
Snakemake's own argument parser: a target after ``--configfile`` (read as one more config
file) and a command that runs jobs without cores (no profile, no ``--cores``: "cores have
to be specified", which ``-n`` would hide) fail with their own message.

The SLURM profile's lines run offline: a dry run hands no job to the executor plugin, and
stand-ins for sbatch, srun, salloc and scancel on PATH prove it (they record any call).

Command lines that differ in their targets only share one dry run with all their
targets: a dry run fails if any of its targets fails, so each command line is still
checked, in a fraction of the time (about a minute for some 25 dry runs on 2 cores).
"""

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import REPO, user_map_placeholders

# The pages of docs/ too; their links to other files are left out: docs/configs.md is
# config/README.md, and docs/benchmarks.md is BENCHMARKS.md, which records the commands
# that were timed (absolute paths, brace expansions), not commands to run.
DOCUMENTS = [
    "README.md",
    "config/README.md",
    *(
        p.relative_to(REPO).as_posix()
        for p in sorted((REPO / "docs").glob("*.md"))
        if not p.is_symlink()
    ),
]
# `#   snakemake ...` example lines in comments
COMMENTED = [
    *(p.relative_to(REPO).as_posix() for p in sorted((REPO / "config").glob("*.yaml"))),
    *(p.relative_to(REPO).as_posix() for p in sorted((REPO / "profiles").glob("*/config.yaml"))),
    "workflow/Snakefile",
]
# Words standing for a file the reader picks; replaced by a shipped one.
PLACEHOLDERS = {
    # `snakemake --report <file>.html --configfile <the same file>`
    "<file>.html": "results/report.html",
    "<the same file>": "config/config.yaml",
    "--configfile ...": "--configfile config/config.yaml",  # `snakemake -n --configfile ...`
}
# Documented to fail: the README shows what a misspelled target gives.
FAILS_WITH = {
    "snakemake --profile profiles/local compsep_al": (
        "unknown target 'compsep_al' (did you mean 'compsep_all'?)"
    )
}
DEFAULT_TARGET = "all"  # the Snakefile's `default_target: True` rule
# SLURM's commands that start or cancel jobs; in the dry runs they only record the call
# (and on a machine with SLURM they hide the real ones): a dry run must submit nothing.
# Read-only queries are left alone: the SLURM plugin runs `scontrol show config` in every
# Snakemake command, local ones too, to describe its options' defaults in --help.
SLURM_SUBMIT = ("sbatch", "srun", "salloc", "scancel")


def _strip(text: str) -> str:
    """A command without its trailing comment (`# ...`, or text after a run of spaces)."""
    return re.split(r"\s+#|\s{2,}", text.strip())[0]


def _in_documents() -> list[tuple[str, int, str]]:
    found = []
    for name in DOCUMENTS:
        text = (REPO / name).read_text()
        fenced = False
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced or line.startswith("    "):
                # `python3.11 -m venv .venv && ... && snakemake --profile profiles/local`
                for part in line.split("&&"):
                    if part.strip().startswith("snakemake "):
                        found.append((name, number, _strip(part)))
        # inline code, which may run over a line break
        for match in re.finditer(r"(?<!`)`(snakemake [^`]+)`(?!`)", text):
            number = text.count("\n", 0, match.start()) + 1
            found.append((name, number, " ".join(match.group(1).split())))
    return found


def _in_comments() -> list[tuple[str, int, str]]:
    found = []
    for name in COMMENTED:
        for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
            match = re.match(r"#\s+(snakemake .*)", line)
            if match:
                found.append((name, number, _strip(match.group(1))))
    return found


def _substituted(command: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    return command


COMMANDS = sorted(_in_documents() + _in_comments())


def test_the_command_lines_are_found():
    commands = {c for _, _, c in COMMANDS}
    assert len(COMMANDS) >= 50 and len(commands) >= 30
    assert "snakemake --profile profiles/slurm npe_all --configfile config/paper2.yaml" in commands
    assert "snakemake --report results/report.html" in commands  # inline
    assert (  # inline, over a line break
        "snakemake compsep_all rlike_all nilc_all npe_all --profile profiles/local "
        "--configfile config/compare.yaml" in commands
    )
    assert "snakemake --profile profiles/local --cores 16 --resources gpu=2" in commands
    for command in map(_substituted, commands):
        assert "<" not in command and "..." not in command, f"placeholder left in {command}"


# ---------------------------------------------------------------- the dry runs
@cache
def _parser():
    from snakemake.cli import get_argument_parser

    return get_argument_parser()


def _parse(command: str):
    try:
        return _parser().parse_args(shlex.split(command)[1:])
    except SystemExit:
        pytest.fail(f"Snakemake cannot parse `{command}` (its message is above)")


def _options(args) -> str:
    """Everything a command line sets but its targets, comparable between command lines
    (-n or not: the dry runs have it)."""

    def value(v):
        text = repr(v)
        if " at 0x" in text and hasattr(v, "__dict__"):  # settings objects
            return f"{type(v).__name__}{sorted(vars(v).items())!r}"
        return text

    options = dict(vars(args), dryrun=True)
    return repr(sorted((k, value(v)) for k, v in options.items() if k != "targets"))


def _without_targets(command: str, args) -> list[str]:
    """The words of a command line but its targets (argparse takes the targets from one
    run of words only, so others must not be added beside them)."""
    words, targets = shlex.split(command)[1:], list(args.targets or [])
    for i in range(len(words) - len(targets) + 1):
        rest = words[:i] + words[i + len(targets) :]
        if words[i : i + len(targets)] != targets:
            continue
        if _options(_parse(shlex.join(["snakemake", *rest]))) == _options(args):
            return rest
    raise AssertionError(f"cannot find the targets of `{command}`")


def _needs_conda(args) -> bool:
    """`--sdm conda --conda-create-envs-only`: even its dry run runs `conda info`."""
    return args.conda_create_envs_only and shutil.which("conda") is None


def _stub_slurm(folder: Path) -> None:
    folder.mkdir()
    for name in SLURM_SUBMIT:
        stub = folder / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "$SLURM_CALLS"\nexit 1\n')
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """The output of the dry run of every command line, by command line."""
    root = tmp_path_factory.mktemp("readme")
    checkout = root / "checkout"
    for folder in ("workflow", "config", "profiles"):
        # links followed: workflow/schemas/config.schema.yaml points into bmodesep/
        shutil.copytree(REPO / folder, checkout / folder, symlinks=False)
    # config/README.md, "Writing your own", step 1
    shutil.copy(checkout / "config" / "config.yaml", checkout / "config" / "mine.yaml")
    for config in sorted((checkout / "config").glob("*.yaml")):  # README "Your own maps"
        user_map_placeholders(config, checkout)
    _stub_slurm(root / "bin")
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    env.update(OMP_NUM_THREADS="1", PATH=f"{root / 'bin'}{os.pathsep}{env['PATH']}")

    groups: dict[str, list[tuple[str, object]]] = {}
    alone = []
    for command in sorted({_substituted(c) for _, _, c in COMMANDS}):
        args = _parse(command)
        if _needs_conda(args):
            continue
        if command in FAILS_WITH or args.report or args.unlock:
            alone.append([(command, args)])
        else:
            groups.setdefault(_options(args), []).append((command, args))

    results = {}
    for n, group in enumerate([*groups.values(), *alone]):
        first, args = group[0]
        # --report and --unlock run no job
        dry = [] if args.report or args.unlock else ["-n"]
        calls = root / f"slurm-calls-{n}.txt"
        if len(group) == 1:  # as written
            argv = [*dry, *shlex.split(first)[1:]]
        else:
            targets = [t for _, a in group for t in (a.targets or [DEFAULT_TARGET])]
            argv = [*dry, *dict.fromkeys(targets), *_without_targets(first, args)]
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", *argv],
            cwd=checkout,
            env=dict(env, SLURM_CALLS=str(calls)),
            capture_output=True,
            text=True,
        )
        slurm = calls.read_text() if calls.exists() else ""
        for command, _ in group:
            results[command] = (run, slurm, checkout)
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [c for _, _, c in COMMANDS], ids=[f"{s}:{n}" for s, n, _ in COMMANDS]
)
def test_command_line_runs(command, dry_runs):
    command = _substituted(command)
    args = _parse(command)
    if _needs_conda(args):
        pytest.skip("`--conda-create-envs-only` runs `conda info` even in a dry run; no conda here")
    run, slurm, checkout = dry_runs[command]
    out = run.stdout + run.stderr
    for word in args.configfile or []:
        assert (checkout / word).is_file(), (
            f"`{command}`: '{word}' follows --configfile and is read as a config file; "
            "put targets before --configfile"
        )
    runs_jobs = not (args.dryrun or args.report or args.unlock or args.lint)
    if runs_jobs and not (args.profile or args.cores or args.jobs):
        pytest.fail(f"`{command}` without -n stops with 'cores have to be specified'")
    assert not slurm, f"`{command}`: the dry run called SLURM: {slurm}"
    if command in FAILS_WITH:
        assert run.returncode != 0 and FAILS_WITH[command] in out, out[-3000:]
        return
    assert "Traceback" not in out, f"`{command}`:\n{out[-3000:]}"
    if args.report:
        # A report needs a finished run (the tiny end-to-end run of test_workflow.py makes
        # one): here the command must get as far as collecting the report's files, i.e.
        # parse, load its config, build the DAG and start the report plugin, and stop at
        # the first figure that does not exist yet.
        assert "Creating report..." in out, out[-3000:]
        assert run.returncode == 0 or "marked for report but does not exist" in out, out[-3000:]
    else:
        assert run.returncode == 0, f"`{command}`:\n{out[-3000:]}"
