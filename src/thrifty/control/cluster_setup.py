"""Build what a cluster file asks for: the engine (local | ray) and the cloud provider (local | simulated).

Constructed in the operator's ``main`` and passed in (nothing at import time). Ray is imported only here
and only for ``engine: ray``, so the local engine never loads it. ``provider: simulated`` starts Ray worker
nodes on this machine, so it needs ``engine: ray``: the local engine could not run replicas on them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from thrifty.clouds.base import CloudProvider
from thrifty.clouds.local import LocalCloud, this_machine
from thrifty.config.cluster import ClusterConfig, ProviderName
from thrifty.control.cluster import Cluster
from thrifty.control.store import Store
from thrifty.engines.base import Engine, PlacingEngine
from thrifty.errors import ConfigError
from thrifty.policy.cluster_types import NodePool


@dataclass
class ClusterSetup:
    engine: Engine
    placing: PlacingEngine | None
    cluster: Cluster
    close: Callable[[], Awaitable[None]]  # after the operator stopped: disconnect from Ray (its head stops)


def check_supported(config: ClusterConfig, source: str) -> None:
    """Combinations the platform cannot run, refused before anything starts."""
    if config.provider == ProviderName.SIMULATED and config.engine != "ray":
        raise ConfigError(
            f"{source}: provider: simulated starts Ray worker nodes, so it needs engine: ray (engine is "
            f"{config.engine!r})",
            details={"file": source, "path": "engine", "value": config.engine, "allowed": ["ray"]},
        )
    if config.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{source}: engine: ray needs Ray: pip install 'thrifty[ray]'", details={"file": source}
            ) from None


async def build(config: ClusterConfig, home: Path, store: Store, wall: Callable[[], float]) -> ClusterSetup:
    """``home``: the platform folder's root. The local provider is one node that is never released."""
    check_supported(config, "cluster file")
    local_pool = (NodePool(spec=this_machine(), min_nodes=1, max_nodes=1, priority=0),)
    if config.engine == "local":
        from thrifty.engines.local import LocalEngine

        local = LocalCloud(local_pool[0].spec, clock=wall)
        cluster = Cluster(config, local, store, wall, pools=local_pool, pin=False)

        async def nothing() -> None:
            return None

        return ClusterSetup(LocalEngine(home), None, cluster, nothing)

    from thrifty.clouds.simulated import SimulatedCloud
    from thrifty.engines.ray import RayEngine
    from thrifty.engines.ray_cluster import RayCluster

    simulated = config.provider == ProviderName.SIMULATED
    ray_cluster = await asyncio.to_thread(
        RayCluster.connect, home, address=config.address, head_cpus=0 if simulated else (os.cpu_count() or 1)
    )
    engine = RayEngine(home)
    cloud: CloudProvider
    if simulated:
        cloud = SimulatedCloud(ray_cluster, home, launch_delay_s=config.launch_delay_s, clock=wall)
        cluster = Cluster(config, cloud, store, wall)
    else:
        cloud = LocalCloud(local_pool[0].spec, engine_node_id=ray_cluster.head_node_id(), clock=wall)
        cluster = Cluster(config, cloud, store, wall, pools=local_pool)

    async def disconnect() -> None:
        await asyncio.to_thread(ray_cluster.close)

    return ClusterSetup(engine, engine, cluster, disconnect)
