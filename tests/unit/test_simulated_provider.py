"""The simulated provider's bookkeeping without Ray nodes: pending nodes, capacity errors, notices, the
``ray start`` command it would run; and the local provider (this machine, nothing to buy)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

from thrifty.clouds.base import CapacityError, CloudProvider, UnknownNodeError
from thrifty.clouds.local import LOCAL_NODE_ID, LocalCloud, this_machine
from thrifty.clouds.simulated import SimulatedCloud, pool_resource, ray_start_args
from thrifty.engines.ray_cluster import MAX_TEMP_DIR_CHARS, RayCluster, ray_temp_dir
from thrifty.policy.cluster_types import NodeSpec

GPU = NodeSpec(
    pool="gpu", instance_type="g4dn.xlarge", cpu=4, mem_bytes=16 * 2**30, gpus=1, gpu_mem_bytes=16 * 2**30,
    price_per_hour=0.1578, spot=True, price_on_demand_per_hour=0.526,
)  # fmt: skip
CPU = NodeSpec(
    pool="cpu", instance_type="m5.large", cpu=2, mem_bytes=8 * 2**30, gpus=0, gpu_mem_bytes=0, price_per_hour=0.096,
    spot=False,
)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cloud(tmp_path: Path, clock: Clock | None = None) -> SimulatedCloud:
    # No Ray is reached: every node here stays within its (long) launch delay.
    unreachable = RayCluster("127.0.0.1:1", started_head=False, temp_dir=None)
    return SimulatedCloud(unreachable, tmp_path, launch_delay_s=3600, clock=clock or Clock())


def test_both_providers_fit_the_protocol(tmp_path: Path) -> None:
    providers: list[CloudProvider] = [cloud(tmp_path), LocalCloud()]  # checked by mypy
    assert len(providers) == 2


def test_ray_start_args_declare_the_pools_shape_resource_and_labels() -> None:
    args = ray_start_args("10.0.0.1:6379", "gpu-3", GPU)
    assert args[1:5] == ["-m", "ray.scripts.scripts", "start", "--block"]
    assert "--address=10.0.0.1:6379" in args
    assert "--num-cpus=4" in args and "--num-gpus=1" in args
    assert f"--memory={16 * 2**30}" in args
    resources = json.loads(next(a for a in args if a.startswith("--resources=")).split("=", 1)[1])
    assert resources == {pool_resource("gpu"): 1000}
    assert "--labels=thrifty.node=gpu-3,thrifty.pool=gpu,thrifty.capacity=spot" in args
    on_demand = ray_start_args("h:1", "cpu-1", CPU)
    assert "--labels=thrifty.node=cpu-1,thrifty.pool=cpu,thrifty.capacity=on-demand" in on_demand
    assert "--num-gpus=0" in on_demand


async def test_launch_returns_a_pending_node_and_terminate_ends_it(tmp_path: Path) -> None:
    clock = Clock()
    provider = cloud(tmp_path, clock)
    first = await provider.launch(GPU)
    second = await provider.launch(GPU)
    assert (first.id, second.id) == ("gpu-1", "gpu-2")
    assert first.state == "pending" and first.launched_s == 1000.0 and first.engine_node_id is None
    await provider.terminate(first.id)
    states = {n.id: (n.state, n.error) for n in provider.nodes()}
    assert states == {"gpu-1": ("terminated", None), "gpu-2": ("pending", None)}
    await provider.terminate(first.id)  # twice: nothing more happens
    with pytest.raises(UnknownNodeError):
        await provider.terminate("gpu-9")
    await provider.close()
    assert all(n.state == "terminated" for n in provider.nodes())


async def test_a_pool_without_capacity_refuses_launches_until_it_has_some(tmp_path: Path) -> None:
    provider = cloud(tmp_path)
    provider.set_capacity("gpu", 1)
    await provider.launch(GPU)
    with pytest.raises(CapacityError) as refused:
        await provider.launch(GPU)
    assert refused.value.pool == "gpu" and refused.value.spot is True
    assert "insufficient capacity" in refused.value.message
    await provider.launch(CPU)  # other pools are not affected
    provider.set_capacity("gpu", None)
    await provider.launch(GPU)
    await provider.close()


async def test_preempt_posts_a_notice_then_reclaims_the_node(tmp_path: Path) -> None:
    clock = Clock()
    provider = cloud(tmp_path, clock)
    node = await provider.launch(CPU)
    notice = await provider.preempt(node.id, notice_s=0.05)
    assert (notice.kind, notice.issued_s, notice.deadline_s) == ("interruption", 1000.0, 1000.05)
    assert provider.notices() == [notice]
    for _ in range(200):
        if provider.nodes()[0].state == "terminated":
            break
        await asyncio.sleep(0.01)
    gone = provider.nodes()[0]
    assert gone.state == "terminated" and gone.error is not None and "preempted" in gone.error
    assert provider.notices() == []  # notices are for live nodes
    with pytest.raises(UnknownNodeError):
        await provider.preempt(node.id, 1.0)


async def test_rebalance_recommendation_has_no_deadline(tmp_path: Path) -> None:
    provider = cloud(tmp_path)
    node = await provider.launch(GPU)
    notice = provider.recommend_rebalance(node.id)
    assert notice.kind == "rebalance" and notice.deadline_s is None
    assert provider.notices() == [notice]
    await provider.close()


async def test_local_provider_is_this_machine_and_buys_nothing() -> None:
    local = LocalCloud(engine_node_id="abc", clock=lambda: 5.0)
    (node,) = local.nodes()
    assert node.id == LOCAL_NODE_ID and node.state == "running" and node.engine_node_id == "abc"
    assert node.spec.cpu >= 1 and node.spec.mem_bytes > 0 and node.spec.price_per_hour == 0
    with pytest.raises(CapacityError):
        await local.launch(this_machine())
    await local.terminate(LOCAL_NODE_ID)  # not given back: still there
    assert local.nodes()[0].state == "running"
    with pytest.raises(UnknownNodeError):
        await local.terminate("other")
    assert local.notices() == []


def test_ray_temp_dir_is_short_enough_for_rays_sockets(tmp_path: Path) -> None:
    short_home = Path("/tmp") / f"t-{tmp_path.name[-6:]}"
    assert ray_temp_dir(short_home) == short_home / "ray"
    long_home = tmp_path / ("x" * 60)
    chosen = ray_temp_dir(long_home)
    assert len(str(chosen)) <= MAX_TEMP_DIR_CHARS and chosen.is_dir()
    assert (long_home / "run" / "ray-temp-dir").read_text().strip() == str(chosen)
    chosen.rmdir()
    (short_home / "ray").rmdir()
    short_home.rmdir()


async def test_preempt_with_no_notice_is_a_hard_kill_before_it_returns(tmp_path: Path) -> None:
    clock = Clock()
    provider = cloud(tmp_path, clock)
    node = await provider.launch(GPU)
    notice = await provider.preempt(node.id, notice_s=0)
    assert notice.deadline_s == notice.issued_s == 1000.0
    gone = provider.nodes()[0]  # no waiting: the node's processes were ended inside preempt
    assert gone.state == "terminated" and gone.error is not None and "without notice" in gone.error
    assert provider.notices() == []
