"""The Ray engine and the simulated provider on a real local Ray cluster (one head for the module).

A simulated node of a GPU pool joins with the pool's resources and labels; a replica pinned to it answers
HTTP (with the platform secret), sees only its GPU and its memory share; a killed actor is observed as a
failed replica (and its process goes with it); terminating a node ends the replicas on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

ray = pytest.importorskip("ray")

from thrifty.clouds.base import CAPACITY_LABEL, NODE_LABEL, POOL_LABEL, CloudNode  # noqa: E402
from thrifty.clouds.simulated import SimulatedCloud, pool_resource  # noqa: E402
from thrifty.config.schema import ApiConfig  # noqa: E402
from thrifty.dataplane.platform_secret import HEADER, ensured_secret_file, read_secret  # noqa: E402
from thrifty.engines.base import Engine, ReplicaLaunch, ReplicaObservation  # noqa: E402
from thrifty.engines.ray import ACTOR_DIED, RayEngine, RayPlacement, actor_name  # noqa: E402
from thrifty.engines.ray_cluster import NAMESPACE, RayCluster, RayNode  # noqa: E402
from thrifty.policy.cluster_types import NodeSpec  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

GIB = 1024**3
GPU_POOL = NodeSpec(
    pool="gpu", instance_type="g4dn.xlarge", cpu=2, mem_bytes=2 * GIB, gpus=1, gpu_mem_bytes=16 * GIB,
    price_per_hour=0.16, spot=True,
)  # fmt: skip
CPU_POOL = NodeSpec(
    pool="cpu", instance_type="m5.large", cpu=1, mem_bytes=1 * GIB, gpus=0, gpu_mem_bytes=0, price_per_hour=0.03,
    spot=False,
)  # fmt: skip

PREDICTOR = """
import os

class Predictor:
    def __init__(self, config):
        self.config = config

    def predict(self, payload):
        env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "THRIFTY_GPU_MEMORY_FRACTION")}
        return {"echo": payload, "pid": os.getpid(), "env": env}
