"""The simulated provider: each node of a pool is a Ray worker node started on this machine.

"Launch a node of pool X" waits ``launch_delay_s`` (a cloud's boot time), then runs ``ray start --block
--address=<head>`` with the pool's declared logical CPUs, GPUs and memory, a ``pool:<name>`` custom resource
and the labels ``thrifty.node``, ``thrifty.pool`` and ``thrifty.capacity`` (spot | on-demand); the node
is running once Ray lists it alive. Ray only counts GPUs, so a GPU pool works on a machine without one.
"Terminate" ends every process of that node (``node_processes``), as a vanished instance would; Ray
declares the node dead within its health-check timeout and its actors die with it.

The spot seams live here too, for the spot work and the tests: ``preempt(node, notice_s)`` posts an
interruption notice, drains the node in Ray (reason: preemption) and reclaims it after ``notice_s``;
``recommend_rebalance`` posts a rebalance recommendation; ``set_capacity`` makes a pool run out, so a
launch raises ``CapacityError`` as EC2's ``InsufficientInstanceCapacity`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from thrifty.clouds.base import (
    NODE_LABEL,
    CapacityError,
    CloudNode,
    NodeNotice,
    UnknownNodeError,
    node_labels,
)
from thrifty.clouds.node_processes import kill_session, session_members
from thrifty.engines.identity import ProcessIdentity
from thrifty.engines.process import ChildProcess, child_env
from thrifty.engines.ray_cluster import RayCluster
from thrifty.policy.cluster_types import NodeSpec

NODE_OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; replicas put nothing in it
POOL_RESOURCE_UNITS = 1000  # "pool:<name>": enough units that any number of replicas can ask for a bit


def pool_resource(pool: str) -> str:
    return f"pool:{pool}"


def ray_start_args(address: str, node_id: str, spec: NodeSpec) -> list[str]:
    """The ``ray start`` command of one simulated node (pure). Ray counts whole CPUs and GPUs per node."""
    labels = ",".join(f"{k}={v}" for k, v in node_labels(node_id, spec).items())
    return [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
        f"--address={address}",
        f"--num-cpus={max(1, round(spec.cpu))}",
        f"--num-gpus={spec.gpus}",
        f"--memory={spec.mem_bytes}",
        f"--object-store-memory={NODE_OBJECT_STORE_BYTES}",
        f"--resources={json.dumps({pool_resource(spec.pool): POOL_RESOURCE_UNITS})}",
        f"--labels={labels}",
        "--include-log-monitor=false",
        "--disable-usage-stats",
    ]  # fmt: skip


class SimulatedCloud:
    def __init__(
        self,
        cluster: RayCluster,
        home: Path,
        *,
        launch_delay_s: float = 5.0,
        join_timeout_s: float = 60.0,
        poll_interval_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cluster = cluster
        self._home = home
        self.launch_delay_s = launch_delay_s
        self._join_timeout_s = join_timeout_s
        self._poll_s = poll_interval_s
        self._clock = clock
        self._nodes: dict[str, CloudNode] = {}
        self._procs: dict[str, ChildProcess] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._notices: list[NodeNotice] = []
        self._capacity: dict[str, int] = {}  # pool -> launches still possible; absent = unlimited
        self._seq = itertools.count(1)

    def log_path(self, node_id: str) -> Path:
        return self._home / "logs" / "nodes" / f"{node_id}.log"

    # -- the CloudProvider protocol

    async def launch(self, spec: NodeSpec) -> CloudNode:
        left = self._capacity.get(spec.pool)
        if left is not None:
            if left <= 0:
                raise CapacityError(
                    spec.pool, spec.spot, f"insufficient capacity: pool {spec.pool!r} has no node to give now"
                )
            self._capacity[spec.pool] = left - 1
        node_id = f"{spec.pool}-{next(self._seq)}"
        node = CloudNode(id=node_id, spec=spec, state="pending", launched_s=self._clock())
        self._nodes[node_id] = node
        self._tasks[node_id] = asyncio.get_running_loop().create_task(self._bring_up(node_id))
        return node

    async def terminate(self, node_id: str) -> None:
        if node_id not in self._nodes:
            raise UnknownNodeError(f"no node {node_id!r} was launched by this provider")
        await self._end(node_id, error=None)

    def nodes(self) -> list[CloudNode]:
        for node_id, proc in self._procs.items():
            node = self._nodes[node_id]
            if node.state != "terminated" and proc.poll() is not None:
                self._nodes[node_id] = replace(node, state="terminated", error="the node's processes exited")
        return list(self._nodes.values())

    def notices(self) -> list[NodeNotice]:
        live = {n.id for n in self._nodes.values() if n.state != "terminated"}
        return [n for n in self._notices if n.node_id in live]

    async def close(self) -> None:
        await asyncio.gather(
            *(self._end(n.id, error=None) for n in list(self._nodes.values()) if n.state != "terminated")
        )

    # -- simulation controls (the spot work and tests)

    def set_capacity(self, pool: str, launches: int | None) -> None:
        """How many more nodes ``pool`` can give (None: unlimited); past that, ``launch`` raises CapacityError."""
        if launches is None:
            self._capacity.pop(pool, None)
        else:
            self._capacity[pool] = launches

    async def preempt(self, node_id: str, notice_s: float) -> NodeNotice:
        """Reclaim the node as a spot market would: a notice now, the node gone ``notice_s`` later.

        ``notice_s <= 0`` is a hard kill: every process of the node is ended before this returns (no drain)."""
        node = self._live(node_id)
        now = self._clock()
        notice = NodeNotice(node_id=node_id, kind="interruption", issued_s=now, deadline_s=now + max(0.0, notice_s))
        self._notices.append(notice)
        if notice_s <= 0:
            await self._end(node_id, error="preempted without notice (spot interruption)")
            return notice
        if node.engine_node_id is not None:
            # Ray stops placing work there, and actors that die with it report that they were preempted.
            await asyncio.to_thread(
                self._cluster.drain, node.engine_node_id, "preemption", "spot interruption", time.time() + notice_s
            )

        async def reclaim() -> None:
            await asyncio.sleep(notice_s)
            await self._end(node_id, error="preempted (spot interruption)")

        self._tasks[f"{node_id}/reclaim"] = asyncio.get_running_loop().create_task(reclaim())
        return notice

    def recommend_rebalance(self, node_id: str) -> NodeNotice:
        self._live(node_id)
        notice = NodeNotice(node_id=node_id, kind="rebalance", issued_s=self._clock())
        self._notices.append(notice)
        return notice

    async def wait_running(self, node_id: str, timeout_s: float) -> CloudNode:
        """Until the node has joined (or ended); raises TimeoutError after ``timeout_s``."""
        task = self._tasks.get(node_id)
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        return self._nodes[node_id]

    def identities(self) -> dict[str, ProcessIdentity]:
        """The ``ray start`` process of each live node: what ``thrifty down`` stops without an operator."""
        return {
            node_id: proc.identity
            for node_id, proc in self._procs.items()
            if proc.identity is not None and self._nodes[node_id].state != "terminated"
        }

    # -- internals

    def _live(self, node_id: str) -> CloudNode:
        node = self._nodes.get(node_id)
        if node is None or node.state == "terminated":
            raise UnknownNodeError(f"no live node {node_id!r}")
        return node

    async def _bring_up(self, node_id: str) -> None:
        await asyncio.sleep(self.launch_delay_s)
        node = self._nodes[node_id]
        if node.state == "terminated":
            return
        proc = ChildProcess(
            ray_start_args(self._cluster.address, node_id, node.spec),
            log_path=self.log_path(node_id),
            env=child_env({}),
        )
        self._procs[node_id] = proc
        deadline = time.monotonic() + self._join_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                await self._end(node_id, error=f"ray start exited with {proc.poll()} (see {proc.log_path})")
                return
            joined = [
                n
                for n in await asyncio.to_thread(self._cluster.nodes)
                if n.alive and n.labels.get(NODE_LABEL) == node_id
            ]
            if joined:
                if self._nodes[node_id].state == "pending":
                    self._nodes[node_id] = replace(
                        self._nodes[node_id], state="running", ready_s=self._clock(), engine_node_id=joined[0].node_id
                    )
                return
            await asyncio.sleep(self._poll_s)
        await self._end(node_id, error=f"did not join the Ray cluster within {self._join_timeout_s:g}s")

    async def _end(self, node_id: str, error: str | None) -> None:
        node = self._nodes[node_id]
        if node.state == "terminated":
            return
        self._nodes[node_id] = replace(node, state="terminated", error=error)
        task = self._tasks.pop(node_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        proc = self._procs.get(node_id)
        if proc is None:
            return
        proc.stop_requested = True
        # Everything of the node at once, as when a machine is switched off; kill again for any process
        # that was being forked meanwhile.
        for _ in range(3):
            if not kill_session(proc.pid, signal.SIGKILL):
                break
            await asyncio.sleep(0.05)
        await proc.wait(5.0)
        remaining = session_members(proc.pid)
        if remaining:
            kill_session(proc.pid, signal.SIGKILL)
