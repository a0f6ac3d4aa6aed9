"""``persona plugin new`` scaffolds a plugin whose own tests (the conformance suite) pass at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_engine.cli import cli
from persona_engine.cli.plugin_new import TEMPLATE, template_values


def test_names_derive_from_the_plugin_name() -> None:
    assert template_values("my-ranker") == {
        "name": "my-ranker",
        "package": "persona_engine_my_ranker",
        "dist": "persona-engine-my-ranker",
        "class_name": "MyRankerBackend",
    }


@pytest.mark.parametrize("bad", ["My", "1abc", "a b", "a--b", "", "x/y"])
def test_bad_names_are_refused(bad: str, tmp_path) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", bad, "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "plugin name" in result.output
    assert list(tmp_path.iterdir()) == []


def test_template_is_package_data() -> None:
    assert sorted(p.name for p in TEMPLATE.rglob("*.tmpl"))  # shipped beside the code
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert "templates/**/*.tmpl" in pyproject


def test_scaffolded_plugin_passes_its_own_tests(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", "tiny-rank", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "persona-engine-tiny-rank"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "persona_engine_tiny_rank/__init__.py",
        "persona_engine_tiny_rank/backend.py",
        "pyproject.toml",
        "tests/test_persona_engine_tiny_rank.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    assert (
        '[project.entry-points.persona_engine]\ntiny-rank = "persona_engine_tiny_rank"' in pyproject
    )
    assert not any("$" in (root / f).read_text() for f in files if f.endswith(".py"))

    env = {**os.environ, "PYTHONPATH": str(root), "PERSONA_ENGINE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    # every conformance check (user_sensitivity, prompt_dependence, opposite_users among them)
    # passes; the entry-point check is skipped: the scaffold is not installed here
    from persona_engine.testing.backend_checks import CHECKS

    assert f"{len(CHECKS)} passed" in summary and "1 skipped" in summary, summary

    again = CliRunner().invoke(cli, ["plugin", "new", "tiny-rank", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output
