"""Spot handling: what to do about interruption notices, rebalance recommendations, spot capacity and the
spread of spot replicas. Pure: (config, observed snapshot, prior state, now) -> (decision, new state,
reason record); no clock, no logging, no I/O. The operator's spot step and the cost simulator call ``decide``.

Each tick, in order:

1. **Capacity**: the outcomes of the launches made since the last tick update the per-pool backoff
   (``spot_capacity``); ``excluded_pools(state, now)`` is what provisioning must not buy from.
2. **Notices** (``notice_handling: drain``): an interruption notice (node, deadline) or a rebalance
   recommendation (no deadline) puts the node in *drain*: it is cordoned (placement puts nothing new
   there) and every replica on it gets a ``Replace`` at once: a new replica of the same API, placed and, if
   needed, bought by the placement and provisioning policies with ``avoid_pools`` = the interrupted pool
   (another pool is preferred; the same pool only when nothing else fits). A later interruption notice
   turns a rebalance drain into one with a deadline. With ``notice_handling: ignore`` (Cortex's behaviour,
   for comparisons) notices are only reported: the node dies at its deadline.
3. **Routing**: a replica being moved off (on a drained node, or by a spread move) is *unrouted* (the
   gateway sends it no new request; its in-flight requests finish) as soon as its replacement is ready, or
   at once when the API's other replicas have **room**: the free slots of its serving replicas (ready,
   routed, not being moved; free = capacity - in flight, where capacity is the requests a replica executes
   at once: ``max_concurrency`` x ``max_batch_size``) are at least the moved replica's in-flight requests (its
   share of the traffic, which the others take over) and at least one such replica exists. An unrouted
   replica with nothing in flight is stopped.
4. **Release**: a drained node is released once no replica is left on it, and in any case at
   ``deadline - release_margin_s`` (5 s: terminating a node takes a moment, and a node that outlives its
   deadline is killed by the cloud without the platform knowing; what is still in flight then is cut off
   and the gateway retries it on another replica). A notice shorter than the margin (0 = hard kill) releases
   at once. A rebalance drain has no deadline: the node goes when it is empty.
5. **Spread**: an API with two or more replicas all on spot nodes of one pool, when another spot pool that
   allows and holds it has capacity, moves one replica (``avoid_pools`` = that pool), one API at a time
   and not again within ``probe_after_s`` (so a move that landed in the same pool does not loop).
6. **Return to spot**: an on-demand node beyond what the mix wants, whose replicas all allow a cheaper spot
   pool that holds it, is a *backup*. When that spot pool is not out of capacity, the node is drained like
   a rebalance (kind ``return``; replacements ready first); when the pool's probe is due, a one-node
   ``probe`` launch there tests it. One return at a time and none while a notice is being handled; a return
   whose spot pool runs out again, or that has not finished within ``return_timeout_s``, is given up: the
   node is uncordoned and replacements that are not ready yet are cancelled.
7. **Launches**: provisioning's launches rewritten for on-demand fallback and the mix (``spot_capacity``).

The operator: replaces its provisioning launches with ``decision.launch``; applies ``cordon``/``uncordon``;
starts a replica for each ``replace`` (request with ``avoid_pools``) and reports it back in
``SpotSnapshot.replacing``; stops ``cancel`` and ``stop`` replicas; tells the gateway ``unroute``; releases
``release`` nodes; and reports every launch's outcome in ``SpotSnapshot.launch_results``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from thrifty.clouds.base import NodeNotice
from thrifty.config.cluster import ClusterConfig
from thrifty.policy.cluster_types import ClusterReplica, NodePool, NodeView
from thrifty.policy.provisioning import Launch, Release, dominant_share
from thrifty.policy.spot_capacity import (
    Backoff,
    LaunchResult,
    PoolCounts,
    dominates,
    excluded_pools,
    group_of,
    required_on_demand,
    rewrite_launches,
    update_backoff,
)

DrainKind = Literal["interruption", "rebalance", "return"]
EventKind = Literal[
    "interruption", "rebalance", "ignored", "drain", "replacement", "unroute", "release", "capacity", "fallback",
    "diversify", "mix", "wait", "spread", "probe", "return", "return-abandoned",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpotConfig:
    pools: tuple[NodePool, ...]
    on_demand_base_capacity: int = 0
    on_demand_percentage_above_base_capacity: int = 0
    on_demand_backup: bool = True
    notice_handling: Literal["drain", "ignore"] = "drain"
    release_margin_s: float = 5.0
    probe_after_s: float = 60.0
    probe_max_s: float = 600.0
    return_timeout_s: float = 600.0

    @classmethod
    def from_cluster(cls, cfg: ClusterConfig) -> SpotConfig:
        s = cfg.spot
        return cls(pools=cfg.pools(), on_demand_base_capacity=s.on_demand_base_capacity,
                   on_demand_percentage_above_base_capacity=s.on_demand_percentage_above_base_capacity,
                   on_demand_backup=s.on_demand_backup, notice_handling=s.notice_handling,
                   probe_after_s=s.probe_after, probe_max_s=max(s.probe_after, 600.0))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """A replica as the data plane sees it: ready to serve, requests in flight, and how many it runs at once."""

    ready: bool
    in_flight: int = 0
    capacity: int = 1


@dataclass(frozen=True, slots=True)
class SpotSnapshot:
    nodes: Sequence[NodeView]  # live nodes (terminated ones left out)
    replicas: Sequence[ClusterReplica]  # placed and pending, replacements included
    loads: Mapping[str, ReplicaLoad] = field(default_factory=dict)  # by replica id; absent = not ready
    notices: Sequence[NodeNotice] = ()
    replacing: Mapping[str, str] = field(default_factory=dict)  # new replica id -> the replica it replaces
    launch_results: Sequence[LaunchResult] = ()  # launches made since the last tick
    launches: Sequence[Launch] = ()  # this tick's provisioning launches, to rewrite


@dataclass(frozen=True, slots=True)
class Drain:
    node_id: str
    pool: str
    kind: DrainKind
    since_s: float
    deadline_s: float | None = None
    to_pool: str | None = None  # return: the spot pool the node's replicas go back to
    released: bool = False  # release asked for; kept until the node is gone so a lasting notice is not redone


@dataclass(frozen=True, slots=True)
class SpotState:
    """What the policy remembers between ticks; starts as ``SpotState()``."""

    drains: Mapping[str, Drain] = field(default_factory=dict)
    moving: frozenset[str] = frozenset()  # replicas moved off by a spread move or an abandoned return
    unrouted: frozenset[str] = frozenset()
    backoff: Mapping[str, Backoff] = field(default_factory=dict)
    spread_hold: Mapping[str, float] = field(default_factory=dict)  # API -> no spread move before
    seen_notices: frozenset[tuple[str, str]] = frozenset()  # (node, kind) already reported


@dataclass(frozen=True, slots=True)
class Replace:
    """Start a new replica of ``api`` like ``replica_id``'s, with ``avoid_pools`` on its request."""

    replica_id: str
    api: str
    from_node: str | None
    avoid_pools: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SpotEvent:
    kind: EventKind
    message: str
    node_id: str | None = None
    pool: str | None = None


