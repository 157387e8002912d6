"""The random spot market: interruptions per node-hour, notice length, correlation within a pool, capacity
outages; reproducible with a seeded RNG and a fake clock, carried out on the in-memory provider."""

from __future__ import annotations

import asyncio
import random

import pytest

from thrifty.clouds.base import CapacityError, CloudNode
from thrifty.clouds.fake import FakeCloud
from thrifty.clouds.preemption import (
    CapacityChange,
    PoolChaos,
    Preemption,
    PreemptionProcess,
    apply,
    chance,
    run,
)
from thrifty.policy.cluster_types import NodeSpec


def spec(pool: str, spot: bool = True) -> NodeSpec:
    return NodeSpec(pool=pool, instance_type="m5.large", cpu=2, mem_bytes=8 * 2**30, gpus=0, gpu_mem_bytes=0,
                    price_per_hour=0.03, spot=spot, price_on_demand_per_hour=0.096)  # fmt: skip


def nodes(pool: str, n: int, spot: bool = True) -> list[CloudNode]:
    return [CloudNode(id=f"{pool}-{i}", spec=spec(pool, spot), state="running", launched_s=0.0) for i in range(n)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_chance_is_a_poisson_process() -> None:
    assert chance(0.0, 3600) == 0.0 and chance(1.0, 0) == 0.0
    assert chance(1.0, 3600) == pytest.approx(1 - 1 / 2.718281828, rel=1e-6)
    assert chance(3600.0, 1.0) == pytest.approx(chance(1.0, 3600.0))


def test_the_same_seed_gives_the_same_events() -> None:
    chaos = {"a": PoolChaos(interruptions_per_node_hour=30, notice_s=30, correlation=0.3, outages_per_hour=5,
                            outage_s=60)}  # fmt: skip
    runs = []
    for _ in range(2):
        p = PreemptionProcess(chaos, random.Random(7), 0.0)
        live = nodes("a", 8)
        runs.append([p.step(float(t), live) for t in range(0, 600, 5)])
    assert runs[0] == runs[1] and any(runs[0])


def test_rate_sets_how_many_nodes_go() -> None:
    # 100 nodes at 1 interruption per node-hour over 30 minutes: ~39 go (1 - e^-0.5); seeded, so exact.
    p = PreemptionProcess({"a": PoolChaos(interruptions_per_node_hour=1.0)}, random.Random(1), 0.0)
    live = nodes("a", 100)
    taken = [e for t in range(10, 1810, 10) for e in p.step(float(t), live) if isinstance(e, Preemption)]
    assert 25 <= len(taken) <= 55
    assert len({e.node_id for e in taken}) == len(taken)  # never the same node twice


def test_only_spot_nodes_of_pools_with_chaos_are_taken_with_the_pools_notice() -> None:
    p = PreemptionProcess({"a": PoolChaos(interruptions_per_node_hour=1e9, notice_s=0)}, random.Random(0), 0.0)
    events = p.step(1.0, nodes("a", 2) + nodes("b", 2) + nodes("od", 2, spot=False))
    assert events == [Preemption("a-0", "a", 0, False), Preemption("a-1", "a", 0, False)]


@pytest.mark.parametrize(("correlation", "want"), [(0.0, 1), (1.0, 5)])
def test_correlation_takes_other_nodes_of_the_pool_along(correlation: float, want: int) -> None:
    # a rate that makes one interruption very likely per step, none in the other pool
    chaos = {"a": PoolChaos(interruptions_per_node_hour=60, correlation=correlation), "b": PoolChaos()}
    p = PreemptionProcess(chaos, random.Random(3), 0.0)
    live = nodes("a", 5) + nodes("b", 5)
    t = 0.0
    first: list[Preemption | CapacityChange] = []
    while not first:
        t += 1.0
        first = p.step(t, live)
    assert len(first) == want and all(isinstance(e, Preemption) and e.pool == "a" for e in first)
    assert [isinstance(e, Preemption) and e.correlated for e in first] == [False] + [True] * (want - 1)


def test_a_pool_runs_out_of_capacity_for_the_outage_then_comes_back() -> None:
    p = PreemptionProcess({"a": PoolChaos(outages_per_hour=1e9, outage_s=120)}, random.Random(0), 0.0)
    assert p.step(10.0, []) == [CapacityChange("a", False, 130.0)]
    assert p.step(129.0, []) == [] and p.out_of_capacity() == {"a": 130.0}
    assert p.step(130.0, []) == [CapacityChange("a", True)]


async def test_apply_reclaims_nodes_and_takes_capacity_away_on_the_fake_provider() -> None:
    clock = Clock()
    cloud = FakeCloud(clock)
    node = await cloud.launch(spec("a"))
    await apply(cloud, [Preemption(node.id, "a", 30.0, False), CapacityChange("a", False, 100.0)])
    assert [(n.node_id, n.deadline_s) for n in cloud.notices()] == [(node.id, 30.0)]
    with pytest.raises(CapacityError):
        await cloud.launch(spec("a"))
    clock.now = 30.0
    assert cloud.nodes()[0].state == "terminated"
    await apply(cloud, [CapacityChange("a", True)])
    await cloud.launch(spec("a"))


async def test_run_steps_until_stopped_and_reports_each_batch() -> None:
    clock = Clock()
    cloud = FakeCloud(clock)
    for _ in range(3):
        await cloud.launch(spec("a"))
    process = PreemptionProcess({"a": PoolChaos(interruptions_per_node_hour=1e9, notice_s=0)}, random.Random(0), 0.0)
    stop = asyncio.Event()
    seen: list[str] = []

    def record(events: object) -> None:
        assert isinstance(events, list)
        seen.extend(e.node_id for e in events if isinstance(e, Preemption))
        clock.now += 1.0
        stop.set()

    clock.now = 1.0
    await run(cloud, process, clock, stop, tick_s=0.001, on_events=record)
    assert seen == ["a-1", "a-2", "a-3"]
    assert all(n.state == "terminated" for n in cloud.nodes())
