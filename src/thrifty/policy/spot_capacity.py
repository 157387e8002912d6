"""Spot capacity: the on-demand/spot mix, pools out of capacity and when to probe them, and the rewrite of
provisioning's launches that applies both. Pure; ``thrifty.policy.spot`` drives it once per tick.

**The mix** (AWS Auto Scaling's ``OnDemandBaseCapacity`` / ``OnDemandPercentageAboveBaseCapacity``): the
unit is one node, counted per **pool group**. A group is the pools whose nodes carry the same accelerators
(GPUs per node and memory per GPU; every CPU-only pool is one group), the analogue of one Auto Scaling group
with its spot and on-demand instance pools: a GPU replica never lands on a CPU node, so the mix of one
says nothing about the other. Of a group's ``n`` live nodes (launching or ready; nodes under an
interruption notice are leaving and do not count), ``min(n, base)`` are on demand, then
``ceil((n - base) x percentage / 100)`` of the rest: a fraction rounds in favour of on-demand, as a floor
of reliable capacity should.

**Out of capacity** (EC2's ``InsufficientInstanceCapacity``): a pool whose launch failed is excluded from
buying for ``probe_after_s`` (60 s), doubled after each further failure up to ``probe_max_s`` (10 min).
When that time has passed the next launch there is the probe; a launch that succeeds clears the pool.
Provisioning takes the excluded pools (``excluded_pools``), so it buys from the next cheapest allowed pool:
the next spot pool first (diversification) while spot stays cheaper.

**The rewrite** of provisioning's launches, in order:
- a launch of an on-demand pool that only happened because spot pools allowed for its replicas are out of
  capacity is a *fallback*: it is moved to a spot pool that still has capacity and holds what the node
  would (diversification), else kept when ``on_demand_backup`` is on, else dropped (the replicas wait for
  spot, as Cortex's spot groups without backup did). The part of it the mix wants on demand stays.
- a launch of a spot pool is split when the mix wants some of those nodes on demand: that many go to the
  cheapest on-demand pool of the group that holds what the spot node would. Replicas with ``spot: require``
  are never moved to on-demand; ``spot: never`` replicas never reach a spot pool (provisioning and
  placement refuse it: ``ReplicaRequest.allows``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from thrifty.policy.cluster_types import ClusterReplica, NodePool, NodeSpec, NodeView
from thrifty.policy.provisioning import Launch, dominant_share

GroupKey = tuple[int, int]  # (GPUs per node, memory per GPU)


def group_of(spec: NodeSpec) -> GroupKey:
    return (spec.gpus, spec.gpu_mem_bytes if spec.gpus else 0)


def required_on_demand(nodes: int, base: int, percentage: int) -> int:
    """On-demand nodes among ``nodes`` under AWS's mix: the base first, then the percentage of the rest."""
    first = min(nodes, base)
    above = max(0, nodes - base)
    return first + math.ceil(above * percentage / 100 - 1e-9)


def dominates(big: NodeSpec, small: NodeSpec) -> bool:
    """Whether a node of ``big`` holds everything a node of ``small`` holds (every dimension at least as large)."""
    return (big.cpu >= small.cpu and big.mem_bytes >= small.mem_bytes and big.gpus >= small.gpus
            and (small.gpus == 0 or big.gpu_mem_bytes >= small.gpu_mem_bytes))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Backoff:
    """A pool out of capacity: not bought from before ``retry_at_s``; ``failures`` in a row so far."""

    failures: int
    retry_at_s: float
    since_s: float


@dataclass(frozen=True, slots=True)
class LaunchResult:
    """What became of one launch the operator made since the last tick (``ok`` False: CapacityError)."""

    pool: str
    ok: bool
    at_s: float


def backoff_delay_s(failures: int, first_s: float, most_s: float) -> float:
    return float(min(most_s, first_s * 2 ** max(0, failures - 1)))


