"""The CloudProvider seam: buy a node of a pool, give it back, list what is held, hear when one will be taken.

Small on purpose, so an AWS provider on boto3 fits it: ``launch`` is ``run_instances`` (or a one-instance
``create_fleet``) that returns at once with a pending node, ``terminate`` is ``terminate_instances``,
``nodes`` is ``describe_instances`` filtered by the platform's tag, and ``notices`` are the spot
interruption notices and rebalance recommendations (instance metadata or EventBridge). A pool that has no
capacity now raises ``CapacityError`` (EC2's ``InsufficientInstanceCapacity``), which provisioning treats as
"try another pool". Times are read through the injected clock, so the same operator steps run on the
simulator's virtual clock with a fake provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from thrifty.errors import NotFoundError, ThriftyError
from thrifty.policy.cluster_types import NodeSpec

CloudNodeState = Literal["pending", "running", "terminated"]
"""pending: bought, not joined the engine yet; running: joined (``engine_node_id`` set); terminated: gone
(asked to, reclaimed, or failed to start: ``error`` says which)."""

NoticeKind = Literal["interruption", "rebalance"]
"""interruption: the node will be taken at ``deadline_s`` (AWS: two minutes' notice, sometimes none);
rebalance: the node is at elevated risk of interruption (AWS: rebalance recommendation), no deadline."""

# Labels every provider puts on the engine's node, so replicas can be pinned and nodes told apart.
NODE_LABEL = "thrifty.node"
POOL_LABEL = "thrifty.pool"
CAPACITY_LABEL = "thrifty.capacity"  # "spot" | "on-demand"


def capacity_kind(spec: NodeSpec) -> str:
    return "spot" if spec.spot else "on-demand"


def node_labels(node_id: str, spec: NodeSpec) -> dict[str, str]:
    return {NODE_LABEL: node_id, POOL_LABEL: spec.pool, CAPACITY_LABEL: capacity_kind(spec)}


@dataclass(frozen=True, slots=True)
class CloudNode:
    id: str  # the provider's id: an instance id on AWS, "<pool>-<n>" on the simulated provider
    spec: NodeSpec
    state: CloudNodeState
    launched_s: float  # when it was asked for (provider clock)
    ready_s: float | None = None  # when it joined the engine
    engine_node_id: str | None = None  # the engine's id for it (a Ray node id), once joined
    error: str | None = None  # why it failed to start or went away without being asked to


@dataclass(frozen=True, slots=True)
class NodeNotice:
    node_id: str
    kind: NoticeKind
    issued_s: float
    deadline_s: float | None = None  # interruption: when the node goes; None for a rebalance recommendation


class CapacityError(ThriftyError):
    """The pool has no capacity now (EC2: ``InsufficientInstanceCapacity``); provisioning tries another pool."""

    code = "capacity_unavailable"

    def __init__(self, pool: str, spot: bool, message: str) -> None:
        super().__init__(message, details={"pool": pool, "spot": spot})
        self.pool = pool
        self.spot = spot


class UnknownNodeError(NotFoundError):
    """The provider has no such node (never launched, or already gone)."""


class CloudProvider(Protocol):
    async def launch(self, spec: NodeSpec) -> CloudNode:
        """Ask for one node of ``spec.pool``; returns it pending at once. Raises ``CapacityError``."""

    async def terminate(self, node_id: str) -> None:
        """Give the node back; its replicas die with it (the operator drains it first)."""

    def nodes(self) -> list[CloudNode]:
        """Every node this provider launched and has not forgotten, terminated ones included."""

    def notices(self) -> list[NodeNotice]:
        """Interruption notices and rebalance recommendations for live nodes, oldest first."""

    async def close(self) -> None:
        """Terminate every node it launched (``thrifty down``)."""
