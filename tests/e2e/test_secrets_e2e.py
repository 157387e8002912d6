"""Secrets and exposure on a real platform: the platform secret between gateway and replicas, API keys
stored as salted hashes only, nothing secret in the predictor's environment or in 500 bodies, owner-only
state, API descriptions and /metrics behind keys."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Platform

LITERAL_KEY = "literal-e2e-key-0123456789abcdef"
ENV_KEY = "env-e2e-key-0123456789abcdef"
METRICS_KEY = "metrics-e2e-key-0123456789"

PREDICTOR = """\
import os
from pathlib import Path


class Predictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        if "raise" in payload:
            raise RuntimeError(payload["raise"])
        visible = "\\n".join(f"{k}={v}" for k, v in os.environ.items())
        here = "".join(p.read_text(errors="replace") for p in Path(".").rglob("*") if p.is_file())
        return {
            "env": {name: os.environ.get(name) for name in payload["names"]},
            "key_in_env": any(k in visible for k in payload["keys"]),
            "key_in_project": any(k in here for k in payload["keys"]),
        }
"""

CONFIG = f"""\
apis:
  - name: guarded
    auth:
      api_keys: [{LITERAL_KEY}, env:GUARDED_E2E_KEY]
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "THRIFTY_HOME": str(home), "GUARDED_E2E_KEY": ENV_KEY, "THRIFTY_METRICS_KEY": METRICS_KEY}
    p = Platform(home, env)
    p.cli("up", "--port", "0")
    try:
        yield p
    finally:
        p.cli("down", check=False)


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_stay_secret(platform: Platform, tmp_path: Path) -> None:
    project = tmp_path / "guarded"
    project.mkdir()
    (project / "predictor.py").write_text(PREDICTOR)
    (project / "thrifty.yaml").write_text(CONFIG)
    platform.cli("deploy", str(project))
    bearer = {"Authorization": f"Bearer {LITERAL_KEY}"}
    names = ["GUARDED_E2E_KEY", "THRIFTY_METRICS_KEY", "THRIFTY_HIDE_ENV"]
    probe: dict[str, Any] = {"names": names, "keys": [LITERAL_KEY, ENV_KEY, METRICS_KEY]}

    with httpx.Client(base_url=platform.gateway, timeout=30) as http:
        assert http.post("/guarded", json=probe).status_code == 401
        seen = http.post("/guarded", json=probe, headers={"Authorization": f"Bearer {ENV_KEY}"})
        assert seen.status_code == 200, seen.text
        assert seen.json() == {"env": dict.fromkeys(names), "key_in_env": False, "key_in_project": False}

        failed = http.post("/guarded", json={"raise": "/home/alice/data.csv: row 7"}, headers=bearer)
        assert failed.status_code == 500 and failed.json()["error"] == "predictor_error"
        assert "alice" not in failed.text and "RuntimeError" not in failed.text

        assert http.get("/guarded").status_code == 401
        assert http.get("/guarded", headers=bearer).json()["replicas_ready"] == 1
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}).status_code == 200

    # A direct call to the replica, skipping the gateway, is refused without the platform secret.
    described: Any = platform.json("get", "guarded")
    port = next(r["port"] for r in described["replica_list"] if r["state"] == "ready")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as direct:
        assert direct.post("/", json=probe).status_code == 401
        assert direct.get("/healthz").status_code == 200
        secret = (platform.home / "replica_secret").read_text().strip()
        assert direct.post("/", json=probe, headers={"X-Thrifty-Secret": secret}).status_code == 200

    state = all_bytes(platform.home)  # state.db (+ WAL), the stored project copy, logs, run files
    for key in (LITERAL_KEY, ENV_KEY, METRICS_KEY):
        assert key.encode() not in state, key

    home = platform.home
    for folder in (home, home / "projects", home / "logs", home / "run"):
        assert mode(folder) == 0o700, folder
    for file in (home / "state.db", home / "token", home / "replica_secret"):
        assert mode(file) == 0o600, file
    platform.cli("delete", "guarded")