def update_backoff(
    backoff: Mapping[str, Backoff], results: Sequence[LaunchResult], first_s: float, most_s: float
) -> tuple[dict[str, Backoff], list[tuple[str, str]]]:
    """Fold launch outcomes into the per-pool backoff; also (pool, "out" | "back") transitions for events."""
    out = dict(backoff)
    changes: list[tuple[str, str]] = []
    for res in sorted(results, key=lambda x: (x.at_s, x.pool)):
        prior = out.get(res.pool)
        if res.ok:
            if prior is not None:
                del out[res.pool]
                changes.append((res.pool, "back"))
            continue
        failures = 1 if prior is None else prior.failures + 1
        since = res.at_s if prior is None else prior.since_s
        out[res.pool] = Backoff(failures, res.at_s + backoff_delay_s(failures, first_s, most_s), since)
        if prior is None:
            changes.append((res.pool, "out"))
    return out, changes


def excluded_pools(backoff: Mapping[str, Backoff], now_s: float) -> frozenset[str]:
    """Pools provisioning must not buy from now (out of capacity, next probe not due)."""
    return frozenset(p for p, b in backoff.items() if now_s < b.retry_at_s)


@dataclass(slots=True)
class PoolCounts:
    """Live nodes per pool and per group while launches are rewritten (updated as launches are kept)."""

    by_pool: dict[str, int]
    group_total: dict[GroupKey, int]
    group_on_demand: dict[GroupKey, int]

    @classmethod
    def of(cls, pools: Sequence[NodePool], nodes: Sequence[NodeView], leaving: set[str]) -> PoolCounts:
        c = cls({p.name: 0 for p in pools}, {}, {})
        run: NodeSpec | None = None  # a run of nodes with one spec (a pool's nodes share it) is added at once
        k = 0
        for n in nodes:
            if n.state == "terminating" or n.id in leaving:
                continue
            if n.spec is not run:
                if run is not None:
                    c.add(run, k)
                run, k = n.spec, 0
            k += 1
        if run is not None:
            c.add(run, k)
        return c

    def add(self, spec: NodeSpec, k: int) -> None:
        g = group_of(spec)
        self.by_pool[spec.pool] = self.by_pool.get(spec.pool, 0) + k
        self.group_total[g] = self.group_total.get(g, 0) + k
        if not spec.spot:
            self.group_on_demand[g] = self.group_on_demand.get(g, 0) + k


def pick_pool(
    pools: Sequence[NodePool],
    like: NodeSpec,
    replicas: Sequence[ClusterReplica],
    *,
    spot: bool,
    counts: PoolCounts,
    excluded: frozenset[str],
) -> NodePool | None:
    """The cheapest pool of the wanted kind that holds what a node of ``like`` holds, allows every one of
    ``replicas`` and is below ``max_nodes`` (ties: priority, then name)."""
    fits = [
        p for p in pools
        if p.spec.spot == spot and p.name != like.pool and p.name not in excluded
        and counts.by_pool.get(p.name, 0) < p.max_nodes and dominates(p.spec, like)
        and all(r.request.allows(p.spec) for r in replicas)
    ]  # fmt: skip
    return min(fits, key=lambda p: (p.spec.price_per_hour, p.priority, p.name), default=None)


def _spot_was_wanted(pools: Sequence[NodePool], replicas: Sequence[ClusterReplica], excluded: frozenset[str]) -> bool:
    """An on-demand launch is a fallback when every replica it is for could use an excluded spot pool."""
    if not replicas or not excluded:
        return False
    out_spot = [p for p in pools if p.spec.spot and p.name in excluded]
    return all(any(r.request.allows(p.spec) and dominant_share(r.request, p.spec) < math.inf for p in out_spot)
               for r in replicas)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rewrite:
    launches: tuple[Launch, ...]
    events: tuple[tuple[str, str, str], ...]  # (kind, pool, message): fallback, diversify, mix, wait
    reason: dict[str, Any]