@dataclass(frozen=True, slots=True)
class SpotDecision:
    cordon: tuple[str, ...]
    uncordon: tuple[str, ...]
    replace: tuple[Replace, ...]
    unroute: tuple[str, ...]  # replicas the gateway stops sending new requests to
    stop: tuple[str, ...]  # unrouted replicas with nothing in flight
    cancel: tuple[str, ...]  # replacements no longer wanted (an abandoned return)
    release: tuple[Release, ...]
    launch: tuple[Launch, ...]  # provisioning's launches, rewritten, plus probes
    events: tuple[SpotEvent, ...]
    state: SpotState
    reason: dict[str, Any]


def _replica_id(x: ClusterReplica) -> str:
    return x.id


def excluded(state: SpotState, now_s: float) -> frozenset[str]:
    """Pools provisioning must not buy from at ``now_s`` (pass as its ``excluded_pools``)."""
    return excluded_pools(state.backoff, now_s)


@dataclass(slots=True)
class _Tick:
    cfg: SpotConfig
    snap: SpotSnapshot
    now_s: float
    nodes: dict[str, NodeView]
    on_node: dict[str, list[ClusterReplica]]
    replacement_of: dict[str, str]  # old replica id -> new replica id
    by_id: list[ClusterReplica]  # the snapshot's replicas in id order
    leaving: set[str] = field(default_factory=set)  # replicas being moved off (drained nodes, moves)
    claimed: dict[str, int] = field(default_factory=dict)  # API -> free slots already promised this tick
    events: list[SpotEvent] = field(default_factory=list)
    cordon: list[str] = field(default_factory=list)
    uncordon: list[str] = field(default_factory=list)
    replace: list[Replace] = field(default_factory=list)
    unroute: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    release: list[Release] = field(default_factory=list)
    launch: list[Launch] = field(default_factory=list)

    def ready(self, replica_id: str | None) -> bool:
        load = self.snap.loads.get(replica_id or "")
        return load is not None and load.ready


