"""Splitters in the operator, on a fake clock with a fake engine and gateway: deploy checks, routes, delete,
and the automated canary (promotion and rollback) driven by reconcile_once with the gateway's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_operator import Clock, project

from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.splitters import Splitters
from thrifty.control.store import Store
from thrifty.dataplane.gateway_stats import LATENCY_BOUNDS_S
from thrifty.engines.fake import FakeEngine
from thrifty.errors import ConfigError, ConflictError

APIS = "apis:\n  - name: stable\n  - name: fresh\n"
CANARY = (
    "splitters:\n  - name: live\n    backends: [{api: stable, weight: 3}, {api: fresh, weight: 1}]\n"
    "    canary: {api: fresh, steps: [10, 50, 100], interval: 60s, min_requests: 10, max_error_rate: 1%,"
    " max_p99_ratio: 2}\n"
)


@pytest.fixture
def env(tmp_path: Path) -> tuple[Operator, FakeGateway, Clock]:
    clock = Clock()
    home = Home(tmp_path / "home")
    home.ensure()
    gateway = FakeGateway()
    op = Operator(home, Store(home.db_path), FakeEngine(clock, ready_after_s=1.0), gateway, clock=clock, mono=clock)
    return op, gateway, clock


class Figures:
    """Cumulative per-backend counters of one splitter, as the gateway reports them."""

    def __init__(self, gateway: FakeGateway, splitter: str) -> None:
        self.gateway = gateway
        self.splitter = splitter
        self.backends: dict[str, dict[str, Any]] = {}

    def add(self, api: str, requests: int, errors: int = 0, latency_s: float = 0.004) -> None:
        b = self.backends.setdefault(
            api,
            {
                "requests": {"2xx": 0, "4xx": 0, "5xx": 0},
                "latency": {"bounds_s": list(LATENCY_BOUNDS_S), "counts": [0] * 17, "sum_s": 0.0, "count": 0},
            },
        )
        b["requests"]["2xx"] += requests - errors
        b["requests"]["5xx"] += errors
        bucket = next(i for i, bound in enumerate(LATENCY_BOUNDS_S) if latency_s <= bound)
        b["latency"]["counts"][bucket] += requests
        b["latency"]["count"] += requests
        self.gateway.next_stats = {"apis": {}, "splitters": {self.splitter: {"backends": self.backends}}}


async def tick(op: Operator, clock: Clock, seconds: float) -> None:
    clock.now += seconds
    await op.refresh_traffic()
    await op.reconcile_once()


def weights(gateway: FakeGateway, name: str = "live") -> dict[str, float]:
    return {b["api"]: b["weight"] for b in gateway.tables[-1]["splitters"][name]["backends"]}


def kinds(op: Operator, name: str = "live") -> list[str]:
    return [e.kind for e in op.store.events(name)]


async def test_deploy_pushes_splitters_and_delete_removes_them(env: Any, tmp_path: Path) -> None:
    op, gateway, clock = env
    yaml = APIS + (
        "splitters:\n  - name: live\n    backends: [{api: stable, weight: 90}, {api: fresh, weight: 10}]\n"
        "    sticky_header: X-User\n    shadow: {api: fresh, percent: 10}\n"
    )
    with pytest.raises(ConfigError, match="shadow"):  # the shadow may not be a backend (schema)
        await op.deploy(project(tmp_path / "bad", yaml))
    yaml = (
        APIS
        + "  - name: mirror\n"
        + (
            "splitters:\n  - name: live\n    backends: [{api: stable, weight: 90}, {api: fresh, weight: 10}]\n"
            "    sticky_header: X-User\n    shadow: {api: mirror, percent: 10}\n"
        )
    )
    result = await op.deploy(project(tmp_path / "p", yaml))
    assert result["splitters"] == [{"name": "live", "action": "created"}]
    await tick(op, clock, 0.5)
    route = gateway.tables[-1]["splitters"]["live"]
    assert route == {
        "backends": [{"api": "stable", "weight": 90.0}, {"api": "fresh", "weight": 10.0}],
        "sticky_header": "X-User",
        "shadow": {"api": "mirror", "percent": 10.0},
    }
    described = op.splitters.describe("live", op.traffic, gateway.url)
    assert [b["percent"] for b in described["backends"]] == [90.0, 10.0]
    # An API that a splitter uses cannot be deleted from under it.
    with pytest.raises(ConflictError, match="live"):
        await op.delete("fresh")
    # A weight change takes effect on redeploy.
    await op.deploy(
        project(tmp_path / "p", yaml.replace("weight: 90", "weight: 50").replace("weight: 10}", "weight: 50}"))
    )
    await tick(op, clock, 0.5)
    assert weights(gateway) == {"stable": 50.0, "fresh": 50.0}
    assert (await op.delete("live"))["deleted"]
    await tick(op, clock, 0.5)
    assert gateway.tables[-1]["splitters"] == {}
    assert "delete" in kinds(op)
    await op.delete("fresh")  # no splitter uses it any more


async def test_backends_must_exist_and_names_must_not_collide(env: Any, tmp_path: Path) -> None:
    op, gateway, clock = env
    await op.deploy(project(tmp_path / "apis", APIS))
    await tick(op, clock, 0.5)
    before = gateway.tables[-1]
    only_splitter = "splitters:\n  - name: live\n    backends: [{api: stable, weight: 1}, {api: ghost, weight: 1}]\n"
    with pytest.raises(ConfigError, match="'ghost' is neither an API of this project nor a deployed API"):
        await op.deploy(project(tmp_path / "s1", only_splitter))
    with pytest.raises(ConfigError, match="an API of that name is deployed"):
        await op.deploy(
            project(tmp_path / "s2", "splitters:\n  - name: stable\n    backends: [{api: fresh, weight: 1}]\n")
        )
    with pytest.raises(ConfigError, match="reserved"):
        await op.deploy(project(tmp_path / "s3", "splitters:\n  - name: v2\n    backends: [{api: fresh, weight: 1}]\n"))
    v2 = "apis:\n  - name: tensors\n    serving: {protocol: v2}\n"
    mixed = v2 + "splitters:\n  - name: live\n    backends: [{api: stable, weight: 1}, {api: tensors, weight: 1}]\n"
    with pytest.raises(ConfigError, match="different protocols"):
        await op.deploy(project(tmp_path / "s4", mixed))
    assert "tensors" not in op.apis and op.splitters.runtimes == {}  # nothing changed
    await tick(op, clock, 0.5)
    assert gateway.tables[-1]["splitters"] == before["splitters"] == {}
    # A project of splitters only, over APIs another project deployed.
    ok = "splitters:\n  - name: live\n    backends: [{api: stable, weight: 1}]\n"
    assert (await op.deploy(project(tmp_path / "s5", ok)))["splitters"][0]["action"] == "created"
    with pytest.raises(ConfigError, match="a splitter of that name is deployed"):
        await op.deploy(project(tmp_path / "s6", "apis:\n  - name: live\n"))


async def test_canary_steps_then_promotes_on_healthy_figures(env: Any, tmp_path: Path) -> None:
    op, gateway, clock = env
    figures = Figures(gateway, "live")
    await op.deploy(project(tmp_path / "p", APIS + CANARY))
    await tick(op, clock, 0.5)
    assert weights(gateway) == {"stable": 90.0, "fresh": 10.0}
    assert kinds(op)[-1] == "canary_started"
    figures.add("stable", 900)
    figures.add("fresh", 100)
    await tick(op, clock, 30)  # within the interval: nothing moves
    assert weights(gateway)["fresh"] == 10.0
    await tick(op, clock, 31)
    assert weights(gateway) == {"stable": 50.0, "fresh": 50.0}
    assert kinds(op)[-1] == "canary_step"
    figures.add("stable", 500)
    figures.add("fresh", 500, errors=2)  # 0.4% < 1%
    await tick(op, clock, 61)
    assert weights(gateway) == {"stable": 0.0, "fresh": 100.0}
    events = op.store.events("live")
    assert events[-1].kind == "canary_promoted" and "promoted to 100%" in events[-1].message
    assert events[-1].data is not None and events[-1].data["figures"]["canary_requests"] == 500  # this step's only
    described = op.splitters.describe("live", op.traffic, gateway.url)
    assert described["canary"]["phase"] == "promoted"
    # Final: later ticks repeat the decision without new events.
    await tick(op, clock, 120)
    assert kinds(op).count("canary_promoted") == 1


async def test_canary_rolls_back_on_errors_and_on_latency(env: Any, tmp_path: Path) -> None:
    op, gateway, clock = env
    figures = Figures(gateway, "live")
    await op.deploy(project(tmp_path / "p", APIS + CANARY))
    await tick(op, clock, 0.5)
    figures.add("stable", 900)
    figures.add("fresh", 100, errors=5)
    await tick(op, clock, 61)
    assert weights(gateway) == {"stable": 100.0, "fresh": 0.0}
    last = op.store.events("live")[-1]
    assert last.kind == "canary_rolled_back" and "error rate 5.00% > max_error_rate 1%" in last.message

    # A new canary block starts afresh; this time the canary is slow (p99 50 ms vs 4 ms).
    await op.deploy(project(tmp_path / "p", APIS + CANARY.replace("max_p99_ratio: 2", "max_p99_ratio: 3")))
    await tick(op, clock, 0.5)
    assert weights(gateway) == {"stable": 90.0, "fresh": 10.0}
    figures.add("stable", 900, latency_s=0.004)
    figures.add("fresh", 100, latency_s=0.05)
    await tick(op, clock, 61)
    assert weights(gateway)["fresh"] == 0.0
    last = op.store.events("live")[-1]
    assert last.kind == "canary_rolled_back" and "p99" in last.message


async def test_canary_holds_on_too_few_requests_and_resumes_after_a_restart(env: Any, tmp_path: Path) -> None:
    op, gateway, clock = env
    figures = Figures(gateway, "live")
    await op.deploy(project(tmp_path / "p", APIS + CANARY))
    await tick(op, clock, 0.5)
    figures.add("fresh", 3)
    await tick(op, clock, 61)
    assert kinds(op)[-1] == "canary_held" and weights(gateway)["fresh"] == 10.0
    figures.add("stable", 900)
    figures.add("fresh", 100)
    await tick(op, clock, 61)
    assert weights(gateway)["fresh"] == 50.0
    # An operator restart: the splitter and its canary's step come back from the store.
    restored = Splitters(op.store, clock)
    restored.restore()
    assert restored.runtimes["live"].weights == {"stable": 50.0, "fresh": 50.0}
    assert restored.routes() == op.splitters.routes()
