"""The documentation: generated pages current, the site builds, links resolve, README short."""

import importlib.util
import re
import subprocess
import sys

import pytest
from conftest import REPO


def _generator():
    spec = importlib.util.spec_from_file_location(
        "generate_docs", REPO / "scripts" / "generate_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_docs = _generator()


def test_the_generated_pages_are_current():
    assert generate_docs.stale() == [], "run python scripts/generate_docs.py"


def test_the_check_names_a_stale_page(monkeypatch, capsys):
    page = REPO / "docs" / "config-reference.md"
    monkeypatch.setattr(generate_docs, "pages", lambda: {page: page.read_text() + "x"})
    assert generate_docs.main(["--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "docs/config-reference.md" in err


def test_the_site_builds_strictly(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "config-reference" / "index.html").is_file()


def test_the_readme_is_a_landing_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200


def _pages():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files(page):
    text = re.sub(r"`[^`]*`", "", page.read_text())  # not in code
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.partition("#")[0]
        if not path or re.match(r"[a-z]+:", target):
            continue
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


# ---------------------------------------------------------------- the schema tables
TINY_SCHEMA = {
    "type": "object",
    "properties": {
        "mode": {"enum": ["fast", "exact"], "default": "fast", "description": "how"},
        "fit": {
            "type": "object",
            "default": {},
            "required": ["steps"],
            "properties": {
                "steps": {"type": "integer", "minimum": 1, "description": "at most | this"},
                "tol": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None},
            },
        },
        "skies": {
            "type": "object",
            "default": {},
            "description": "named skies",
            "patternProperties": {
                "^[a-z]+$": {
                    "$ref": "#/$defs/sky",
                },
            },
        },
    },
    "$defs": {
        "sky": {
            "type": "object",
            "properties": {
                "bands": {
                    "type": "array",
                    "items": {"type": "number", "exclusiveMinimum": 0},
                    "minItems": 1,
                    "default": [30.0],
                },
            },
        },
    },
}


def test_schema_rows_of_a_tiny_schema():
    assert generate_docs.schema_rows(TINY_SCHEMA) == [
        ("mode", "string", "`fast`", "one of `fast`, `exact`", "how"),
        ("fit", "object", "`{}`", "", ""),
        ("fit.steps", "integer", "required", ">= 1", "at most | this"),
        ("fit.tol", "number or null", "`null`", "> 0", ""),
        ("skies", "object", "`{}`", "", "named skies"),
        ("skies.NAME", "object", "", "name matches `^[a-z]+$`", ""),
        (
            "skies.NAME.bands",
            "array of number",
            "`[30.0]`",
            "at least 1 item; each item > 0",
            "",
        ),
    ]


def test_the_schema_table_escapes_cells():
    page = generate_docs.config_reference(TINY_SCHEMA)
    assert "| `fit.steps` | integer | required | >= 1 | at most \\| this |" in page
    assert "## fit" in page and "## skies" in page
