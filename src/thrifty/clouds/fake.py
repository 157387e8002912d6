"""An in-memory provider for tests and the cost simulator: nodes boot, get reclaimed and go on a clock.

Same protocol and the same simulation controls as ``SimulatedCloud`` (``set_capacity``, ``preempt``,
``recommend_rebalance``), but nothing runs: a node is running once ``launch_delay_s`` has passed on the
injected clock, and a preempted one is gone at its notice's deadline. Everything is derived when asked
(``nodes()``), so a virtual clock that jumps ahead sees exactly the states it would have passed through.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

from thrifty.clouds.base import CapacityError, CloudNode, NodeNotice, UnknownNodeError
from thrifty.policy.cluster_types import NodeSpec


@dataclass
class _FakeNode:
    node: CloudNode
    launch_delay_s: float = 0.0  # the provider's delay when it was launched
    reclaim_at_s: float | None = None
    seq: int = 0  # launch order

    def settled(self) -> bool:
        """Whether nothing is ahead of it on the clock (running with no reclaim deadline, or terminated)."""
        return self.node.state == "terminated" or (self.node.state == "running" and self.reclaim_at_s is None)


class FakeCloud:
    def __init__(self, clock: Callable[[], float], *, launch_delay_s: float = 0.0) -> None:
        self._clock = clock
        self.launch_delay_s = launch_delay_s
        self._nodes: dict[str, _FakeNode] = {}
        self._notices: list[NodeNotice] = []
        self._capacity: dict[str, int] = {}
        self._seq = itertools.count(1)
        # Nodes that still have a transition ahead (booting, or reclaimed at a deadline): the only ones a read
        # must advance, so that reading a large, steady fleet costs no work per node.
        self._moving: dict[str, _FakeNode] = {}
        self.launched: list[str] = []
        self.terminated: list[str] = []

    async def launch(self, spec: NodeSpec) -> CloudNode:
        left = self._capacity.get(spec.pool)
        if left is not None:
            if left <= 0:
                raise CapacityError(spec.pool, spec.spot, f"insufficient capacity in pool {spec.pool!r}")
            self._capacity[spec.pool] = left - 1
        seq = next(self._seq)
        node_id = f"{spec.pool}-{seq}"
        node = CloudNode(id=node_id, spec=spec, state="pending", launched_s=self._clock())
        self._nodes[node_id] = self._moving[node_id] = _FakeNode(node, self.launch_delay_s, seq=seq)
        self.launched.append(node_id)
        return node

    async def terminate(self, node_id: str) -> None:
        fake = self._nodes.get(node_id)
        if fake is None:
            raise UnknownNodeError(f"no node {node_id!r} was launched by this provider")
        self._advance(fake)
        if fake.node.state != "terminated":
            fake.node = replace(fake.node, state="terminated")
            self.terminated.append(node_id)
        self._moving.pop(node_id, None)

    def nodes(self) -> list[CloudNode]:
        self._advance_moving()
        return [fake.node for fake in self._nodes.values()]

    def notices(self) -> list[NodeNotice]:
        self._advance_moving()
        nodes = self._nodes
        return [n for n in self._notices if n.node_id in nodes and nodes[n.node_id].node.state != "terminated"]

    async def close(self) -> None:
        for node_id in list(self._nodes):
            await self.terminate(node_id)

    def set_capacity(self, pool: str, launches: int | None) -> None:
        if launches is None:
            self._capacity.pop(pool, None)
        else:
            self._capacity[pool] = launches

    async def preempt(self, node_id: str, notice_s: float) -> NodeNotice:
        fake = self._live(node_id)
        now = self._clock()
        fake.reclaim_at_s = now + notice_s
        self._moving[node_id] = fake
        notice = NodeNotice(node_id=node_id, kind="interruption", issued_s=now, deadline_s=now + notice_s)
        self._notices.append(notice)
        return notice

    def recommend_rebalance(self, node_id: str) -> NodeNotice:
        self._live(node_id)
        notice = NodeNotice(node_id=node_id, kind="rebalance", issued_s=self._clock())
        self._notices.append(notice)
        return notice

    def _live(self, node_id: str) -> _FakeNode:
        fake = self._nodes.get(node_id)
        if fake is not None:
            self._advance(fake)
        if fake is None or fake.node.state == "terminated":
            raise UnknownNodeError(f"no live node {node_id!r}")
        return fake

    def _advance_moving(self) -> None:
        """Advance every node with a transition ahead, in launch order (as advancing all of them would)."""
        if not self._moving:
            return
        for fake in sorted(self._moving.values(), key=lambda f: f.seq):
            self._advance(fake)
            if fake.settled():
                del self._moving[fake.node.id]

    def _advance(self, fake: _FakeNode) -> None:
        now = self._clock()
        node = fake.node
        if node.state == "pending" and now >= node.launched_s + fake.launch_delay_s:
            ready = node.launched_s + fake.launch_delay_s
            fake.node = node = replace(node, state="running", ready_s=ready, engine_node_id=f"fake-{node.id}")
        if node.state != "terminated" and fake.reclaim_at_s is not None and now >= fake.reclaim_at_s:
            fake.node = replace(node, state="terminated", error="preempted (spot interruption)")
            self.terminated.append(node.id)