def rewrite_launches(
    pools: Sequence[NodePool],
    launches: Sequence[Launch],
    replicas: Mapping[str, ClusterReplica],
    counts: PoolCounts,
    excluded: frozenset[str],
    *,
    base: int,
    percentage: int,
    on_demand_backup: bool,
) -> Rewrite:
    """Apply the fallback rules and the mix to provisioning's launches (see the module docstring)."""
    by_name = {p.name: p for p in pools}
    out: list[Launch] = []
    events: list[tuple[str, str, str]] = []
    notes: list[str] = []

    def keep(pool: NodePool, count: int, ids: Sequence[str], why: str) -> None:
        if count > 0:
            out.append(Launch(pool.name, count, tuple(ids), why))
            counts.add(pool.spec, count)

    for launch in launches:
        pool = by_name.get(launch.pool)
        if pool is None:
            out.append(launch)
            continue
        reps = [replicas[i] for i in launch.replica_ids if i in replicas]
        g = group_of(pool.spec)
        total, od = counts.group_total.get(g, 0), counts.group_on_demand.get(g, 0)
        want_od = max(0, required_on_demand(total + launch.count, base, percentage) - od)
        if not pool.spec.spot:
            if not _spot_was_wanted(pools, reps, excluded):
                keep(pool, launch.count, launch.replica_ids, launch.reason)
                continue
            mixed = min(launch.count, want_od)
            keep(pool, mixed, launch.replica_ids, launch.reason + "; on demand by the spot mix")
            rest = launch.count - mixed
            if rest <= 0:
                continue
            alt = pick_pool(pools, pool.spec, reps, spot=True, counts=counts, excluded=excluded)
            if alt is not None:
                keep(alt, rest, launch.replica_ids, f"spot pools out of capacity: {', '.join(sorted(excluded))}; "
                     f"{alt.name} is the next spot pool")  # fmt: skip
                events.append(("diversify", alt.name, f"{rest} x {alt.name} instead of {pool.name}: spot pools "
                               f"{', '.join(sorted(excluded))} are out of capacity"))  # fmt: skip
            elif on_demand_backup:
                keep(pool, rest, launch.replica_ids, launch.reason + "; on-demand backup while spot is short")
                events.append(("fallback", pool.name, f"{rest} x {pool.name} on demand: spot pools "
                               f"{', '.join(sorted(excluded))} are out of capacity (on_demand_backup)"))  # fmt: skip
            else:
                events.append(("wait", pool.name, f"{rest} node(s) not bought on demand: spot is out of capacity "
                               "and on_demand_backup is off; the replicas wait for spot"))  # fmt: skip
            continue
        # a spot launch: the mix may want some of it on demand
        movable = all(r.request.spot != "require" for r in reps)
        k = min(launch.count, want_od) if movable else 0
        alt = pick_pool(pools, pool.spec, reps, spot=False, counts=counts, excluded=excluded) if k else None
        if alt is not None:
            keep(alt, k, launch.replica_ids, f"on demand by the spot mix (base {base}, {percentage}% above)")
            events.append(
                (
                    "mix",
                    alt.name,
                    f"{k} x {alt.name} on demand instead of {pool.name}: the spot mix "
                    f"wants {required_on_demand(total + launch.count, base, percentage)} on-demand nodes",
                )
            )
            keep(pool, launch.count - k, launch.replica_ids, launch.reason)
            continue
        if want_od:
            notes.append(
                f"mix wants {want_od} more on-demand in {pool.name}'s group, but "
                + ("its replicas require spot" if not movable else "no on-demand pool holds its nodes")
            )
        keep(pool, launch.count, launch.replica_ids, launch.reason)
    reason: dict[str, Any] = {"launches_in": len(launches), "launches_out": len(out)}
    if notes:
        reason["mix_unmet"] = notes
    return Rewrite(tuple(out), tuple(events), reason)
