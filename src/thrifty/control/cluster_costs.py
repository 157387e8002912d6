"""The costs step: what the cluster and each API cost now ($/h) and over the window ($ per million requests).

Each API pays for what its replicas reserve on each node (``policy.costs.split_costs``: OpenCost-style
weights); what no replica reserves is the idle cost, shown apart; every node held is billed, launching and
terminating ones included. A ledger integrates those rates over time (one sample a second at most), and
the requests the gateway counted per API over the same window give $ per million requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from thrifty.policy.cluster_types import ClusterReplica, NodeView
from thrifty.policy.costs import CostBreakdown, CostLedger, accrue, per_million_requests, spent_in_window, split_costs

COST_WINDOW_S = 3600.0  # "over the window": the last hour (or since the operator started)
SAMPLE_EVERY_S = 1.0
IDLE = "(idle)"
CLUSTER = "(cluster)"


class CostsStep:
    def __init__(self, window_s: float = COST_WINDOW_S) -> None:
        self.window_s = window_s
        self.ledger = CostLedger(keep_s=window_s)
        self.breakdown = split_costs([], [])
        self._priced: tuple[tuple[NodeView, ...], tuple[ClusterReplica, ...]] = ((), ())  # breakdown's inputs
        self._requests: deque[tuple[float, dict[str, int]]] = deque()
        self._first_s: float | None = None

    def update(
        self, now: float, nodes: Sequence[NodeView], placed: Sequence[ClusterReplica], requests: Mapping[str, int]
    ) -> CostBreakdown:
        """Price the cluster as it is now; ``requests``: each API's cumulative request count."""
        priced = (tuple(nodes), tuple(placed))
        if priced != self._priced:  # the same nodes and replicas (most ticks) cost the same: split only on a change
            self.breakdown = split_costs(nodes, placed)
            self._priced = priced
        b = self.breakdown
        if self.ledger.last_s is not None and now - self.ledger.last_s < SAMPLE_EVERY_S:
            return b
        if self._first_s is None:
            self._first_s = now
        self.ledger = accrue(self.ledger, {**b.by_api, IDLE: b.idle_per_hour, CLUSTER: b.cluster_per_hour}, now)
        self._requests.append((now, dict(requests)))
        while len(self._requests) > 1 and self._requests[1][0] <= now - self.window_s:
            self._requests.popleft()
        return b

    def window(self) -> float:
        if self._first_s is None or self.ledger.last_s is None:
            return 0.0
        return min(self.window_s, self.ledger.last_s - self._first_s)

    def api(self, name: str) -> dict[str, Any]:
        """One API's figures for ``thrifty get``: $/h now, $ and requests over the window, $ per million."""
        window = self.window()
        dollars = spent_in_window(self.ledger, name, window)
        requests = 0
        if self._requests:
            last = self._requests[-1][1].get(name, 0)
            first = self._requests[0][1].get(name, 0)
            requests = max(0, last - first)
        return {
            "per_hour": round(self.breakdown.by_api.get(name, 0.0), 6),
            "window_s": round(window, 1),
            "spent": round(dollars, 8),
            "requests": requests,
            "per_million_requests": _round(per_million_requests(dollars, requests)),
        }

    def cluster(self) -> dict[str, Any]:
        b = self.breakdown
        return {
            "per_hour": round(b.cluster_per_hour, 6),
            "idle_per_hour": round(b.idle_per_hour, 6),
            "spot_savings_per_hour": round(b.spot_savings_per_hour, 6),
            "by_api_per_hour": {k: round(v, 6) for k, v in b.by_api.items()},
            "window_s": round(self.window(), 1),
            "spent": round(spent_in_window(self.ledger, CLUSTER, self.window()), 8),
            "idle_spent": round(spent_in_window(self.ledger, IDLE, self.window()), 8),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
