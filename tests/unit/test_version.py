"""The version is written once, in thrifty/__init__.py; the CLI, the admin API and the package metadata read it."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

import thrifty
from thrifty.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_written_only_in_the_package() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+([a-z0-9.+-]*)", thrifty.__version__)
    literal = re.compile(rf"""["']{re.escape(thrifty.__version__)}["']""")
    holders = [
        p.relative_to(ROOT) for p in sorted((ROOT / "src" / "thrifty").rglob("*.py")) if literal.search(p.read_text())
    ]
    assert holders == [Path("src/thrifty/__init__.py")]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = { attr = "thrifty.__version__" }' in pyproject


def test_the_cli_reports_it() -> None:
    out = CliRunner().invoke(cli, ["--version"])
    assert out.exit_code == 0 and out.output == f"thrifty, version {thrifty.__version__}\n"
