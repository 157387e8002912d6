"""The spot step: interruption notices, rebalance recommendations, spot capacity and spread (the pure
``policy.spot``), run after provisioning on every cluster tick.

Each tick the cluster (``control.cluster``) asks it, in order:

1. ``excluded(now)``: pools out of spot capacity, which provisioning must not buy from;
2. ``update(now, ...)``: builds the ``SpotSnapshot`` (live nodes, every replica with its request, the
   gateway's per-replica load, the provider's notices on the monotonic clock, the replacements in progress,
   the outcomes of the launches made since the last tick, provisioning's launches) and calls ``decide``;
   the cluster then carries the decision out (launches instead of provisioning's, cordons, replacements,
   unroutes, stops, releases).

What it keeps between ticks: the policy's ``SpotState``, the replacements in progress (``replacing``, also in
the store so that a restarted operator does not replace a replica twice), the launch outcomes not yet
reported and the replicas the gateway must not route to (``unrouted``: drained ones, and those of a node that
died, so the gateway retries their cut-off requests elsewhere without bound). Every spot event goes to the
platform's events (``thrifty events``, ``thrifty cluster events``) with kind ``spot_<kind>``.

Notices carry the provider's wall-clock deadlines; the policy measures durations on the monotonic clock,
so a deadline is moved onto it here (``now + (deadline - wall())``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from thrifty.clouds.base import CloudProvider, NodeNotice
from thrifty.config.cluster import ClusterConfig
from thrifty.control.store import Store
from thrifty.policy.cluster_types import ClusterReplica, NodeView
from thrifty.policy.provisioning import Launch
from thrifty.policy.spot import ReplicaLoad, SpotConfig, SpotDecision, SpotSnapshot, SpotState, decide, excluded
from thrifty.policy.spot_capacity import LaunchResult

SPOT_EVENT_KINDS = tuple(
    f"spot_{k}"
    for k in ("interruption", "rebalance", "ignored", "drain", "replacement", "unroute", "release", "capacity",
              "fallback", "diversify", "mix", "wait", "spread", "probe", "return", "return-abandoned")
)  # fmt: skip


class SpotStep:
    def __init__(
        self,
        config: ClusterConfig | SpotConfig,
        cloud: CloudProvider,
        store: Store,
        wall: Callable[[], float],
        *,
        event: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config if isinstance(config, SpotConfig) else SpotConfig.from_cluster(config)
        self.cloud = cloud
        self.store = store
        self.wall = wall
        self.state = SpotState()
        self.replacing: dict[str, str] = store.spot_replacing()  # new replica id -> the one it replaces
        self.results: list[LaunchResult] = []
        self.last_reason: dict[str, Any] = {}
        self.now = 0.0  # the last tick's time (monotonic)
        self._event = event

    # what provisioning and the routes need ------------------------------------------------------------
    def excluded(self, now: float) -> frozenset[str]:
        return excluded(self.state, now)

    @property
    def unrouted(self) -> frozenset[str]:
        return self.state.unrouted

    def record_launch(self, pool: str, ok: bool, now: float) -> None:
        self.results.append(LaunchResult(pool, ok, now))

    def add_replacing(self, new_id: str, old_id: str) -> None:
        self.replacing[new_id] = old_id
        self.store.put_spot_replacing(new_id, old_id)

    def notices(self, now: float) -> list[NodeNotice]:
        """The provider's notices with issue time and deadline moved onto the monotonic clock."""
        shift = now - self.wall()
        return [
            replace(n, issued_s=n.issued_s + shift, deadline_s=None if n.deadline_s is None else n.deadline_s + shift)
            for n in self.cloud.notices()
        ]

    # the tick ----------------------------------------------------------------------------------------
    def update(
        self,
        now: float,
        nodes: Sequence[NodeView],
        replicas: Sequence[ClusterReplica],
        loads: Mapping[str, ReplicaLoad],
        launches: Sequence[Launch],
    ) -> SpotDecision:
        self.now = now
        ids = {x.id for x in replicas}
        # A replacement is kept until the replica it replaces is gone (or it is gone itself).
        for new, old in list(self.replacing.items()):
            if old not in ids or new not in ids:
                del self.replacing[new]
                self.store.delete_spot_replacing(new)
        snap = SpotSnapshot(
            nodes=[n for n in nodes if n.state != "terminating"],
            replicas=list(replicas),
            loads=dict(loads),
            notices=self.notices(now),
            replacing=dict(self.replacing),
            launch_results=tuple(self.results),
            launches=tuple(launches),
        )
        self.results = []
        d = decide(self.config, snap, self.state, now)
        self.state = d.state
        self.last_reason = d.reason
        if self._event is not None:
            for e in d.events:
                data: dict[str, Any] = {"node": e.node_id, "pool": e.pool}
                self._event(f"spot_{e.kind}", e.message, {k: v for k, v in data.items() if v is not None})
        return d

    def forget(self, replica_id: str) -> None:
        """A replica is gone: a replacement record naming it as the new one goes too."""
        if self.replacing.pop(replica_id, None) is not None:
            self.store.delete_spot_replacing(replica_id)