def decide(cfg: SpotConfig, snap: SpotSnapshot, state: SpotState, now_s: float) -> SpotDecision:
    """One spot tick (see the module docstring)."""
    nodes = {n.id: n for n in snap.nodes if n.state != "terminating"}
    by_id = sorted(snap.replicas, key=_replica_id)
    on_node: dict[str, list[ClusterReplica]] = {}
    for x in by_id:
        if x.node_id:
            on_node.setdefault(x.node_id, []).append(x)
    t = _Tick(cfg, snap, now_s, nodes, on_node, {old: new for new, old in snap.replacing.items()}, by_id)
    live_ids = {x.id for x in by_id}
    r: dict[str, Any] = {"now_s": now_s}

    # 1. capacity
    backoff, changes = update_backoff(state.backoff, snap.launch_results, cfg.probe_after_s, cfg.probe_max_s)
    for pool, change in changes:
        msg = f"pool {pool} is out of capacity" if change == "out" else f"pool {pool} has capacity again"
        t.events.append(SpotEvent("capacity", msg, pool=pool))
    out = excluded_pools(backoff, now_s)
    r["excluded_pools"] = sorted(out)

    # 2. notices
    drains = {k: v for k, v in state.drains.items() if k in nodes}
    seen = {s for s in state.seen_notices if s[0] in nodes}
    for notice in sorted(snap.notices, key=lambda n: (n.issued_s, n.node_id)):
        node = nodes.get(notice.node_id)
        if node is None:
            continue
        first = (notice.node_id, notice.kind) not in seen
        seen.add((notice.node_id, notice.kind))
        if cfg.notice_handling == "ignore":
            if first:
                t.events.append(SpotEvent("ignored", f"{notice.kind} notice for {node.id} ignored "
                                          "(notice_handling: ignore)", node.id, node.spec.pool))  # fmt: skip
            continue
        prior = drains.get(node.id)
        if prior is not None and (prior.kind == "interruption" or notice.kind == "rebalance"):
            continue
        drains[node.id] = Drain(node.id, node.spec.pool, notice.kind, now_s if prior is None else prior.since_s,
                                notice.deadline_s)  # fmt: skip
        left = "" if notice.deadline_s is None else f", {max(0.0, notice.deadline_s - now_s):g}s before it goes"
        t.events.append(SpotEvent(notice.kind, f"{notice.kind} notice for {node.id}{left}: cordon and drain",
                                  node.id, node.spec.pool))  # fmt: skip

    # 6a. a return in progress that cannot finish is given up
    moving = {x for x in state.moving if x in live_ids}
    for node_id, d in list(drains.items()):
        if d.kind != "return":
            continue
        why = None
        if d.to_pool in out:
            why = f"spot pool {d.to_pool} is out of capacity again"
        elif now_s - d.since_s >= cfg.return_timeout_s:
            why = f"not done within {cfg.return_timeout_s:g}s"
        if why is None:
            continue
        del drains[node_id]
        t.uncordon.append(node_id)
        for x in on_node.get(node_id, []):
            new = t.replacement_of.get(x.id)
            if x.id in state.unrouted or t.ready(new):
                moving.add(x.id)  # its replacement serves already: finish that move
            elif new is not None:
                t.cancel.append(new)
        t.events.append(SpotEvent("return-abandoned", f"return of {node_id} to spot given up: {why}", node_id,
                                  d.pool))  # fmt: skip

    # 5. spread, 6b. return to spot (decided on the state before this tick's moves)
    spread_hold = {k: v for k, v in state.spread_hold.items() if v > now_s}
    _spread(t, drains, moving, out, spread_hold)
    _return_to_spot(t, drains, backoff, out)

    # 2-4. drains and moves
    unrouted = set(state.unrouted)
    t.leaving = {x.id for d in drains for x in on_node.get(d, [])} | moving
    newly_released: list[Release] = []
    for d in sorted(drains.values(), key=lambda d: d.node_id):
        node = nodes[d.node_id]
        if d.released:  # asked before and still listed: ask again (idempotent), quietly
            t.release.append(Release(node.id, f"{d.kind}: released, waiting for the node to go"))
            continue
        if node.state in ("ready", "launching"):
            t.cordon.append(node.id)
        leaving = on_node.get(node.id, [])
        _move(t, leaving, node.spec.pool, f"{d.kind} of {node.id}", unrouted, urgent=d.kind != "return")
        release_at = None if d.deadline_s is None else d.deadline_s - cfg.release_margin_s
        if not [x for x in leaving if x.id not in t.stop]:
            newly_released.append(Release(node.id, f"{d.kind}: drained, no replica left"))
        elif release_at is not None and now_s >= release_at:
            cut = sum(t.snap.loads[x.id].in_flight for x in leaving if x.id in t.snap.loads)
            t.unroute.extend(x.id for x in leaving if x.id not in unrouted and x.id not in t.unroute)
            to_go = release_at + cfg.release_margin_s - now_s
            newly_released.append(Release(node.id, f"interruption deadline in {to_go:g}s (margin "
                                          f"{cfg.release_margin_s:g}s); {cut} requests in flight are cut off and "
                                          "retried by the gateway"))  # fmt: skip
    t.release.extend(newly_released)
    for rel in newly_released:
        drains[rel.node_id] = replace(drains[rel.node_id], released=True)
    drained_here = {d for d in drains}
    for x in by_id if moving else ():
        if x.id in moving and x.node_id not in drained_here:
            pool = nodes[x.node_id].spec.pool if x.node_id in nodes else ""
            _move(t, [x], pool, f"move of {x.id} off pool {pool}", unrouted, urgent=False)
    unrouted.update(t.unroute)
    for rel in newly_released:
        t.events.append(SpotEvent("release", f"release {rel.node_id}: {rel.reason}", rel.node_id,
                                  nodes[rel.node_id].spec.pool))  # fmt: skip

    # 7. launches
    counts = PoolCounts.of(cfg.pools, list(nodes.values()), {k for k, d in drains.items() if d.kind == "interruption"})
    by_rid = {x.id: x for x in snap.replicas} if snap.launches else {}  # only launches look replicas up
    rw = rewrite_launches(cfg.pools, snap.launches, by_rid, counts, out,
                          base=cfg.on_demand_base_capacity,
                          percentage=cfg.on_demand_percentage_above_base_capacity,
                          on_demand_backup=cfg.on_demand_backup)  # fmt: skip
    t.launch[:0] = rw.launches
    for kind, pool, msg in rw.events:
        t.events.append(SpotEvent(kind, msg, pool=pool))  # type: ignore[arg-type]
    r["launches"] = rw.reason

    new_state = SpotState(
        drains=drains,
        moving=frozenset(x for x in moving if x in live_ids and x not in t.stop),
        unrouted=frozenset(x for x in unrouted if x in live_ids and x not in t.stop),
        backoff=backoff,
        spread_hold=spread_hold,
        seen_notices=frozenset(seen),
    )
    r.update(drains={k: d.kind for k, d in sorted(drains.items())}, replace=len(t.replace), unroute=len(t.unroute),
             stop=len(t.stop), release=[x.node_id for x in t.release])  # fmt: skip
    r["summary"] = "; ".join(e.message for e in t.events) or "hold"
    return SpotDecision(cordon=tuple(dict.fromkeys(t.cordon)), uncordon=tuple(t.uncordon), replace=tuple(t.replace),
                        unroute=tuple(dict.fromkeys(t.unroute)), stop=tuple(t.stop), cancel=tuple(t.cancel),
                        release=tuple(t.release), launch=tuple(t.launch), events=tuple(t.events), state=new_state,
                        reason=r)  # fmt: skip


