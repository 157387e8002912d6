"""What each API costs: its share of every node's price by what it reserves, and $ per million requests.

Pure: nodes and replicas in, dollars out; the ledger integrates rates over the times the caller passes in.

How a node's price is split (the approach of OpenCost, the CNCF cost model): the node's $/h is divided
among its CPU, memory and GPUs in proportion to reference rates per unit (OpenCost's default on-demand
rates: $0.031611 per vCPU-hour, $0.004237 per GiB-hour, $0.95 per GPU-hour; only their ratios matter).
A replica pays for the CPU cores, memory and GPU amount (its fraction, or its whole GPUs) it reserves,
whether it uses them or not; what no replica reserves is the node's **idle** cost, reported apart, so the
APIs' costs plus idle add up to the cluster's $/h. GPU memory is not priced apart: placement keeps it
within each replica's GPU fraction unless the replica asks for more, and the fraction is what it pays for.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from thrifty.policy.cluster_types import ClusterReplica, NodeView

GIB = 2**30
# OpenCost's default rates (USD per unit-hour), used as weights only.
CPU_WEIGHT_PER_CORE = 0.031611
MEM_WEIGHT_PER_GIB = 0.004237
GPU_WEIGHT_PER_GPU = 0.95


@dataclass(frozen=True, slots=True)
class NodeCost:
    node_id: str
    pool: str
    spot: bool
    price_per_hour: float
    on_demand_per_hour: float
    by_api: dict[str, float]  # $/h each API pays on this node
    idle_per_hour: float


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    cluster_per_hour: float
    by_api: dict[str, float]  # $/h, sorted by API name
    idle_per_hour: float
    spot_savings_per_hour: float  # the same nodes on demand, minus what they cost
    nodes: tuple[NodeCost, ...]


def unit_prices(node: NodeView) -> tuple[float, float, float]:
    """$/h of one core, one byte of memory and one whole GPU of this node (its price split by the weights)."""
    s = node.spec
    cpu_w = CPU_WEIGHT_PER_CORE * s.cpu
    mem_w = MEM_WEIGHT_PER_GIB * s.mem_bytes / GIB
    gpu_w = GPU_WEIGHT_PER_GPU * s.gpus
    total = cpu_w + mem_w + gpu_w
    if total <= 0:
        return 0.0, 0.0, 0.0
    p = s.price_per_hour
    return (
        p * cpu_w / total / s.cpu if s.cpu else 0.0,
        p * mem_w / total / s.mem_bytes if s.mem_bytes else 0.0,
        p * gpu_w / total / s.gpus if s.gpus else 0.0,
    )


def split_costs(nodes: Sequence[NodeView], replicas: Sequence[ClusterReplica]) -> CostBreakdown:
    """Each API's $/h over ``nodes`` (every node passed is billed, launching ones included)."""
    on_node: dict[str, list[ClusterReplica]] = {}
    for r in replicas:
        if r.node_id is not None:
            on_node.setdefault(r.node_id, []).append(r)
    per_node: list[NodeCost] = []
    by_api: dict[str, float] = {}
    for node in sorted(nodes, key=lambda n: n.id):
        cpu_p, mem_p, gpu_p = unit_prices(node)
        s = node.spec
        shares: dict[str, float] = {}
        for r in on_node.get(node.id, ()):
            q = r.request
            gpus = q.gpu if q.gpu < 1 else float(len(r.gpu_indices) or q.gpu)
            cost = min(q.cpu, s.cpu) * cpu_p + min(q.mem_bytes, s.mem_bytes) * mem_p + min(gpus, s.gpus) * gpu_p
            shares[r.api] = shares.get(r.api, 0.0) + cost
        reserved = sum(shares.values())
        idle = max(0.0, s.price_per_hour - reserved)
        for api, cost in shares.items():
            by_api[api] = by_api.get(api, 0.0) + cost
        per_node.append(NodeCost(node_id=node.id, pool=s.pool, spot=s.spot, price_per_hour=s.price_per_hour,
                                 on_demand_per_hour=s.price_on_demand_per_hour or s.price_per_hour,
                                 by_api=dict(sorted(shares.items())), idle_per_hour=idle))  # fmt: skip
    total = sum(n.price_per_hour for n in per_node)
    on_demand = sum(n.on_demand_per_hour for n in per_node)
    return CostBreakdown(
        cluster_per_hour=total,
        by_api=dict(sorted(by_api.items())),
        idle_per_hour=sum(n.idle_per_hour for n in per_node),
        spot_savings_per_hour=max(0.0, on_demand - total),
        nodes=tuple(per_node),
    )


@dataclass(frozen=True, slots=True)
class CostLedger:
    """Dollars spent per key (API name, or anything the caller rates), integrated tick by tick.

    A rate holds from the tick it was given until the next (what the cluster looked like is what it cost).
    ``history`` keeps (time, spent) samples for ``keep_s`` so a window's dollars can be read back.
    """

    keep_s: float = 3600.0
    last_s: float | None = None
    rates: dict[str, float] = field(default_factory=dict)  # $/h since last_s
    spent: dict[str, float] = field(default_factory=dict)  # $ since the ledger started
    history: tuple[tuple[float, dict[str, float]], ...] = ()


def _time(sample: tuple[float, dict[str, float]]) -> float:
    return sample[0]


def accrue(ledger: CostLedger, rates_per_hour: Mapping[str, float], now_s: float) -> CostLedger:
    """Charge the previous rates up to ``now_s``, then hold ``rates_per_hour`` from now on."""
    spent = dict(ledger.spent)
    if ledger.last_s is not None and now_s > ledger.last_s:
        hours = (now_s - ledger.last_s) / 3600.0
        for key, rate in ledger.rates.items():
            spent[key] = spent.get(key, 0.0) + rate * hours
    history = (*ledger.history, (now_s, spent))
    # Keep the newest sample at or before the window's start, so a full window can still be read.
    start = now_s - ledger.keep_s
    first = max(0, bisect_right(history, start, key=_time) - 1)  # samples are in time order
    return CostLedger(keep_s=ledger.keep_s, last_s=now_s, rates=dict(rates_per_hour), spent=spent,
                      history=history[first:])  # fmt: skip


def spent_in_window(ledger: CostLedger, key: str, window_s: float) -> float:
    """Dollars charged to ``key`` in the last ``window_s`` before the ledger's last tick (what history holds)."""
    if ledger.last_s is None or not ledger.history:
        return 0.0
    start = ledger.last_s - window_s
    before = ledger.history[0][1]
    for t, spent in ledger.history:
        if t <= start:
            before = spent
        else:
            break
    return ledger.spent.get(key, 0.0) - before.get(key, 0.0)


def per_million_requests(dollars: float, requests: int) -> float | None:
    """$ per million requests; None without requests (an idle API's cost is its $/h, not a per-request figure)."""
    return dollars / requests * 1e6 if requests > 0 else None
