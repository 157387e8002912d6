"""The spot step wired in the operator, on a virtual clock with fakes: a notice cordons the node, replaces its
replica in another pool, unroutes and stops the old one and releases the node before the deadline; a replica
that dies with its node is no crash; a spot shortage buys on demand; state survives in the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster_operator_env import ClusterOperatorEnv

from thrifty.control.spot_step import SPOT_EVENT_KINDS

CLUSTER = {
    "engine": "ray",
    "provider": "simulated",
    "launch_delay": "2s",
    "node_idle_timeout": "10s",
    "consolidation": {"enabled": False},
    "node_pools": [
        {"name": "spot-a", "instance_type": "m5.large", "spot": True},
        {"name": "spot-b", "instance_type": "m5.large", "spot": True, "priority": 1},
        {"name": "od", "instance_type": "m5.large", "priority": 2},
    ],
    "spot": {"on_demand_backup": True},
}
PROJECT = "apis:\n  - name: a\n    compute: {cpu: 1.5}\n    autoscaling: {min_replicas: 1, max_replicas: 1}\n"


class Env(ClusterOperatorEnv):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, CLUSTER)

    async def deploy(self) -> None:
        await self.deploy_yaml(PROJECT)

    def ready(self) -> list[str]:
        return self.ready_replicas()

    def kinds(self) -> list[str]:
        return [e.kind for e in self.store.cluster_events(SPOT_EVENT_KINDS, 200)]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


async def test_a_notice_drains_the_node_into_another_pool_before_the_deadline(env: Env) -> None:
    await env.deploy()
    await env.tick(1.0, times=5)
    (old,) = env.ready()
    assert env.cloud.launched == ["spot-a-1"]
    await env.cloud.preempt("spot-a-1", 30.0)
    await env.tick()
    assert env.cluster.nodes.nodes["spot-a-1"].state == "cordoned"
    assert "spot_interruption" in env.kinds() and "spot_replacement" in env.kinds()
    assert list(env.cluster.spot.replacing.values()) == [old]
    assert env.store.spot_replacing() == env.cluster.spot.replacing  # a restarted operator knows
    await env.tick(1.0, times=6)  # a node of another pool, the replacement ready, the old one unrouted and stopped
    assert env.cloud.launched == ["spot-a-1", "spot-b-2"]
    (new,) = env.ready()
    assert new != old and env.cluster.node_of(new) == "spot-b-2"
    assert old not in {r["id"] for r in env.gateway.tables[-1]["apis"]["a"]["replicas"] if not r["draining"]}
    assert "spot-a-1" in env.cloud.terminated  # released once empty, well before the deadline
    assert env.op.apis["a"].rollout.failures == 0
    assert "spot_release" in env.kinds()


async def test_a_hard_kill_is_no_crash_and_a_shortage_falls_back_to_on_demand(env: Env) -> None:
    await env.deploy()
    await env.tick(1.0, times=5)
    env.cloud.set_capacity("spot-a", 0)
    env.cloud.set_capacity("spot-b", 0)
    (old,) = env.ready()
    await env.cloud.preempt("spot-a-1", 0.0)
    await env.tick(1.0)
    env.engine.crash(old, exit_code=-9)  # the fake engine's replicas do not die with a fake node by themselves
    await env.tick(1.0, times=8)
    assert env.op.apis["a"].rollout.failures == 0  # lost with its node: restarted at once, no backoff
    # The gateway is told so: a request the dying replica cut off is no sign of a poison request.
    assert old in env.gateway.tables[-1]["apis"]["a"]["lost_with_node"]
    (new,) = env.ready()
    node = env.cluster.node_of(new)
    assert node is not None and node.startswith("od-")
    assert "spot_fallback" in env.kinds() or "spot_capacity" in env.kinds()
    assert env.cluster.info(env.clock())["spot"]["on_demand_nodes"] == 1