"""


class Platform:
    def __init__(self, home: Path, project: Path, cluster: RayCluster, engine: RayEngine, cloud: SimulatedCloud):
        self.home = home
        self.project = project
        self.cluster = cluster
        self.engine = engine
        self.cloud = cloud
        self.secret = read_secret(ensured_secret_file(home))

    def launch(self, replica_id: str, **compute: Any) -> ReplicaLaunch:
        api = ApiConfig.model_validate({"name": "echo", "compute": compute})
        config = api.model_dump(mode="json", by_alias=True)
        return ReplicaLaunch(replica_id, "echo", "r1", config, str(self.project))

    def observed(self, replica_id: str) -> ReplicaObservation | None:
        return next((o for o in self.engine.observe() if o.replica_id == replica_id), None)

    async def until(
        self, replica_id: str, check: Callable[[ReplicaObservation | None], bool], timeout_s: float = 30
    ) -> ReplicaObservation | None:
        obs: ReplicaObservation | None = None

        def holds() -> bool:
            nonlocal obs
            obs = self.observed(replica_id)
            return check(obs)

        await eventually(holds, timeout_s)
        return obs

    def ray_node(self, node_id: str) -> RayNode:
        return next(n for n in self.cluster.nodes() if n.node_id == node_id)

    async def node(self, spec: NodeSpec) -> CloudNode:
        node = await self.cloud.launch(spec)
        node = await self.cloud.wait_running(node.id, timeout_s=60)
        assert node.state == "running", node
        return node


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RayCluster]]:
    home = tmp_path_factory.mktemp("home")
    cluster = RayCluster.connect(home)
    yield home, cluster
    cluster.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def platform(
    ray_cluster: tuple[Path, RayCluster], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    home, cluster = ray_cluster
    project = tmp_path_factory.mktemp("project")
    (project / "predictor.py").write_text(PREDICTOR)
    engine = RayEngine(home, default_grace_s=2.0, poll_interval_s=0.1)
    protocol: Engine = engine  # the operator's seam (checked by mypy)
    assert protocol is engine
    cloud = SimulatedCloud(cluster, home, launch_delay_s=0.0)
    yield Platform(home, project, cluster, engine, cloud)
    await engine.close(2.0)
    await cloud.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gpu_node(platform: Platform) -> CloudNode:
    return await platform.node(GPU_POOL)


async def test_simulated_node_joins_with_its_pools_resources_and_labels(
    platform: Platform, gpu_node: CloudNode
) -> None:
    assert gpu_node.engine_node_id is not None and gpu_node.ready_s is not None
    node = platform.ray_node(gpu_node.engine_node_id)
    assert node.alive
    assert node.labels[NODE_LABEL] == gpu_node.id
    assert node.labels[POOL_LABEL] == "gpu"
    assert node.labels[CAPACITY_LABEL] == "spot"
    assert node.resources["CPU"] == 2
    assert node.resources["GPU"] == 1
    assert node.resources["memory"] == 2 * GIB
    assert node.resources[pool_resource("gpu")] == 1000


async def test_replica_pinned_to_a_node_serves_http_with_its_gpu_share(platform: Platform, gpu_node: CloudNode) -> None:
    assert gpu_node.engine_node_id is not None
    placement = RayPlacement(gpu_node.engine_node_id, gpu_mem_bytes=GPU_POOL.gpu_mem_bytes)
    await platform.engine.start_replica(platform.launch("r-gpu", cpu=0.5, mem="256Mi", gpu=0.5), placement)
    obs = await platform.until("r-gpu", lambda o: o is not None and o.state in ("ready", "exited"))
    assert obs is not None and obs.state == "ready", obs
    assert platform.engine.node_of("r-gpu") == gpu_node.engine_node_id
    async with httpx.AsyncClient() as client:
        url = f"http://{obs.host}:{obs.port}/"
        refused = await client.post(url, json={"x": 1})
        assert refused.status_code == 401  # the replica answers the gateway only
        answer = await client.post(url, json={"x": 1}, headers={HEADER.decode(): platform.secret.decode()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["echo"] == {"x": 1}
    assert body["pid"] == obs.pid
    assert body["env"] == {"CUDA_VISIBLE_DEVICES": "0", "THRIFTY_GPU_MEMORY_FRACTION": "0.5"}


async def test_a_killed_actor_is_observed_as_a_failed_replica_and_its_process_goes(
    platform: Platform, gpu_node: CloudNode
) -> None:
    assert gpu_node.engine_node_id is not None
    placement = RayPlacement(gpu_node.engine_node_id)
    await platform.engine.start_replica(platform.launch("r-kill", cpu=0.25), placement)
    obs = await platform.until("r-kill", lambda o: o is not None and o.state == "ready")
    assert obs is not None and obs.pid is not None
    pid = obs.pid
    ray.kill(ray.get_actor(actor_name("r-kill"), namespace=NAMESPACE))
    failed = await platform.until("r-kill", lambda o: o is not None and o.state == "exited")
    assert failed is not None and failed.error is not None
    assert failed.error["error"] == ACTOR_DIED
    await eventually(lambda: not alive(pid), 10)
    platform.engine.forget("r-kill")
    assert platform.observed("r-kill") is None


async def test_a_stopped_replica_drains_and_leaves(platform: Platform, gpu_node: CloudNode) -> None:
    assert gpu_node.engine_node_id is not None
    await platform.engine.start_replica(platform.launch("r-stop", cpu=0.25), RayPlacement(gpu_node.engine_node_id))
    obs = await platform.until("r-stop", lambda o: o is not None and o.state == "ready")
    assert obs is not None and obs.pid is not None
    pid = obs.pid
    await platform.engine.stop_replica("r-stop", 5.0)
    await platform.until("r-stop", lambda o: o is None)
    await eventually(lambda: not alive(pid), 10)
    assert "stopped" in (platform.home / "logs" / "echo" / "r-stop.log").read_text()


async def test_terminating_a_node_removes_it_and_fails_its_replicas(platform: Platform) -> None:
    node = await platform.node(CPU_POOL)
    assert node.engine_node_id is not None
    assert platform.ray_node(node.engine_node_id).resources["CPU"] == 1
    await platform.engine.start_replica(platform.launch("r-lost", cpu=0.5), RayPlacement(node.engine_node_id))
    obs = await platform.until("r-lost", lambda o: o is not None and o.state == "ready")
    assert obs is not None and obs.pid is not None
    await platform.cloud.terminate(node.id)
    assert next(n for n in platform.cloud.nodes() if n.id == node.id).state == "terminated"
    assert not alive(obs.pid)  # the node's processes, replicas included, end at once
    failed = await platform.until("r-lost", lambda o: o is not None and o.state == "exited")
    assert failed is not None and failed.error is not None and failed.error["error"] == ACTOR_DIED
    assert failed.error["preempted"] is False
    engine_node = node.engine_node_id
    await eventually(lambda: not platform.ray_node(engine_node).alive, 30)
    platform.engine.forget("r-lost")


async def eventually(condition: Callable[[], bool], timeout_s: float) -> None:
    """Wait until ``condition()`` holds (a state that no event announces: Ray's view, another process)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_preempt_gives_notice_then_the_node_and_its_replicas_go(platform: Platform) -> None:
    node = await platform.node(CPU_POOL)
    assert node.engine_node_id is not None
    await platform.engine.start_replica(platform.launch("r-spot", cpu=0.5), RayPlacement(node.engine_node_id))
    obs = await platform.until("r-spot", lambda o: o is not None and o.state == "ready")
    assert obs is not None
    notice = await platform.cloud.preempt(node.id, notice_s=1.0)
    assert platform.cloud.notices() == [notice] and notice.deadline_s is not None
    running = platform.observed("r-spot")
    assert running is not None and running.state == "ready"  # the notice leaves time to drain
    failed = await platform.until("r-spot", lambda o: o is not None and o.state == "exited")
    assert failed is not None and failed.error is not None and failed.error["error"] == ACTOR_DIED
    gone = next(n for n in platform.cloud.nodes() if n.id == node.id)
    assert gone.state == "terminated" and gone.error is not None and "preempted" in gone.error
    assert platform.cloud.notices() == []
    assert failed.error["preempted"] is True  # Ray's drain: a reclaim, not a crash
    platform.engine.forget("r-spot")


async def test_a_replica_that_fails_to_load_reports_the_replicas_own_error(
    platform: Platform, gpu_node: CloudNode
) -> None:
    assert gpu_node.engine_node_id is not None
    bad = platform.launch("r-bad", cpu=0.25)
    bad.config["predictor"]["class"] = "Missing"
    await platform.engine.start_replica(bad, RayPlacement(gpu_node.engine_node_id))
    failed = await platform.until("r-bad", lambda o: o is not None and o.state == "exited")
    assert failed is not None and failed.exit_code == 3
    assert failed.error is not None and failed.error["error"] == "predictor_load_failed"
    platform.engine.forget("r-bad")
    assert platform.observed("r-bad") is None


async def test_a_replica_waiting_for_room_stops_at_once(platform: Platform, gpu_node: CloudNode) -> None:
    assert gpu_node.engine_node_id is not None
    placement = RayPlacement(gpu_node.engine_node_id)
    await platform.engine.start_replica(platform.launch("r-block", cpu=1), placement)
    await platform.until("r-block", lambda o: o is not None and o.state == "ready")
    # The node has 2 CPUs and r-block holds one: Ray keeps this actor pending, its replica never starts.
    await platform.engine.start_replica(platform.launch("r-wait", cpu=2), placement)
    await asyncio.sleep(0.3)
    waiting = platform.observed("r-wait")
    assert waiting is not None and waiting.state == "starting" and waiting.port is None
    await platform.engine.stop_replica("r-wait", 5.0)
    assert platform.observed("r-wait") is None
    await platform.engine.stop_replica("r-block", 5.0)
    await platform.until("r-block", lambda o: o is None)


async def test_a_replica_too_big_for_its_node_fails_with_rays_reason(platform: Platform, gpu_node: CloudNode) -> None:
    assert gpu_node.engine_node_id is not None
    await platform.engine.start_replica(platform.launch("r-huge", cpu=8), RayPlacement(gpu_node.engine_node_id))
    failed = await platform.until("r-huge", lambda o: o is not None and o.state == "exited")
    assert failed is not None and failed.error is not None and failed.error["error"] == ACTOR_DIED
    assert "not schedulable" in failed.error["message"]
    platform.engine.forget("r-huge")