def _in_flight(t: _Tick, replica_id: str) -> int:
    load = t.snap.loads.get(replica_id)
    return 0 if load is None else load.in_flight


def _has_room(t: _Tick, x: ClusterReplica, unrouted: set[str]) -> bool:
    """Whether the API's serving replicas can take over ``x``'s in-flight share now (module docstring, 3)."""
    free = 0
    serving = 0
    for y in t.snap.replicas:
        if y.api != x.api or y.id in t.leaving or y.id in unrouted or y.id in t.unroute:
            continue
        load = t.snap.loads.get(y.id)
        if load is None or not load.ready:
            continue
        serving += 1
        free += max(0, load.capacity - load.in_flight)
    need = _in_flight(t, x.id) + t.claimed.get(x.api, 0)
    if serving and free >= need:
        t.claimed[x.api] = need
        return True
    return False


def _move(
    t: _Tick, leaving: Sequence[ClusterReplica], pool: str, why: str, unrouted: set[str], *, urgent: bool
) -> None:
    """Replace, unroute and stop the replicas ``leaving`` (module docstring, 2-3). ``urgent``: under a notice,
    room on the API's other replicas is enough to unroute; otherwise the replacement must be ready."""
    for x in leaving:
        new = t.replacement_of.get(x.id)
        if new is None and x.id not in unrouted:
            t.replace.append(Replace(x.id, x.api, x.node_id, (pool,) if pool else (), why))
            t.events.append(SpotEvent("replacement", f"replace {x.id} of {x.api} ({why}), preferring another pool "
                                      f"than {pool}", x.node_id, pool))  # fmt: skip
        if x.id in unrouted:
            if _in_flight(t, x.id) == 0:
                t.stop.append(x.id)
            continue
        if t.ready(new):
            t.unroute.append(x.id)
            t.events.append(SpotEvent("unroute", f"stop routing to {x.id}: its replacement {new} is ready",
                                      x.node_id, pool))  # fmt: skip
        elif urgent and _has_room(t, x, unrouted):
            t.unroute.append(x.id)
            n = _in_flight(t, x.id)
            t.events.append(SpotEvent("unroute", f"stop routing to {x.id}: the other replicas of {x.api} have room "
                                      f"for its {n} requests in flight", x.node_id, pool))  # fmt: skip


