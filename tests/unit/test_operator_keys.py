"""API keys through a deploy: only salted hashes reach state.db, the stored project copy and the gateway;
replicas get neither the keys nor the variables they are read from (fake engine and gateway, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.dataplane.api_key_hashes import key_matches
from thrifty.dataplane.platform_secret import HIDE_ENV, METRICS_KEY_ENV
from thrifty.engines.fake import FakeEngine
from thrifty.project_archive import pack

KEY = "literal-key-in-yaml-0123456789"
ENV_KEY = "key-from-the-environment-5555"
PREDICTOR = (
    "class Predictor:\n    def __init__(self, config):\n        pass\n"
    "    def predict(self, payload):\n        return 1\n"
)
YAML = (
    f"apis:\n  - name: iris\n    predictor: {{env: {{MODE: fast}}}}\n    auth:\n      api_keys: [{KEY}, env:IRIS_KEY]\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def archive(tmp: Path) -> bytes:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "thrifty.yaml").write_text(YAML)
    (tmp / "predictor.py").write_text(PREDICTOR)
    return pack(tmp)


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("IRIS_KEY", ENV_KEY)
    home = Home(tmp_path / "home")
    home.ensure()
    return home


def make_operator(home: Home, clock: Clock) -> tuple[Operator, FakeEngine, FakeGateway, Store]:
    engine = FakeEngine(clock, ready_after_s=1.0)
    gateway = FakeGateway()
    store = Store(home.db_path)
    return Operator(home, store, engine, gateway, clock=clock, mono=clock), engine, gateway, store


async def test_only_salted_hashes_are_stored_and_routed(home: Home, tmp_path: Path) -> None:
    clock = Clock()
    op, engine, gateway, store = make_operator(home, clock)
    data = archive(tmp_path / "p")
    assert (await op.deploy(data))["apis"][0]["action"] == "created"
    clock.now += 0.5
    await op.reconcile_once()

    accepted = tuple(gateway.tables[-1]["apis"]["iris"]["api_keys_sha256"])
    assert key_matches(KEY.encode(), accepted) and key_matches(ENV_KEY.encode(), accepted)
    assert not key_matches(b"not-a-key-0123456789", accepted)
    assert all(KEY not in h and ENV_KEY not in h for h in accepted)

    assert KEY.encode() not in all_bytes(home.projects_dir), "the stored project copy holds the literal key"
    assert KEY.encode() not in all_bytes(home.root), "state.db (or another state file) holds the literal key"
    assert KEY not in str(op.describe("iris", detail=True))

    launch = engine.started[0]
    assert launch.config["auth"]["api_keys"] == []
    assert KEY not in str(launch) and ENV_KEY not in str(launch)
    assert set(launch.env[HIDE_ENV].split(",")) == {"IRIS_KEY", METRICS_KEY_ENV}
    assert launch.env["MODE"] == "fast"

    assert (await op.deploy(data))["apis"][0]["action"] == "unchanged", "the same keys hash the same"
    store.close()


async def test_keys_work_after_an_operator_restart(home: Home, tmp_path: Path) -> None:
    clock = Clock()
    op, _engine, _gateway, store = make_operator(home, clock)
    await op.deploy(archive(tmp_path / "p"))
    store.close()
    op2, _engine2, gateway2, store2 = make_operator(home, clock)
    await op2.start()
    try:
        clock.now += 0.5
        await op2.reconcile_once()
        accepted = tuple(gateway2.tables[-1]["apis"]["iris"]["api_keys_sha256"])
        assert key_matches(KEY.encode(), accepted) and key_matches(ENV_KEY.encode(), accepted)
    finally:
        await op2.stop()
        store2.close()
