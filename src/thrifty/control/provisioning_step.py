"""The provisioning step: which nodes to buy and give back (the pure ``policy.provisioning``).

It keeps the policy's state between ticks (how long each node has been empty or underused, the
consolidation in progress) and its last reason record; carrying out the decision (launches, releases,
cordons, moves) is the cluster's job (``control.cluster``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thrifty.policy.cluster_types import ClusterReplica, NodeView
from thrifty.policy.provisioning import (
    ProvisioningConfig,
    ProvisioningDecision,
    ProvisioningMemo,
    ProvisioningState,
    decide,
)


class ProvisioningStep:
    def __init__(self, config: ProvisioningConfig) -> None:
        self.config = config
        self.state = ProvisioningState()
        self.memo = ProvisioningMemo()  # what a tick repeats while the nodes and replicas stay the same
        self.last_reason: dict[str, Any] = {}

    def update(
        self,
        now: float,
        nodes: Sequence[NodeView],
        replicas: Sequence[ClusterReplica],
        excluded_pools: frozenset[str] = frozenset(),
    ) -> ProvisioningDecision:
        """``excluded_pools``: pools out of spot capacity (the spot step's backoff), not bought from now."""
        decision = decide(self.config, nodes, replicas, self.state, now, excluded_pools, self.memo)
        self.state = decision.state
        self.last_reason = decision.reason
        return decision
