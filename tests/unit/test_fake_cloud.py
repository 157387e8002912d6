"""The in-memory provider on a virtual clock: boot delay, capacity, preemption with notice, rebalance."""

from __future__ import annotations

import pytest

from thrifty.clouds.base import CapacityError, CloudProvider, UnknownNodeError
from thrifty.clouds.fake import FakeCloud
from thrifty.policy.cluster_types import NodeSpec

SPOT = NodeSpec(
    pool="gpu", instance_type="g4dn.xlarge", cpu=4, mem_bytes=16 * 2**30, gpus=1, gpu_mem_bytes=16 * 2**30,
    price_per_hour=0.1578, spot=True,
)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def provider(clock: Clock, delay_s: float = 30.0) -> CloudProvider:
    return FakeCloud(clock, launch_delay_s=delay_s)


async def test_a_node_runs_after_its_launch_delay_on_the_clock() -> None:
    clock = Clock()
    cloud = provider(clock)
    node = await cloud.launch(SPOT)
    assert node.state == "pending"
    clock.now = 29.9
    assert cloud.nodes()[0].state == "pending"
    clock.now = 500.0  # a clock that jumps still sees when it became ready
    (running,) = cloud.nodes()
    assert (running.state, running.ready_s, running.engine_node_id) == ("running", 30.0, "fake-gpu-1")
    await cloud.terminate(node.id)
    assert cloud.nodes()[0].state == "terminated"
    with pytest.raises(UnknownNodeError):
        await cloud.terminate("nope")


async def test_capacity_and_preemption_and_rebalance() -> None:
    clock = Clock()
    cloud = FakeCloud(clock, launch_delay_s=0)
    cloud.set_capacity("gpu", 1)
    node = await cloud.launch(SPOT)
    with pytest.raises(CapacityError):
        await cloud.launch(SPOT)
    rebalance = cloud.recommend_rebalance(node.id)
    notice = await cloud.preempt(node.id, notice_s=120)
    assert cloud.notices() == [rebalance, notice] and notice.deadline_s == 120
    clock.now = 119.0
    assert cloud.nodes()[0].state == "running"
    clock.now = 120.0
    gone = cloud.nodes()[0]
    assert gone.state == "terminated" and gone.error is not None and "preempted" in gone.error
    assert cloud.notices() == [] and cloud.terminated == [node.id]


class _AdvanceEveryNode(FakeCloud):
    """The reference: every read advances every node (what ``FakeCloud`` did before it kept the moving ones)."""

    def _advance_moving(self) -> None:
        for fake in self._nodes.values():
            self._advance(fake)


async def test_advancing_only_the_nodes_with_a_transition_ahead_reads_as_advancing_all() -> None:
    import random

    rng = random.Random(3)
    clock = Clock()
    fast, slow = FakeCloud(clock, launch_delay_s=20), _AdvanceEveryNode(clock, launch_delay_s=20)
    for _ in range(400):
        clock.now += rng.choice([0.0, 1.0, 7.0, 30.0])
        what = rng.random()
        assert fast.nodes() == slow.nodes()  # both read at the same times: the same nodes reach their deadlines
        live = [n.id for n in slow.nodes() if n.state != "terminated"]
        if what < 0.3:
            delay = rng.choice([0.0, 20.0])
            fast.launch_delay_s = slow.launch_delay_s = delay
            await fast.launch(SPOT)
            await slow.launch(SPOT)
        elif what < 0.5 and live:
            node_id, notice = rng.choice(live), rng.choice([0.0, 5.0, 120.0])
            await fast.preempt(node_id, notice)
            await slow.preempt(node_id, notice)
        elif what < 0.6 and live:
            node_id = rng.choice(live)
            fast.recommend_rebalance(node_id)
            slow.recommend_rebalance(node_id)
        elif what < 0.7 and live:
            node_id = rng.choice(live)
            await fast.terminate(node_id)
            await slow.terminate(node_id)
        assert fast.notices() == slow.notices()
        assert fast.nodes() == slow.nodes()
        assert fast.terminated == slow.terminated
