"""The local provider: this machine is the one node; nothing can be bought or given back.

It is what ``provider: local`` means: the local engine (or a Ray head started on this machine) runs every
replica here, so provisioning only ever sees one node, and a launch is refused with ``CapacityError``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from thrifty.clouds.base import CapacityError, CloudNode, NodeNotice, UnknownNodeError
from thrifty.policy.cluster_types import NodeSpec

LOCAL_POOL = "local"
LOCAL_NODE_ID = "local"


def _memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def this_machine(gpus: int = 0, gpu_mem_bytes: int = 0) -> NodeSpec:
    """This machine as a node: its CPUs and memory, the GPUs the caller says it has, no price."""
    return NodeSpec(
        pool=LOCAL_POOL,
        instance_type="local",
        cpu=float(os.cpu_count() or 1),
        mem_bytes=_memory_bytes(),
        gpus=gpus,
        gpu_mem_bytes=gpu_mem_bytes,
        price_per_hour=0.0,
        spot=False,
    )


class LocalCloud:
    def __init__(
        self,
        spec: NodeSpec | None = None,
        *,
        engine_node_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        now = clock()
        self._node = CloudNode(
            id=LOCAL_NODE_ID,
            spec=spec or this_machine(),
            state="running",
            launched_s=now,
            ready_s=now,
            engine_node_id=engine_node_id,
        )

    async def launch(self, spec: NodeSpec) -> CloudNode:
        raise CapacityError(spec.pool, spec.spot, "the local provider has only this machine; it cannot launch nodes")

    async def terminate(self, node_id: str) -> None:
        if node_id != LOCAL_NODE_ID:
            raise UnknownNodeError(f"no node {node_id!r}: the local provider has only {LOCAL_NODE_ID!r}")
        # This machine is not given back: the platform runs on it.

    def nodes(self) -> list[CloudNode]:
        return [self._node]

    def notices(self) -> list[NodeNotice]:
        return []

    async def close(self) -> None:
        return None
