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
