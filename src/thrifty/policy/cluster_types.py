"""Plain data shared by the cluster policies (placement, provisioning, costs, spot) and the cloud providers.

No behaviour beyond small derived values: the cluster file (``thrifty.config.cluster``) resolves into
``NodePool``s, a provider launches a ``NodeSpec`` and reports ``NodeView``s, the engine reports where each
replica runs as a ``ClusterReplica``. Units are in the names (``mem_bytes``, ``price_per_hour``); GPU memory
is per GPU on a node and per replica on a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SpotPreference = Literal["prefer", "require", "never"]
"""A replica's use of spot nodes: prefer (spot first, on-demand allowed), require (spot only), never."""

NodeState = Literal["launching", "ready", "cordoned", "terminating"]
"""launching: asked for, not joined yet (counts as capacity for provisioning, takes no replica yet);
ready: takes replicas; cordoned: keeps its replicas, takes no new ones (consolidation, spot notice);
terminating: going away, neither capacity nor a place for replicas."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What one node of a pool is: the shape a provider launches and the price it costs."""

    pool: str
    instance_type: str
    cpu: float
    mem_bytes: int
    gpus: int
    gpu_mem_bytes: int  # per GPU; 0 when gpus == 0
    price_per_hour: float  # what this node costs: the spot price for a spot pool
    spot: bool
    price_on_demand_per_hour: float = 0.0  # the same capacity on demand, for "what spot saves"


@dataclass(frozen=True, slots=True)
class NodePool:
    """A node pool of the cluster file, with the catalog's values filled in (see ``ClusterConfig.pools``)."""

    spec: NodeSpec
    min_nodes: int
    max_nodes: int
    priority: int  # ties on price go to the lower number (0 before 1)

    @property
    def name(self) -> str:
        return self.spec.pool


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node as observed by the operator (from the cloud provider and the engine)."""

    id: str
    spec: NodeSpec
    state: NodeState
    since_s: float  # when it entered ``state`` (launch request, ready, cordon, ...) on the operator's clock


@dataclass(frozen=True, slots=True)
class ReplicaRequest:
    """What one replica reserves, from the API's ``compute`` (cpu cores, bytes, GPU amount)."""

    cpu: float
    mem_bytes: int = 0
    gpu: float = 0.0  # 0, a fraction of one GPU (< 1), or a whole number of GPUs
    gpu_mem_bytes: int | None = None  # per replica; None = its fraction of the GPU's memory (whole GPUs: all)
    node_pools: tuple[str, ...] = ()  # empty = any pool
    spot: SpotPreference = "prefer"
    # Soft: pools to stay out of while another fits (a spot replacement avoids the interrupted pool; a spread
    # move avoids the pool the API's other replicas crowd). Placement ranks these pools' nodes last and
    # provisioning buys elsewhere when any other allowed pool can hold the replica.
    avoid_pools: tuple[str, ...] = ()

    def allows(self, spec: NodeSpec) -> bool:
        """Whether the pool selector and spot preference let this replica run on a node of ``spec``."""
        if self.node_pools and spec.pool not in self.node_pools:
            return False
        if self.spot == "require":
            return spec.spot
        if self.spot == "never":
            return not spec.spot
        return True


@dataclass(frozen=True, slots=True)
class ClusterReplica:
    """A replica to place (``node_id`` None) or placed on a node (with the physical GPUs it holds)."""

    id: str
    api: str
    request: ReplicaRequest
    node_id: str | None = None
    gpu_indices: tuple[int, ...] = ()
