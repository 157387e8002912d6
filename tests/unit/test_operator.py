"""The operator's reconcile loop against a fake engine and a fake gateway, on a fake clock (no sockets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.engines.fake import FakeEngine
from thrifty.errors import ConfigError, NotFoundError
from thrifty.project_archive import pack

PREDICTOR = (
    "class Predictor:\n    def __init__(self, config):\n        pass\n"
    "    def predict(self, payload):\n        return 1\n"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def project(tmp: Path, yaml: str, code: str = PREDICTOR) -> bytes:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "thrifty.yaml").write_text(yaml)
    (tmp / "predictor.py").write_text(code)
    return pack(tmp)


@pytest.fixture
def env(tmp_path: Path) -> tuple[Operator, FakeEngine, FakeGateway, Clock]:
    clock = Clock()
    home = Home(tmp_path / "home")
    home.ensure()
    engine = FakeEngine(clock, ready_after_s=1.0)
    gateway = FakeGateway()
    op = Operator(home, Store(home.db_path), engine, gateway, clock=clock, mono=clock)
    return op, engine, gateway, clock


async def tick(op: Operator, clock: Clock, seconds: float = 0.5) -> None:
    clock.now += seconds
    await op.reconcile_once()


async def test_deploy_starts_replicas_and_routes_when_ready(env: Any, tmp_path: Path) -> None:
    op, engine, gateway, clock = env
    yaml = "apis:\n  - name: iris\n    autoscaling: {init_replicas: 2}\n"
    result = await op.deploy(project(tmp_path / "p", yaml))
    assert result["apis"][0]["action"] == "created"
    await tick(op, clock)
    assert len(engine.started) == 2
    assert op.describe("iris")["status"] == "updating"
    assert gateway.tables[-1]["apis"]["iris"]["replicas"] == []
    await tick(op, clock, 1.0)
    assert op.describe("iris")["status"] == "live"
    routes = gateway.tables[-1]["apis"]["iris"]
    assert len(routes["replicas"]) == 2
    assert routes["request_timeout_s"] == 30.0


async def test_bad_config_changes_nothing(env: Any, tmp_path: Path) -> None:
    op, engine, _gateway, clock = env
    await op.deploy(project(tmp_path / "good", "apis:\n  - name: iris\n"))
    await tick(op, clock)
    await tick(op, clock, 1.0)
    revision = op.describe("iris")["revision"]
    with pytest.raises(ConfigError, match="max_concurrency"):
        await op.deploy(project(tmp_path / "bad", "apis:\n  - name: iris\n    serving: {max_concurrency: -1}\n"))
    with pytest.raises(ConfigError, match="no such file"):
        await op.deploy(project(tmp_path / "bad2", "apis:\n  - name: iris\n    predictor: {path: nope.py}\n"))
    await tick(op, clock)
    assert op.describe("iris")["revision"] == revision
    assert len(engine.started) == 1 and engine.stopped == []


async def test_redeploy_rolls_and_autoscaling_change_applies_in_place(env: Any, tmp_path: Path) -> None:
    op, engine, gateway, clock = env
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n"))
    await tick(op, clock)
    await tick(op, clock, 1.0)
    first = engine.started[0].replica_id
    # Autoscaling only: same revision, no restart.
    r = await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n    autoscaling: {max_replicas: 3}\n"))
    assert r["apis"][0]["action"] == "config updated in place"
    await tick(op, clock)
    assert len(engine.started) == 1
    # Code change: a new revision surges one replica, then retires the old one once the new is ready.
    r = await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n", PREDICTOR + "# v2\n"))
    assert r["apis"][0]["action"] == "updated"
    await tick(op, clock)
    assert len(engine.started) == 2 and engine.stopped == []
    await tick(op, clock, 1.0)
    assert engine.stopped == [first]
    routes = gateway.tables[-1]["apis"]["iris"]["replicas"]
    assert [r["id"] for r in routes if not r["draining"]] == [engine.started[1].replica_id]
    assert [r["id"] for r in routes if r["draining"]] == [first]  # draining until it exits
    await tick(op, clock)
    assert op.describe("iris")["status"] == "live"


async def test_predictor_failure_is_reported_and_retried_with_backoff(env: Any, tmp_path: Path) -> None:
    op, engine, _gateway, clock = env
    engine.fail_next_start = {"message": "ValueError: bad weights", "where": "predictor.py:3 in __init__"}
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n"))
    await tick(op, clock)
    await tick(op, clock)
    d = op.describe("iris")
    assert d["status"] == "error"
    assert "bad weights" in d["error"]["message"] and "predictor.py:3" in d["error"]["message"]
    assert len(engine.started) == 1
    await tick(op, clock, 0.1)  # inside the backoff: no new start
    assert len(engine.started) == 1
    engine.fail_next_start = None
    await tick(op, clock, 5.0)
    assert len(engine.started) == 2
    await tick(op, clock, 1.0)
    assert op.describe("iris")["status"] == "live"
    kinds = [e.kind for e in op.store.events("iris")]
    assert "replica_exited" in kinds


async def test_refresh_and_delete(env: Any, tmp_path: Path) -> None:
    op, engine, gateway, clock = env
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n"))
    await tick(op, clock)
    await tick(op, clock, 1.0)
    old_rev = op.describe("iris")["revision"]
    op.refresh("iris")
    assert op.describe("iris")["revision"] != old_rev
    await tick(op, clock)
    await tick(op, clock, 1.0)
    assert len(engine.started) == 2 and len(engine.stopped) == 1
    await op.delete("iris")
    await tick(op, clock)
    assert len(engine.stopped) == 2
    assert "iris" not in gateway.tables[-1]["apis"]
    with pytest.raises(NotFoundError):
        op.describe("iris")


async def test_restart_restores_deployed_apis(tmp_path: Path) -> None:
    clock = Clock()
    home = Home(tmp_path / "home")
    home.ensure()
    op = Operator(home, Store(home.db_path), FakeEngine(clock), FakeGateway(), clock=clock, mono=clock)
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n  - name: echo\n"))
    op.store.close()
    engine = FakeEngine(clock)
    op2 = Operator(home, Store(home.db_path), engine, FakeGateway(), clock=clock, mono=clock)
    await op2.start()
    try:
        await op2.reconcile_once()
        assert sorted(op2.apis) == ["echo", "iris"]
        assert sorted(launch.api for launch in engine.started) == ["echo", "iris"]
    finally:
        await op2.stop()


async def test_autoscaler_scales_on_gateway_in_flight_and_logs_events(env: Any, tmp_path: Path) -> None:
    op, engine, _gateway, clock = env
    yaml = "apis:\n  - name: iris\n    autoscaling: {max_replicas: 5, target_in_flight: 1}\n"
    await op.deploy(project(tmp_path / "p", yaml))
    await tick(op, clock)
    integral = 0.0
    for _ in range(8):  # 8 s of a steady 4 requests in flight: panic mode scales up at once
        clock.now += 1.0
        integral += 4.0
        op.autoscale({"apis": {"iris": {"in_flight": 4, "in_flight_seconds": integral}}}, 1)
    assert op.apis["iris"].desired == 4
    scaling = op.store.events("iris", kind="scaling")
    assert scaling and scaling[-1].data is not None and scaling[-1].data["desired"] == 4
    await tick(op, clock)
    assert len(engine.started) == 4
    assert op.describe("iris", detail=True)["autoscaling"]["desired"] == 4


async def test_scale_to_zero_after_idle(env: Any, tmp_path: Path) -> None:
    op, _engine, _gateway, clock = env
    yaml = "apis:\n  - name: iris\n    autoscaling: {min_replicas: 0, scale_to_zero_after: 30s}\n"
    await op.deploy(project(tmp_path / "p", yaml))
    assert op.apis["iris"].desired == 1
    for _ in range(40):
        clock.now += 1.0
        op.autoscale({"apis": {"iris": {"in_flight": 0, "in_flight_seconds": 0.0}}}, 1)
    assert op.apis["iris"].desired == 0
    await tick(op, clock)
    assert op.describe("iris")["status"] == "scaled to zero"
    clock.now += 1.0
    op.autoscale({"apis": {"iris": {"in_flight": 1, "in_flight_seconds": 1.0}}}, 1)  # a request is held
    assert op.apis["iris"].desired == 1


def folder_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_unused_project_folders_are_removed_after_a_rollout(env: Any, tmp_path: Path) -> None:
    op, _engine, _gateway, clock = env
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n"))
    first = op.apis["iris"].spec.project_dir
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n    autoscaling: {max_replicas: 3}\n"))
    assert op.apis["iris"].spec.project_dir == first  # in place: same folder as the running replicas
    await op.deploy(project(tmp_path / "p", "apis:\n  - name: iris\n", PREDICTOR + "# v2\n"))
    second = op.apis["iris"].spec.project_dir
    for _ in range(4):
        await tick(op, clock, 61.0)
    assert folder_names(op.home.projects_dir) == [Path(second).name]  # the first one is gone
