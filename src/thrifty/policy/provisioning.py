"""Which nodes to buy and which to release: cheapest capacity for what placement could not place.

Pure: (config, observed nodes and replicas, prior state, now) -> (decision, new state, reason record). Nothing
here reads a clock, logs or does I/O; ties are broken by pool priority, price, then names and ids.

One tick, in order:
1. **Fit what is pending** onto the ready and launching nodes (placement's packer; a launching node is
   capacity already paid for, so it is not bought twice).
2. **Buy for the rest**, greedily: each round packs one fresh node of every pool with room (below
   ``max_nodes``) with the remaining replicas, biggest first, and buys the node with the lowest price per
   unit of work packed. A replica's work is its *fair price*: the cheapest that any pool allowed for it
   charges for its dominant share of a node (its largest share of CPU, memory, GPUs or GPU memory). A
   ratio under 1 means co-locating saves money; a half-empty large node scores badly against a small one.
   Equal ratios go to the lower ``priority``, then the lower price, then the pool name. Replicas no pool
   can hold, or whose pools are at ``max_nodes``, come back with a reason. Pools in ``excluded_pools``
   (the spot policy's: out of capacity until their next probe) are not bought from; a replica's
   ``avoid_pools`` are skipped for it while another allowed pool can hold it.
3. **min_nodes**: launch what each pool lacks.
4. **Idle nodes**: a ready node with no replica for ``node_idle_timeout`` is released (not before), unless
   its pool would drop below ``min_nodes``.
5. **Consolidation** (one node at a time, never while buying): a ready node whose every resource is
   reserved below ``utilization_threshold`` for ``underused_for``, and whose replicas all fit on the other
   ready nodes, is cordoned and its replicas get moves. The operator starts each replacement, waits until
   it is ready, then stops the old replica; when the node is empty it is released here. Moves that have not
   finished within ``move_timeout`` are given up and the node uncordoned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from thrifty.config.cluster import ClusterConfig
from thrifty.policy.cluster_types import ClusterReplica, NodePool, NodeSpec, NodeView, ReplicaRequest
from thrifty.policy.placement import (
    EPS,
    Assignment,
    Packer,
    Unplaced,
    gpu_mem_need,
    how_many_fit,
    placement_order,
    size_order,
    take_many,
)

CAPACITY_STATES = frozenset({"ready", "launching"})


@dataclass(frozen=True, slots=True)
class ProvisioningConfig:
    pools: tuple[NodePool, ...]
    node_idle_timeout_s: float = 300.0
    consolidation: bool = True
    utilization_threshold: float = 0.5
    underused_for_s: float = 120.0
    move_timeout_s: float = 600.0

    @classmethod
    def from_cluster(cls, cfg: ClusterConfig) -> ProvisioningConfig:
        c = cfg.consolidation
        return cls(pools=cfg.pools(), node_idle_timeout_s=cfg.node_idle_timeout, consolidation=c.enabled,
                   utilization_threshold=c.utilization_threshold, underused_for_s=c.underused_for,
                   move_timeout_s=c.move_timeout)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProvisioningState:
    """What the policy remembers between ticks; starts as ``ProvisioningState()``."""

    empty_since: dict[str, float] = field(default_factory=dict)
    underused_since: dict[str, float] = field(default_factory=dict)
    consolidating: str | None = None  # the node being emptied
    consolidating_since_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Launch:
    pool: str
    count: int
    replica_ids: tuple[str, ...]  # the pending replicas these nodes are for (empty: min_nodes)
    reason: str


@dataclass(frozen=True, slots=True)
class Release:
    node_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Move:
    """Start a replacement of ``replica_id`` on ``to_node`` (these GPUs); stop the old one once it is ready."""

    replica_id: str
    api: str
    from_node: str
    to_node: str
    gpu_indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ProvisioningDecision:
    launch: tuple[Launch, ...]
    release: tuple[Release, ...]
    cordon: tuple[str, ...]
    uncordon: tuple[str, ...]
    moves: tuple[Move, ...]
    unfit: tuple[Unplaced, ...]  # pending replicas that no launch can hold
    state: ProvisioningState
    reason: dict[str, Any]


def dominant_share(req: ReplicaRequest, spec: NodeSpec) -> float:
    """The replica's largest share of one node's CPU, memory, GPUs or GPU memory (inf: it cannot fit)."""
    if req.cpu > spec.cpu + EPS or req.mem_bytes > spec.mem_bytes:
        return math.inf
    share = max(req.cpu / spec.cpu if spec.cpu else 0.0, req.mem_bytes / spec.mem_bytes if spec.mem_bytes else 0.0)
    if req.gpu <= 0:
        return share
    if req.gpu >= 1:
        if spec.gpus < int(req.gpu) or (req.gpu_mem_bytes or 0) > spec.gpu_mem_bytes:
            return math.inf
        return max(share, req.gpu / spec.gpus)
    mem = gpu_mem_need(req, spec)
    if spec.gpus == 0 or mem > spec.gpu_mem_bytes:
        return math.inf
    return max(share, req.gpu / spec.gpus, mem / (spec.gpus * spec.gpu_mem_bytes))


def decide(
    cfg: ProvisioningConfig,
    nodes: Sequence[NodeView],
    replicas: Sequence[ClusterReplica],
    state: ProvisioningState,
    now_s: float,
    excluded_pools: frozenset[str] = frozenset(),
    memo: ProvisioningMemo | None = None,
) -> ProvisioningDecision:
    """One provisioning tick (see the module docstring). ``memo``: the caller's, kept from tick to tick, so
    that steps 1-3 and the utilization consolidation reads are not redone while their inputs are the same."""
    live = sorted((n for n in nodes if n.state != "terminating"), key=lambda n: n.id)
    memo = ProvisioningMemo() if memo is None else memo
    fit = memo.fit(cfg, live, replicas, excluded_pools)
    r: dict[str, Any] = {"now_s": now_s, **fit.reason}
    virtual, launches, unfit, count = fit.virtual, list(fit.launches), fit.unfit, dict(fit.count)

    # 4. idle nodes
    used = {x.node_id for x in replicas if x.node_id} | {a.node_id for a in virtual}
    empty_since: dict[str, float] = {}
    releases: list[Release] = []
    min_nodes = {p.name: p.min_nodes for p in cfg.pools}
    for n in live:
        if n.state != "ready" or n.id in used:
            continue
        since = state.empty_since.get(n.id, now_s)
        empty_since[n.id] = since
        idle_s = now_s - since
        if idle_s >= cfg.node_idle_timeout_s - EPS and count[n.spec.pool] > min_nodes.get(n.spec.pool, 0):
            releases.append(Release(n.id, f"no replicas for {idle_s:g}s (node_idle_timeout "
                                    f"{cfg.node_idle_timeout_s:g}s)"))  # fmt: skip
            count[n.spec.pool] -= 1
    r["idle"] = {nid: now_s - s for nid, s in empty_since.items()}

    # 5. consolidation
    c = _Consolidation()
    if cfg.consolidation:
        util = _utilization(fit.capacity) if fit.capacity is not None else memo.utilization(live, replicas)
        _consolidate(cfg, live, replicas, virtual, util, bool(launches or fit.leftover), count, state, now_s,
                     {x.node_id for x in releases}, c, r)  # fmt: skip
    releases.extend(c.releases)
    new_state = ProvisioningState(empty_since=empty_since, underused_since=c.underused_since,
                                  consolidating=c.node, consolidating_since_s=c.since_s)  # fmt: skip

    summary = []
    if launches:
        summary.append("launch " + ", ".join(f"{x.count} x {x.pool}" for x in launches))
    if releases:
        summary.append("release " + ", ".join(x.node_id for x in releases))
    if c.moves:
        summary.append(f"consolidate {c.cordon[0]}: move {len(c.moves)} replicas")
    if c.uncordon:
        summary.append(f"give up consolidating {c.uncordon[0]}")
    if unfit:
        summary.append(f"{len(unfit)} replicas fit no pool")
    r["summary"] = "; ".join(summary) or "hold"
    return ProvisioningDecision(launch=tuple(launches), release=tuple(releases), cordon=tuple(c.cordon),
                                uncordon=tuple(c.uncordon), moves=tuple(c.moves), unfit=tuple(unfit),
                                state=new_state, reason=r)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Fit:
    """Steps 1-3 of a tick: they depend only on the config, the live nodes, the replicas and the excluded pools."""

    capacity: Packer | None  # the ready and launching nodes with the pending replicas that fit placed on them
    virtual: tuple[Assignment, ...]  # where those pending replicas fit
    leftover: bool  # some pending replica fits no ready or launching node
    launches: tuple[Launch, ...]
    unfit: tuple[Unplaced, ...]
    count: dict[str, int]  # live nodes per pool, the launches included
    reason: dict[str, Any]


def _fit(
    cfg: ProvisioningConfig, live: Sequence[NodeView], replicas: Sequence[ClusterReplica], excluded: frozenset[str]
) -> _Fit:
    """Steps 1-3 (see the module docstring): what is pending onto ready and launching nodes, buy for the rest,
    then ``min_nodes``."""
    count: dict[str, int] = {p.name: 0 for p in cfg.pools}
    for n in live:
        count[n.spec.pool] = count.get(n.spec.pool, 0) + 1
    r: dict[str, Any] = {"nodes_by_pool": dict(count), "pending": 0}

    # 1. what is pending, onto ready and launching nodes
    pending = placement_order(x for x in replicas if x.node_id is None)
    virtual: list[Assignment] = []
    leftover: list[ClusterReplica] = []
    capacity: Packer | None = None  # nothing pending (most ticks): built only if consolidation needs it
    if pending:
        capacity = _capacity(live, replicas)
        for rep in pending:
            a = capacity.place(rep)
            if a is None:
                leftover.append(rep)
            else:
                virtual.append(a)
    r.update(pending=len(pending), fit_on_existing=len(virtual), need_new_nodes=len(leftover))

    # 2. buy for the rest; 3. min_nodes
    launches, unfit = _buy(cfg, leftover, count, r, excluded)
    for pool in cfg.pools:
        lacking = pool.min_nodes - count[pool.name]
        if lacking > 0:
            launches.append(Launch(pool.name, lacking, (), f"pool {pool.name} has {count[pool.name]} nodes; "
                                   f"min_nodes is {pool.min_nodes}"))  # fmt: skip
            count[pool.name] += lacking
    return _Fit(capacity, tuple(virtual), bool(leftover), tuple(launches), tuple(unfit), count, r)


class ProvisioningMemo:
    """The last inputs and results of the work a tick repeats while nothing changes, for ``decide``.

    Steps 1-3 depend only on the config, the live nodes, the replicas and the excluded pools, and
    consolidation reads the placed replicas' utilization of the nodes on every tick: between two ticks these
    inputs seldom change (a replica waits minutes for its node to launch), and comparing them with the last
    ones (mostly the same objects) is far cheaper than packing every node again. Results are shared: read them,
    never change them.
    """

    def __init__(self) -> None:
        self._fit: tuple[tuple[Any, ...], _Fit] | None = None
        self._util: tuple[tuple[Any, ...], dict[str, float]] | None = None

    def fit(
        self,
        cfg: ProvisioningConfig,
        live: Sequence[NodeView],
        replicas: Sequence[ClusterReplica],
        excluded: frozenset[str],
    ) -> _Fit:
        key = (cfg, tuple(live), tuple(replicas), excluded)
        if self._fit is None or self._fit[0] != key:
            self._fit = (key, _fit(cfg, live, replicas, excluded))
        return self._fit[1]

    def utilization(self, live: Sequence[NodeView], replicas: Sequence[ClusterReplica]) -> dict[str, float]:
        """``_utilization(_capacity(live, replicas))``."""
        key = (tuple(n for n in live if n.state in CAPACITY_STATES), tuple(x for x in replicas if x.node_id))
        if self._util is None or self._util[0] != key:
            self._util = (key, _utilization(Packer(*key)))
        return self._util[1]


def _capacity(live: Sequence[NodeView], replicas: Sequence[ClusterReplica]) -> Packer:
    """The ready and launching nodes with what the placed replicas hold of them."""
    return Packer((n for n in live if n.state in CAPACITY_STATES), (x for x in replicas if x.node_id))


Kind = int  # index of (API, request): replicas of one API with one request are interchangeable when buying


@dataclass(frozen=True, slots=True)
class _Fill:
    """One fresh node of a pool packed with the remaining replicas: how many of each kind it takes."""

    take: dict[Kind, int]
    exhausted: dict[Kind, int]  # kinds it took all of: valid only while exactly that many remain
    ratio: float  # price per unit of work (lower is better)

    def valid(self, kinds: dict[Kind, list[ClusterReplica]]) -> bool:
        for kind, n in self.take.items():
            left = len(kinds.get(kind, ()))
            if left < n or (kind in self.exhausted and left != self.exhausted[kind]):
                return False
        return True

    def repeats_valid(self, winner: _Fill, kinds: dict[Kind, list[ClusterReplica]]) -> int:
        """How many times ``winner`` can be bought with this fill still valid (at least 1: it is recomputed)."""
        most = 1 << 30
        for kind, n in self.take.items():
            w = winner.take.get(kind, 0)
            if w:
                most = 1 if kind in self.exhausted else min(most, (len(kinds[kind]) - n) // w)
        return max(1, most)


def _buy(
    cfg: ProvisioningConfig,
    leftover: list[ClusterReplica],
    count: dict[str, int],
    r: dict[str, Any],
    excluded: frozenset[str] = frozenset(),
) -> tuple[list[Launch], list[Unplaced]]:
    """Greedy cheapest cover of ``leftover`` with fresh nodes (step 2). Updates ``count``.

    A pool's fill is kept while the replicas it took are still there, so a round only repacks the pools the
    last purchase changed; and the winner is bought as many times at once as every fill stays valid (the
    same choice the one-at-a-time loop would make, round after round).
    """
    unfit: list[Unplaced] = []
    fair: dict[Kind, float] = {}
    kinds: dict[Kind, list[ClusterReplica]] = {}
    kind_of: dict[tuple[str, ReplicaRequest], Kind] = {}
    avoid: dict[Kind, frozenset[str]] = {}  # pools each kind stays out of (only where another pool holds it)
    for rep in leftover:
        kind = kind_of.setdefault((rep.api, rep.request), len(kind_of))
        if kind not in fair:
            req = rep.request
            allowed = [p for p in cfg.pools if req.allows(p.spec)]
            usable = [p for p in allowed if p.name not in excluded]
            elsewhere = [p for p in usable if p.name not in req.avoid_pools
                         and dominant_share(req, p.spec) < math.inf]  # fmt: skip
            if req.avoid_pools and elsewhere:
                avoid[kind] = frozenset(req.avoid_pools)
                usable = elsewhere
            prices = [p.spec.price_per_hour * dominant_share(req, p.spec) for p in usable]
            fair[kind] = min(prices, default=math.inf)
            if not allowed:
                fair[kind] = -1.0  # marks "no pool allowed"
        if fair[kind] == math.inf or fair[kind] < 0:
            why = "no pool allowed by its selector" if fair[kind] < 0 else "larger than a node of any pool it may use"
            out = sorted(p.name for p in cfg.pools if p.name in excluded and rep.request.allows(p.spec))
            if fair[kind] == math.inf and out:
                why = f"every pool that could hold it is out of capacity now ({', '.join(out)})"
            unfit.append(Unplaced(rep.id, rep.api, why))
            continue
        kinds.setdefault(kind, []).append(rep)
    shape = {k: key for key, k in kind_of.items()}
    order = sorted(kinds, key=lambda k: size_order(shape[k][1], shape[k][0]))
    bought: dict[str, list[str]] = {}
    nodes_bought: dict[str, int] = {}
    rounds: list[dict[str, Any]] = []
    fills: dict[str, _Fill | None] = {}
    while kinds:
        best: tuple[tuple[float, int, float, str], NodePool, _Fill] | None = None
        for pool in cfg.pools:
            if count[pool.name] >= pool.max_nodes or pool.name in excluded:
                fills[pool.name] = None
                continue
            f = fills.get(pool.name)
            if pool.name not in fills or (f is not None and not f.valid(kinds)):
                f = fills[pool.name] = _fill_fresh_node(pool, order, shape, kinds, fair, avoid)
            if f is None:
                continue
            key = (round(f.ratio, 9), pool.priority, pool.spec.price_per_hour, pool.name)
            if best is None or key < best[0]:
                best = (key, pool, f)
        if len(rounds) < 3:
            rounds.append({"price_per_work": {p: None if f is None else round(f.ratio, 6) for p, f in fills.items()}})
        if best is None:
            break
        _, pool, win = best
        times = pool.max_nodes - count[pool.name]
        for f in fills.values():
            if f is not None:
                times = min(times, f.repeats_valid(win, kinds))
        count[pool.name] += times
        nodes_bought[pool.name] = nodes_bought.get(pool.name, 0) + times
        ids = bought.setdefault(pool.name, [])
        for kind, n in win.take.items():
            ids.extend(x.id for x in kinds[kind][: n * times])
            del kinds[kind][: n * times]
            if not kinds[kind]:
                del kinds[kind]
    for kind_reps in kinds.values():
        for rep in kind_reps:
            full = sorted(p.name for p in cfg.pools if rep.request.allows(p.spec) and count[p.name] >= p.max_nodes)
            out = sorted(p.name for p in cfg.pools if rep.request.allows(p.spec) and p.name in excluded)
            why = f"pools at max_nodes: {', '.join(full) or '-'}"
            unfit.append(Unplaced(rep.id, rep.api, why + (f"; out of capacity now: {', '.join(out)}" if out else "")))
    fair_by_api = {shape[k][0]: round(v, 6) for k, v in sorted(fair.items(), key=lambda kv: shape[kv[0]][0])
                   if v >= 0}  # fmt: skip
    r["buy"] = {"rounds": rounds, "fair_price_per_hour": dict(list(fair_by_api.items())[:20])}
    launches = [
        Launch(pool, nodes_bought[pool], tuple(ids), f"{len(ids)} pending replicas fit no ready or launching "
               f"node; {nodes_bought[pool]} x {pool} is the cheapest capacity for them")
        for pool, ids in bought.items()
    ]  # fmt: skip
    return launches, unfit


def _fill_fresh_node(
    pool: NodePool,
    order: list[Kind],
    shape: dict[Kind, tuple[str, ReplicaRequest]],
    kinds: dict[Kind, list[ClusterReplica]],
    fair: dict[Kind, float],
    avoid: dict[Kind, frozenset[str]],
) -> _Fill | None:
    """How many replicas of each kind one fresh node of ``pool`` holds (biggest kinds first); None: none fits."""
    packer = Packer([NodeView(id="new", spec=pool.spec, state="ready", since_s=0.0)])
    take: dict[Kind, int] = {}
    exhausted: dict[Kind, int] = {}
    work = 0.0
    room = packer.rooms[0]
    for kind in order:
        reps = kinds.get(kind)
        if not reps:
            continue
        req = shape[kind][1]
        if room.cpu < req.cpu - EPS or room.mem < req.mem_bytes or room.best_gpu < min(req.gpu, 1.0) - EPS:
            continue  # cheap reject before counting
        if not req.allows(pool.spec) or pool.name in avoid.get(kind, ()):
            continue
        n = how_many_fit(room, req, len(reps))
        if n:
            take_many(room, reps[:n])
            take[kind] = n
            work += n * fair[kind]
            if n == len(reps):
                exhausted[kind] = n
    if not take:
        return None
    price = pool.spec.price_per_hour
    ratio = price / work if work > 0 else (0.0 if price == 0 else 1e18)
    return _Fill(take=take, exhausted=exhausted, ratio=ratio)


MAX_CONSOLIDATION_TRIES = 8  # candidates tried per tick: bounds the cost at O(8 x replicas x nodes)


@dataclass(slots=True)
class _Consolidation:
    underused_since: dict[str, float] = field(default_factory=dict)
    node: str | None = None
    since_s: float = 0.0
    cordon: list[str] = field(default_factory=list)
    uncordon: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)


def _utilization(packer: Packer) -> dict[str, float]:
    """Per node: its most reserved resource's share (CPU, memory, GPUs), from the packer's free capacity."""
    out: dict[str, float] = {}
    for room in packer.rooms:
        s = room.node.spec
        used = max(1 - room.cpu * room.inv_cpu, 1 - room.mem * room.inv_mem)
        if room.has_gpus:
            used = max(used, 1 - sum(room.gpu_free) * room.inv_gpus)
        out[room.node.id] = used if s.cpu else 1.0
    return out


def _consolidate(
    cfg: ProvisioningConfig,
    live: list[NodeView],
    replicas: Sequence[ClusterReplica],
    virtual: Sequence[Assignment],
    util: dict[str, float],
    buying: bool,
    count: dict[str, int],
    state: ProvisioningState,
    now_s: float,
    released: set[str],
    c: _Consolidation,
    r: dict[str, Any],
) -> None:
    """Step 5: continue, finish or give up the consolidation in progress, or start one."""
    on_node: dict[str, list[ClusterReplica]] = {}
    for x in replicas:
        if x.node_id:
            on_node.setdefault(x.node_id, []).append(x)
    by_id = {n.id: n for n in live}
    cur = state.consolidating
    if cur is not None:
        if cur not in by_id:
            r["consolidation"] = {"node": cur, "outcome": "node gone"}
        elif not on_node.get(cur):
            c.releases.append(Release(cur, "consolidated: its replicas run on the other nodes"))
            count[by_id[cur].spec.pool] -= 1
            r["consolidation"] = {"node": cur, "outcome": "released"}
        elif now_s - state.consolidating_since_s >= cfg.move_timeout_s - EPS:
            c.uncordon.append(cur)
            r["consolidation"] = {"node": cur, "outcome": f"moves unfinished after {cfg.move_timeout_s:g}s: uncordon"}
        else:
            c.node, c.since_s = cur, state.consolidating_since_s
            r["consolidation"] = {"node": cur, "outcome": "moving", "replicas_left": len(on_node[cur])}
        return
    targets = {a.node_id for a in virtual}
    min_nodes = {p.name: p.min_nodes for p in cfg.pools}
    candidates: list[tuple[float, float, str]] = []
    for n in live:
        u = util.get(n.id)
        if n.state != "ready" or u is None or not on_node.get(n.id) or n.id in targets or n.id in released:
            continue
        if u < cfg.utilization_threshold - EPS:
            since = c.underused_since[n.id] = state.underused_since.get(n.id, now_s)
            if now_s - since >= cfg.underused_for_s - EPS and count[n.spec.pool] > min_nodes.get(n.spec.pool, 0):
                candidates.append((u, -n.spec.price_per_hour, n.id))
    r["consolidation"] = {"underused": {k: round(util[k], 4) for k in sorted(c.underused_since)}}
    if buying or not candidates:
        if buying and candidates:
            r["consolidation"]["outcome"] = "not while buying nodes"
        return
    pending_by_id = {x.id: x for x in replicas if x.node_id is None}
    planned = [ClusterReplica(a.replica_id, a.api, pending_by_id[a.replica_id].request, a.node_id, a.gpu_indices)
               for a in virtual]  # fmt: skip
    tried = []
    for _, _, node_id in sorted(candidates)[:MAX_CONSOLIDATION_TRIES]:
        others = [n for n in live if n.state == "ready" and n.id != node_id and n.id not in released]
        packer = Packer(others, [x for x in replicas if x.node_id and x.node_id != node_id] + planned)
        moves = []
        for rep in placement_order(on_node[node_id]):
            a = packer.place(ClusterReplica(rep.id, rep.api, rep.request))
            if a is None:
                break
            moves.append(Move(rep.id, rep.api, node_id, a.node_id, a.gpu_indices))
        tried.append(node_id)
        if len(moves) == len(on_node[node_id]):
            c.cordon.append(node_id)
            c.moves.extend(moves)
            c.node, c.since_s = node_id, now_s
            r["consolidation"].update(node=node_id, outcome="start", utilization=round(util[node_id], 4),
                                      moves=len(moves))  # fmt: skip
            return
    r["consolidation"].update(outcome="no underused node's replicas fit on the others", tried=tried)
