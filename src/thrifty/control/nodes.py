"""The nodes step: what the operator knows of the nodes it bought, kept in step with the cloud provider.

Each tick ``update(now)`` reads the provider's nodes and turns them into the ``NodeView``s placement and
provisioning decide on: a node asked for is ``launching`` until it has joined the engine (``ready``), a
node being consolidated is ``cordoned`` (keeps its replicas, takes no new ones), one being given back is
``terminating``. Every node is kept in the store (``nodes`` table) so ``thrifty cluster info`` lists it
and a later operator knows what a crashed one had bought. Launches, joins, terminations and losses are
events (api ``-``) with their reason records.

Two clocks, as in the operator: ``now`` (monotonic, the policies' durations) and ``wall`` (timestamps
shown to users). The cost simulator passes the same virtual clock for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from thrifty.clouds.base import CloudNode, CloudProvider, capacity_kind
from thrifty.control.store import NodeRecord, ProcessRecord, Store
from thrifty.policy.cluster_types import NodeSpec, NodeState, NodeView

PLATFORM = "-"  # the events' "api" for what belongs to the platform, not to one API
NODE_EVENT_KINDS = ("node_launch", "node_ready", "node_release", "node_lost", "node_launch_failed", "consolidation")


@dataclass(frozen=True, slots=True)
class TrackedNode:
    id: str
    spec: NodeSpec
    state: NodeState
    since_s: float  # when it entered ``state`` (monotonic)
    launched_at: float  # wall clock
    ready_at: float | None = None
    engine_node_id: str | None = None
    reason: str = ""

    def view(self) -> NodeView:
        return NodeView(id=self.id, spec=self.spec, state=self.state, since_s=self.since_s)

    def record(self) -> NodeRecord:
        s = self.spec
        return NodeRecord(self.id, s.pool, s.instance_type, s.spot, s.price_per_hour, self.state, self.launched_at,
                          self.ready_at, self.engine_node_id, self.reason)  # fmt: skip


class NodesStep:
    def __init__(self, cloud: CloudProvider, store: Store, wall: Callable[[], float]) -> None:
        self.cloud = cloud
        self.store = store
        self.wall = wall
        self.nodes: dict[str, TrackedNode] = {}
        self._views: list[NodeView] | None = None  # views() until a node changes (most ticks change none)
        self._asked_to_end: set[str] = set()
        # Providers that run nodes as local processes (simulated) name them, so that `thrifty down` without an
        # operator, or the next operator after a crash, can stop them.
        self._identities = getattr(cloud, "identities", None)

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.store.add_event(PLATFORM, kind, message, self.wall(), data)

    def _put(self, node: TrackedNode) -> None:
        self.nodes[node.id] = node
        self._views = None
        self.store.put_node(node.record())

    def update(self, now: float) -> list[NodeView]:
        """Follow the provider: joins, and nodes that went away (asked to, or lost)."""
        seen: set[str] = set()
        nodes = self.nodes
        for cloud_node in self.cloud.nodes():
            seen.add(cloud_node.id)
            node = nodes.get(cloud_node.id)
            if node is not None and cloud_node.state == "running" and node.state != "launching":
                continue  # joined before: nothing to follow (most nodes, most ticks)
            self._follow(cloud_node, now)
        for node_id in [n for n in self.nodes if n not in seen]:
            self._gone(node_id, "the provider no longer lists it")
        return self.views()

    def _follow(self, cn: CloudNode, now: float) -> None:
        node = self.nodes.get(cn.id)
        if cn.state == "terminated":
            if node is not None:
                self._gone(cn.id, cn.error or "terminated")
            return
        if node is None:  # launched by us in an earlier life, or by hand: track it from now on
            node = TrackedNode(cn.id, cn.spec, "launching", now, self.wall(), reason="found at the provider")
            self._put(node)
        if cn.state == "running" and node.state == "launching":
            self._put(replace(node, state="ready", since_s=now, ready_at=self.wall(), engine_node_id=cn.engine_node_id))
            identity = self._identities().get(cn.id) if self._identities is not None else None
            if identity is not None:
                self.store.put_process(ProcessRecord(cn.id, "node", None, None, identity, self.wall()))
            waited = self.wall() - node.launched_at
            self.event("node_ready", f"{cn.id} ({cn.spec.pool}) joined after {waited:.1f}s",
                       {"node": cn.id, "pool": cn.spec.pool, "launch_s": round(waited, 3)})  # fmt: skip

    def _gone(self, node_id: str, why: str) -> None:
        node = self.nodes.pop(node_id)
        self._views = None
        self.store.delete_node(node_id)
        self.store.delete_process(node_id)
        if node_id in self._asked_to_end:
            self._asked_to_end.discard(node_id)
            return
        self.event("node_lost", f"{node_id} ({node.spec.pool}) went away: {why}", {"node": node_id, "error": why})

    def views(self) -> list[NodeView]:
        """Every tracked node, in id order (the same view objects while no node changes)."""
        if self._views is None:
            self._views = [n.view() for n in sorted(self.nodes.values(), key=lambda n: n.id)]
        return list(self._views)

    def engine_node_id(self, node_id: str) -> str | None:
        node = self.nodes.get(node_id)
        return node.engine_node_id if node is not None else None

    def spec(self, node_id: str) -> NodeSpec | None:
        node = self.nodes.get(node_id)
        return node.spec if node is not None else None

    # actions -------------------------------------------------------------------------------------------
    def launched(self, cn: CloudNode, reason: str, now: float, data: dict[str, Any]) -> None:
        self._put(TrackedNode(cn.id, cn.spec, "launching", now, self.wall(), reason=reason))
        kind = capacity_kind(cn.spec)
        self.event("node_launch", f"launch {cn.id} ({cn.spec.pool}, {kind}, ${cn.spec.price_per_hour:.4g}/h): {reason}",
                   {"node": cn.id, **data})  # fmt: skip

    def set_state(self, node_id: str, state: NodeState, now: float) -> None:
        node = self.nodes.get(node_id)
        if node is not None and node.state != state:
            self._put(replace(node, state=state, since_s=now))

    async def release(self, node_id: str, reason: str, now: float, data: dict[str, Any]) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        self.set_state(node_id, "terminating", now)
        self._asked_to_end.add(node_id)
        age = self.wall() - node.launched_at
        self.event("node_release", f"release {node_id} ({node.spec.pool}) after {age:.0f}s: {reason}",
                   {"node": node_id, **data})  # fmt: skip
        await self.cloud.terminate(node_id)

    async def close(self) -> None:
        """Give every node back (``thrifty down``)."""
        self._asked_to_end.update(self.nodes)
        await self.cloud.close()
        for node_id in list(self.nodes):
            self.store.delete_node(node_id)
            self.store.delete_process(node_id)
        self.nodes.clear()
        self._views = None
