"""End-to-end fixtures: the real `thrifty` CLI against a real local operator in a temporary THRIFTY_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

THRIFTY = str(Path(sys.executable).parent / "thrifty")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROJECTS = Path(__file__).resolve().parent / "projects"


@dataclass
class Platform:
    home: Path
    env: dict[str, str]

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [THRIFTY, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"thrifty {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> object:
        return orjson.loads(self.cli(*args, "-o", "json").stdout)

    @property
    def gateway(self) -> str:
        info = orjson.loads((self.home / "operator.json").read_bytes())
        return f"http://127.0.0.1:{info['gateway_port']}"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "THRIFTY_HOME": str(home)}
    p = Platform(home, env)
    p.cli("up", "--port", "0")
    try:
        yield p
    finally:
        p.cli("down", check=False)
        log = home / "logs" / "operator.log"
        if log.exists() and os.environ.get("THRIFTY_E2E_SHOW_LOGS"):
            print(log.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Iterator[object]:
    """Copy an example or a test project into a temporary folder (deploys never write into the repo)."""

    def copy(name: str) -> Path:
        src = EXAMPLES / name if (EXAMPLES / name).is_dir() else PROJECTS / name
        dest = tmp_path / name
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.joblib", "__pycache__"))
        return dest

    yield copy
