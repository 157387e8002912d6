"""The placement step: which ready node each pending replica starts on (the pure ``policy.placement``).

Pending replicas are those the deployments step asked for that run nowhere yet; placed ones hold their
capacity. What cannot be placed keeps its reason (shown by ``thrifty get``) and waits for provisioning
to buy room.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thrifty.policy.cluster_types import ClusterReplica, NodeView
from thrifty.policy.placement import PlacementDecision, place


class PlacementStep:
    def __init__(self) -> None:
        self.unplaced: dict[str, str] = {}  # replica id -> why it has no node yet
        self.last_reason: dict[str, Any] = {}
        # The last inputs and decision: placement is pure, so the same nodes and replicas (a replica waiting
        # for a node to launch, tick after tick) get the same decision without packing every node again.
        self._last: tuple[tuple[tuple[NodeView, ...], tuple[ClusterReplica, ...]], PlacementDecision] | None = None

    def update(
        self, now: float, nodes: Sequence[NodeView], placed: Sequence[ClusterReplica], pending: Sequence[ClusterReplica]
    ) -> PlacementDecision:
        key = (tuple(nodes), (*placed, *pending))
        if self._last is not None and self._last[0] == key:
            decision = self._last[1]
        else:
            decision = place(key[0], key[1])
            self._last = (key, decision)
        self.unplaced = {u.replica_id: u.reason for u in decision.unplaced}
        self.last_reason = {**decision.reason, "now_s": now}
        return decision