def _spread(t: _Tick, drains: dict[str, Drain], moving: set[str], out: frozenset[str], hold: dict[str, float]) -> None:
    """One API whose spot replicas crowd one pool moves one of them (module docstring, 5)."""
    by_api: dict[str, list[ClusterReplica]] = {}
    busy: set[str] = set()
    replacement_of, replacing, nodes = t.replacement_of, t.snap.replacing, t.nodes
    for x in t.by_id:
        if x.id in moving or x.id in replacement_of or x.id in replacing or x.node_id in drains:
            busy.add(x.api)
        node = nodes.get(x.node_id or "")
        if node is not None and node.spec.spot:
            by_api.setdefault(x.api, []).append(x)
    per_pool = {p.name: 0 for p in t.cfg.pools}
    for n in t.nodes.values():
        per_pool[n.spec.pool] = per_pool.get(n.spec.pool, 0) + 1
    for api, reps in sorted(by_api.items()):
        if api in busy or api in hold or len(reps) < 2:
            continue
        pools = {t.nodes[x.node_id or ""].spec.pool for x in reps}
        if len(pools) != 1:
            continue
        crowded = pools.pop()
        x = reps[-1]
        others = [p.name for p in t.cfg.pools
                  if p.spec.spot and p.name != crowded and p.name not in out and x.request.allows(p.spec)
                  and dominant_share(x.request, p.spec) < float("inf")
                  and (per_pool.get(p.name, 0) < p.max_nodes)]  # fmt: skip
        if not others:
            continue
        moving.add(x.id)
        hold[api] = t.now_s + t.cfg.probe_after_s
        msg = f"{len(reps)} spot replicas of {api} are all in pool {crowded}: move {x.id} to another spot pool"
        t.events.append(SpotEvent("spread", f"{msg} ({', '.join(others)})", x.node_id, crowded))
        return


