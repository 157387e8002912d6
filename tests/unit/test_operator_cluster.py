"""The operator's cluster steps on a virtual clock: fake engine, fake gateway, fake cloud (no sockets, no Ray).

Placement of pending replicas on ready nodes, provisioning (cheapest pool, idle release, consolidation with
the replacement ready before the old replica stops), node events and cost figures, tick by tick.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster_operator_env import ClusterOperatorEnv

from thrifty.control.nodes import NODE_EVENT_KINDS

CLUSTER = {
    "engine": "ray",
    "provider": "simulated",
    "launch_delay": "2s",
    "node_idle_timeout": "10s",
    "consolidation": {"utilization_threshold": 0.6, "underused_for": "5s"},
    "node_pools": [
        {"name": "cpu", "instance_type": "m5.large", "spot": True},
        {"name": "gpu-od", "instance_type": "g4dn.xlarge", "priority": 1},
        {"name": "gpu", "instance_type": "g4dn.xlarge", "spot": True},
    ],
}

TWO_APIS = """
apis:
  - name: a
    compute: {cpu: 0.5, gpu: 0.5}
    autoscaling: {min_replicas: MIN_A}
  - name: b
    compute: {cpu: 0.5, gpu: 0.5}
"""


class Env(ClusterOperatorEnv):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, CLUSTER)

    async def deploy(self, yaml: str) -> None:
        await self.deploy_yaml(yaml)

    def ready(self, api: str) -> list[str]:
        return self.ready_replicas(api)

    def node_of(self, replica_id: str) -> str | None:
        placement = self.engine.placements.get(replica_id)
        return placement.node_id if placement is not None else None

    def info(self) -> dict[str, Any]:
        return self.cluster.info(self.clock())

    def events(self) -> list[str]:
        return [f"{e.kind}: {e.message}" for e in self.store.cluster_events(NODE_EVENT_KINDS, 100)]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


async def test_two_half_gpu_apis_share_one_gpu_node_from_the_cheapest_pool(env: Env) -> None:
    await env.deploy(TWO_APIS.replace("MIN_A", "1"))
    await env.tick()
    assert env.engine.started == []  # no node yet: both wait, and one node is bought for both
    assert env.cloud.launched == ["gpu-1"]
    assert env.op.describe("a")["status"] == "updating"
    await env.tick(1.0, times=2)  # the node joins after its 2 s launch delay; replicas start on it
    assert {env.node_of(launch.replica_id) for launch in env.engine.started} == {"fake-gpu-1"}
    await env.tick(1.0)
    assert len(env.ready("a")) == len(env.ready("b")) == 1
    assert env.gateway.tables[-1]["apis"]["a"]["replicas"]

    info = env.info()
    (node,) = info["nodes"]
    assert (node["pool"], node["capacity"], node["state"]) == ("gpu", "spot", "ready")
    assert node["gpu"] == {"used": 1.0, "total": 1}
    assert node["cpu"]["used"] == 1.0
    cost = info["cost"]
    assert cost["per_hour"] == pytest.approx(node["price_per_hour"])
    assert cost["by_api_per_hour"]["a"] == pytest.approx(cost["by_api_per_hour"]["b"])
    assert sum(cost["by_api_per_hour"].values()) + cost["idle_per_hour"] == pytest.approx(cost["per_hour"], abs=1e-5)
    described = env.op.describe("a")
    assert described["cost"]["per_hour"] == pytest.approx(cost["by_api_per_hour"]["a"])
    kinds = [e.split(":")[0] for e in env.events()]
    assert kinds == ["node_launch", "node_ready"]


async def test_scale_up_buys_a_node_of_the_cheapest_pool_and_delete_releases_idle_nodes(env: Env) -> None:
    await env.deploy(TWO_APIS.replace("MIN_A", "1"))
    await env.tick(1.0, times=4)
    assert len(env.ready("a")) == 1
    await env.deploy(TWO_APIS.replace("MIN_A", "2"))  # the one GPU is full: a second node is needed
    await env.tick()
    assert env.cloud.launched == ["gpu-1", "gpu-2"]  # spot g4dn, not the on-demand pool of the same type
    assert env.op.describe("a")["cluster"]["replicas"] == 1  # waiting for that node
    await env.tick(1.0, times=4)
    assert sorted(str(env.node_of(r)) for r in env.ready("a")) == ["fake-gpu-1", "fake-gpu-2"]

    await env.op.delete("a")
    await env.op.delete("b")
    await env.tick(1.0, times=3)
    assert env.cloud.terminated == []  # empty, but not for node_idle_timeout (10 s) yet
    await env.tick(1.0, times=10)
    assert sorted(env.cloud.terminated) == ["gpu-1", "gpu-2"]
    await env.tick()
    assert env.info()["nodes"] == []
    assert env.store.nodes() == []
    releases = [e for e in env.events() if e.startswith("node_release")]
    assert len(releases) == 2 and "node_idle_timeout" in releases[0]


async def test_consolidation_starts_the_replacement_and_stops_the_old_replica_only_once_it_is_ready(
    env: Env,
) -> None:
    await env.deploy(TWO_APIS.replace("MIN_A", "2"))  # a: 2 x 0.5, b: 1 x 0.5 -> two GPU nodes
    await env.tick(1.0, times=5)
    assert sorted(env.cloud.launched) == ["gpu-1", "gpu-2"]
    assert len(env.ready("a")) == 2 and len(env.ready("b")) == 1
    await env.op.delete("b")  # now each node holds one replica of a at 0.5 GPU: both underused
    a_before = set(env.ready("a"))
    seen_ready = []
    for _ in range(40):
        await env.tick(0.5)
        ready = env.ready("a")
        seen_ready.append(len(ready))
        if len(env.cloud.terminated) == 1:
            break
    assert len(env.cloud.terminated) == 1
    assert min(seen_ready) >= 2  # never fewer than the two it had: the replacement was ready first
    a_after = set(env.ready("a"))
    assert len(a_after) == 2 and len({env.node_of(r) for r in a_after}) == 1
    moved = a_before - a_after
    assert len(moved) == 1 and moved <= set(env.engine.stopped)
    events = env.events()
    assert any(e.startswith("consolidation: consolidate") for e in events)
    assert any(e.startswith("node_release") and "consolidated" in e for e in events)


async def test_a_replica_no_pool_can_hold_waits_with_its_reason(env: Env) -> None:
    await env.deploy("apis:\n  - name: big\n    compute: {cpu: 64}\n")
    await env.tick(1.0, times=2)
    assert env.cloud.launched == []
    waiting = env.op.describe("big")["cluster"]
    assert waiting["replicas"] == 1
    assert waiting["reasons"] == ["larger than a node of any pool it may use"]


async def test_costs_per_million_requests_over_the_window(env: Env) -> None:
    await env.deploy(TWO_APIS.replace("MIN_A", "1"))
    await env.tick(1.0, times=4)
    start = env.clock()
    for i in range(1, 11):
        env.op.traffic.add(env.clock(), {"apis": {"a": {"requests": {"2xx": 100 * i}}}})
        await env.tick(1.0)
    cost = env.op.describe("a")["cost"]
    assert cost["requests"] > 0
    hours = (env.clock() - start) / 3600
    assert cost["spent"] == pytest.approx(cost["per_hour"] * hours, rel=0.3)
    assert cost["per_million_requests"] == pytest.approx(cost["spent"] / cost["requests"] * 1e6, rel=1e-3)
    assert env.op.describe("b")["cost"]["per_million_requests"] is None  # no requests: no per-request figure