def _return_to_spot(t: _Tick, drains: dict[str, Drain], backoff: dict[str, Backoff], out: frozenset[str]) -> None:
    """Start moving one on-demand backup node back to spot, or probe its spot pool (module docstring, 6)."""
    if drains:
        return
    cfg = t.cfg
    counts = PoolCounts.of(cfg.pools, list(t.nodes.values()), set())
    excess = {
        g: od - required_on_demand(counts.group_total[g], cfg.on_demand_base_capacity,
                                   cfg.on_demand_percentage_above_base_capacity)
        for g, od in counts.group_on_demand.items()
    }  # fmt: skip
    backups = sorted(
        (n for n in t.nodes.values()
         if not n.spec.spot and n.state == "ready" and t.on_node.get(n.id) and excess.get(group_of(n.spec), 0) > 0),
        key=lambda n: (-n.spec.price_per_hour, n.id),
    )  # fmt: skip
    for node in backups:
        reps = t.on_node[node.id]
        spot = [p for p in cfg.pools
                if p.spec.spot and p.spec.price_per_hour < node.spec.price_per_hour
                and counts.by_pool.get(p.name, 0) < p.max_nodes and dominates(p.spec, node.spec)
                and all(x.request.allows(p.spec) for x in reps)]  # fmt: skip
        if not spot:
            continue
        to = min(spot, key=lambda p: (p.spec.price_per_hour, p.priority, p.name))
        if to.name in out:
            continue
        b = backoff.get(to.name)
        if b is not None:
            t.launch.append(Launch(to.name, 1, (), f"probe: is spot capacity back in {to.name}? ({node.id} backs "
                                   "it up on demand)"))  # fmt: skip
            backoff[to.name] = replace(b, retry_at_s=t.now_s + cfg.probe_after_s)
            t.events.append(SpotEvent("probe", f"probe spot capacity in {to.name} with one node", pool=to.name))
            return
        drains[node.id] = Drain(node.id, node.spec.pool, "return", t.now_s, None, to.name)
        t.events.append(SpotEvent("return", f"spot capacity in {to.name}: move {len(reps)} replicas of on-demand "
                                  f"backup {node.id} back to spot (replacements ready first)", node.id,
                                  node.spec.pool))  # fmt: skip
        return
