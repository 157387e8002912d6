"""Which node (and which physical GPUs) each replica runs on: best-fit bin packing.

Pure and stateless: the caller passes the nodes and the replicas (placed ones hold capacity, pending ones
are placed); nothing here reads a clock, logs or does I/O. Same input, same output: nodes are taken in id
order and every tie is broken by node id, then GPU index.

Rules:
- A replica fits a node when the node is in a state that takes replicas (``ready``), its pool selector and
  spot preference allow the node, and CPU, memory and GPUs are free.
- A fractional replica (0 < gpu < 1) lands on ONE physical GPU, never split: the fractions on a GPU never
  exceed 1.0 and their GPU memory never exceeds the GPU's. A replica without ``gpu_mem`` reserves its
  fraction of that GPU's memory, so fractions alone keep memory within bounds.
- A whole-GPU replica (gpu 1, 2, ...) takes that many GPUs that nothing else uses, whole.
- Among the nodes that fit, the order of preference is: a node outside the replica's ``avoid_pools`` (a
  spot replacement stays out of the interrupted pool while another pool has room), fewest replicas of the
  same API already there (an API with two or more replicas spreads over nodes while there is room), a
  CPU-only replica away from GPU nodes (it would strand their GPUs), spot nodes for ``spot: prefer``, then
  best fit: the node left with the least free capacity (CPU, memory and GPU shares summed); on a GPU node,
  the fullest GPU that still fits.
- Pending replicas go biggest first (GPU, GPU memory, CPU, memory), then by API and id.
- Every replica that cannot be placed gets a reason naming what was short and where.

Cost: O(replicas x nodes) with a cheap inner loop (two comparisons reject a full node), and empty nodes
of one shape count once (only the first is scanned until it is taken); GPU scans are bounded by GPUs per
node. ``Packer`` is the reusable core: provisioning packs fresh and remaining nodes with it.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from thrifty.config.schema import ComputeConfig
from thrifty.policy.cluster_types import ClusterReplica, NodeSpec, NodeState, NodeView, ReplicaRequest

EPS = 1e-9
AVOID_PENALTY = 1 << 24  # ranks a node of an avoided pool after every other node that fits
PLACEABLE_STATES: frozenset[NodeState] = frozenset({"ready"})


@dataclass(frozen=True, slots=True)
class Assignment:
    replica_id: str
    api: str
    node_id: str
    gpu_indices: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Unplaced:
    replica_id: str
    api: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    assignments: tuple[Assignment, ...]
    unplaced: tuple[Unplaced, ...]
    reason: dict[str, Any]


@dataclass(slots=True)
class _Room:
    """Free capacity of one node while packing."""

    node: NodeView
    cpu: float
    mem: int
    gpu_free: list[float]
    gpu_mem_free: list[int]
    best_gpu: float  # the largest free fraction on any of its GPUs, to reject a node without scanning
    inv_cpu: float
    inv_mem: float
    inv_gpus: float
    has_gpus: bool
    gpu_penalty: int  # 2 on a GPU node: ranks it after CPU nodes for a CPU-only replica
    on_demand_penalty: int  # 1 on an on-demand node: ranks it after spot nodes for spot: prefer
    gpu_free_total: float = 0.0
    api_counts: dict[str, int] = field(default_factory=dict)

    def refresh_gpu_summary(self) -> None:
        self.best_gpu = max(self.gpu_free) if self.gpu_free else 0.0
        self.gpu_free_total = sum(self.gpu_free)


def _room(node: NodeView) -> _Room:
    s = node.spec
    return _Room(
        node=node,
        cpu=s.cpu,
        mem=s.mem_bytes,
        gpu_free=[1.0] * s.gpus,
        gpu_mem_free=[s.gpu_mem_bytes] * s.gpus,
        best_gpu=1.0 if s.gpus else 0.0,
        inv_cpu=1.0 / s.cpu if s.cpu > 0 else 0.0,
        inv_mem=1.0 / s.mem_bytes if s.mem_bytes > 0 else 0.0,
        inv_gpus=1.0 / s.gpus if s.gpus else 0.0,
        has_gpus=s.gpus > 0,
        gpu_penalty=2 if s.gpus > 0 else 0,
        on_demand_penalty=0 if s.spot else 1,
        gpu_free_total=float(s.gpus),
    )


def request_of(compute: ComputeConfig) -> ReplicaRequest:
    """What one replica of an API reserves, from its ``compute`` block (no memory given: none reserved)."""
    return ReplicaRequest(
        cpu=compute.cpu,
        mem_bytes=compute.mem or 0,
        gpu=compute.gpu,
        gpu_mem_bytes=compute.gpu_mem,
        node_pools=tuple(compute.node_pool or ()),
        spot=compute.spot,
    )


def gpu_mem_need(req: ReplicaRequest, spec: NodeSpec) -> int:
    """GPU memory a fractional replica reserves on one GPU of a node of ``spec``."""
    if req.gpu_mem_bytes is not None:
        return req.gpu_mem_bytes
    return int(req.gpu * spec.gpu_mem_bytes)


def _pick_gpus(room: _Room, req: ReplicaRequest) -> tuple[int, ...] | None:
    """The GPUs a replica would take on this node, or None. Fraction: the fullest GPU that fits."""
    g = req.gpu
    if g <= 0:
        return ()
    free = room.gpu_free
    if g < 1.0:
        need_mem = gpu_mem_need(req, room.node.spec)
        best = -1
        best_left = 2.0
        for i, f in enumerate(free):
            left = f - g
            if left > -EPS and room.gpu_mem_free[i] >= need_mem and left < best_left - EPS:
                best, best_left = i, left
        return (best,) if best >= 0 else None
    want = int(g)
    if req.gpu_mem_bytes is not None and req.gpu_mem_bytes > room.node.spec.gpu_mem_bytes:
        return None
    whole = [i for i, f in enumerate(free) if f >= 1.0 - EPS]
    return tuple(whole[:want]) if len(whole) >= want else None


def _take(room: _Room, replica: ClusterReplica, gpus: tuple[int, ...]) -> None:
    req = replica.request
    room.cpu -= req.cpu
    room.mem -= req.mem_bytes
    if gpus:
        if req.gpu < 1.0:
            i = gpus[0]
            room.gpu_free[i] -= req.gpu
            room.gpu_mem_free[i] -= gpu_mem_need(req, room.node.spec)
        else:
            for i in gpus:
                room.gpu_free[i] = 0.0
                room.gpu_mem_free[i] = 0
        room.refresh_gpu_summary()
    room.api_counts[replica.api] = room.api_counts.get(replica.api, 0) + 1


def size_order(req: ReplicaRequest, api: str) -> tuple[float, int, float, int, str]:
    """Sort key, biggest first: GPU, GPU memory, CPU, memory, then API."""
    return (-req.gpu, -(req.gpu_mem_bytes or 0), -req.cpu, -req.mem_bytes, api)


def how_many_fit(room: _Room, req: ReplicaRequest, most: int) -> int:
    """How many replicas of one request fit in ``room`` (at most ``most``), as one-at-a-time placement would put."""
    n = most
    if req.cpu > 0:
        n = min(n, int((room.cpu + EPS) / req.cpu))
    if req.mem_bytes > 0:
        n = min(n, room.mem // req.mem_bytes)
    if req.gpu <= 0 or n <= 0:
        return max(n, 0)
    if req.gpu >= 1:
        whole = sum(1 for f in room.gpu_free if f >= 1.0 - EPS)
        if req.gpu_mem_bytes is not None and req.gpu_mem_bytes > room.node.spec.gpu_mem_bytes:
            return 0
        return min(n, whole // int(req.gpu))
    need = gpu_mem_need(req, room.node.spec)
    per_gpu = 0
    for i, f in enumerate(room.gpu_free):
        k = int((f + EPS) / req.gpu)
        if need > 0:
            k = min(k, room.gpu_mem_free[i] // need)
        per_gpu += k
    return min(n, per_gpu)


def take_many(room: _Room, replicas: Sequence[ClusterReplica]) -> None:
    """Reserve ``replicas`` (known to fit: see ``how_many_fit``) in ``room``, each as ``Packer.place`` would."""
    for rep in replicas:
        gpus = _pick_gpus(room, rep.request)
        _take(room, rep, gpus or ())


def placement_order(replicas: Iterable[ClusterReplica]) -> list[ClusterReplica]:
    """Biggest first (GPU, GPU memory, CPU, memory), then API and id: the order packing goes in."""
    return sorted(replicas, key=lambda r: (size_order(r.request, r.api), r.id))


class Packer:
    """Free capacity of a set of nodes, and best-fit placement of one replica at a time onto them."""

    def __init__(self, nodes: Iterable[NodeView], placed: Iterable[ClusterReplica] = ()) -> None:
        self.rooms: list[_Room] = [_room(n) for n in sorted(nodes, key=lambda n: n.id)]
        index = {r.node.id: i for i, r in enumerate(self.rooms)}
        self._allowed: dict[tuple[tuple[str, ...], str], list[bool]] = {}
        self._no_room: set[ReplicaRequest] = set()
        used: set[int] = set()
        for rep in placed:
            i = index.get(rep.node_id or "")
            if i is not None:
                _take(self.rooms[i], rep, rep.gpu_indices)
                used.add(i)
        # Empty nodes of one shape are interchangeable: only the first of each shape is scanned, so an empty
        # cluster costs O(replicas x shapes), not O(replicas x nodes). The next one joins when it is taken.
        self._spare: dict[NodeSpec, list[int]] = {}
        self._scan: list[int] = sorted(used)
        for i, room in enumerate(self.rooms):
            if i not in used:
                spare = self._spare.setdefault(room.node.spec, [])
                if not spare:
                    insort(self._scan, i)
                spare.append(i)
        for spare in self._spare.values():
            spare.reverse()  # pop() gives the lowest index next
            spare.pop()  # the first is in the scan already

    def _mask(self, req: ReplicaRequest) -> list[bool]:
        key = (req.node_pools, req.spot)
        mask = self._allowed.get(key)
        if mask is None:
            mask = self._allowed[key] = [_allows(key, r.node.spec) for r in self.rooms]
        return mask

    def _commit(self, i: int, replica: ClusterReplica, gpus: tuple[int, ...]) -> None:
        room = self.rooms[i]
        if not room.api_counts:  # it was empty: the next empty node of its shape becomes visible
            spare = self._spare.get(room.node.spec)
            if spare:
                insort(self._scan, spare.pop())
        _take(room, replica, gpus)

    def place(self, replica: ClusterReplica) -> Assignment | None:
        """Best node for ``replica`` (see the module docstring), committed; None when nothing fits."""
        req = replica.request
        if req in self._no_room:
            return None
        c, m, g = req.cpu - EPS, req.mem_bytes, min(req.gpu, 1.0) - EPS  # g: what one GPU must have free
        cpu_only = req.gpu <= 0
        prefer_spot = req.spot == "prefer"
        avoid = req.avoid_pools
        api = replica.api
        mask = self._mask(req)
        best: _Room | None = None
        best_gpus: tuple[int, ...] | None = ()
        best_rank = 1 << 30
        best_waste = 0.0
        gpu_taken = req.gpu if req.gpu < 1 else float(int(req.gpu))
        rooms = self.rooms
        best_i = -1
        for i in self._scan:
            room = rooms[i]
            if room.cpu < c or room.mem < m or room.best_gpu < g or not mask[i]:
                continue
            rank = (room.api_counts.get(api, 0) << 2) + (room.gpu_penalty if cpu_only else 0)
            if prefer_spot:
                rank += room.on_demand_penalty
            if avoid and room.node.spec.pool in avoid:
                rank += AVOID_PENALTY
            if rank > best_rank:
                continue
            if cpu_only:
                gpus: tuple[int, ...] | None = ()
            else:
                gpus = _pick_gpus(room, req)
                if gpus is None:
                    continue
            waste = (room.cpu - req.cpu) * room.inv_cpu + (room.mem - m) * room.inv_mem
            if room.has_gpus:
                waste += (room.gpu_free_total - gpu_taken) * room.inv_gpus
            if rank < best_rank or waste < best_waste - EPS:
                best, best_i, best_gpus, best_rank, best_waste = room, i, gpus, rank, waste
        if best is None or best_gpus is None:
            self._no_room.add(req)  # free capacity only shrinks: the same request will not fit later either
            return None
        self._commit(best_i, replica, best_gpus)
        return Assignment(replica_id=replica.id, api=api, node_id=best.node.id, gpu_indices=best_gpus)

    def why_not(self, replica: ClusterReplica) -> str:
        """Why ``replica`` fits none of the nodes, naming what was short and by how much."""
        req = replica.request
        mask = self._mask(req)
        eligible = [r for i, r in enumerate(self.rooms) if mask[i]]
        if not self.rooms:
            return "no node takes replicas (none is ready)"
        if not eligible:
            return f"no ready node allowed by its {_selector(req)}"
        short: dict[str, int] = {}
        for room in eligible:
            if room.cpu < req.cpu - EPS:
                short["cpu"] = short.get("cpu", 0) + 1
            if room.mem < req.mem_bytes:
                short["mem"] = short.get("mem", 0) + 1
            if req.gpu > 0 and _pick_gpus(room, req) is None:
                short["gpu"] = short.get("gpu", 0) + 1
        n = len(eligible)
        parts = []
        if "cpu" in short:
            most = max(r.cpu for r in eligible)
            parts.append(f"CPU short on {short['cpu']} (needs {req.cpu:g}, most free {max(most, 0):g})")
        if "mem" in short:
            most_mem = max(r.mem for r in eligible)
            parts.append(f"memory short on {short['mem']} (needs {_gib(req.mem_bytes)}, most free {_gib(most_mem)})")
        if "gpu" in short:
            parts.append(f"GPU short on {short['gpu']} ({_gpu_need(req)}; most free on one GPU "
                         f"{max(r.best_gpu for r in eligible):g})")  # fmt: skip
        detail = "; ".join(parts) if parts else "capacity is taken by other replicas"
        return f"no room on the {n} eligible node{'s' if n != 1 else ''}: {detail}"


def _allows(key: tuple[tuple[str, ...], str], spec: NodeSpec) -> bool:
    pools, spot = key
    if pools and spec.pool not in pools:
        return False
    if spot == "require":
        return spec.spot
    if spot == "never":
        return not spec.spot
    return True


def _selector(req: ReplicaRequest) -> str:
    parts = []
    if req.node_pools:
        parts.append(f"node_pool {', '.join(req.node_pools)}")
    if req.spot != "prefer":
        parts.append(f"spot: {req.spot}")
    return " and ".join(parts) or "selector"


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g}Gi"


def _gpu_need(req: ReplicaRequest) -> str:
    if req.gpu < 1:
        mem = f" and {_gib(req.gpu_mem_bytes)} of its memory" if req.gpu_mem_bytes is not None else ""
        return f"needs {req.gpu:g} of one GPU{mem}"
    return f"needs {int(req.gpu)} whole GPU{'s' if req.gpu >= 2 else ''}"


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """What the replicas on a node reserve (for ``thrifty cluster info``: used against the node's spec)."""

    node_id: str
    replicas: int
    cpu: float
    mem_bytes: int
    gpus: float  # fractions summed; whole GPUs count 1 each
    gpu_mem_bytes: int


def usage(nodes: Sequence[NodeView], replicas: Sequence[ClusterReplica]) -> tuple[NodeUsage, ...]:
    """Reserved capacity per node, in node id order, counted the way placement counts it."""
    packer = Packer(nodes, (r for r in replicas if r.node_id is not None))
    out = []
    for room in packer.rooms:
        s = room.node.spec
        out.append(NodeUsage(
            node_id=room.node.id,
            replicas=sum(room.api_counts.values()),
            cpu=max(0.0, s.cpu - room.cpu),
            mem_bytes=max(0, s.mem_bytes - room.mem),
            gpus=max(0.0, s.gpus - room.gpu_free_total),
            gpu_mem_bytes=max(0, s.gpus * s.gpu_mem_bytes - sum(room.gpu_mem_free)),
        ))  # fmt: skip
    return tuple(out)


def place(
    nodes: Sequence[NodeView],
    replicas: Sequence[ClusterReplica],
    states: frozenset[NodeState] = PLACEABLE_STATES,
) -> PlacementDecision:
    """Place every replica with ``node_id`` None onto ``nodes`` in ``states``; placed replicas hold capacity.

    A placed replica whose node is not listed (or not in ``states``) is ignored: its node is going away.
    """
    usable = [n for n in nodes if n.state in states]
    pending = placement_order(r for r in replicas if r.node_id is None)
    assignments: list[Assignment] = []
    failed: list[ClusterReplica] = []
    unplaced: tuple[Unplaced, ...] = ()
    if pending:  # nothing to place (most ticks): no packer to build over every node
        packer = Packer(usable, (r for r in replicas if r.node_id is not None))
        for rep in pending:
            a = packer.place(rep)
            if a is None:
                failed.append(rep)
            else:
                assignments.append(a)
        why: dict[ReplicaRequest, str] = {}  # the reason depends only on the request (the packing is done)
        for r in failed:
            if r.request not in why:
                why[r.request] = packer.why_not(r)
        unplaced = tuple(Unplaced(replica_id=r.id, api=r.api, reason=why[r.request]) for r in failed)
    reason: dict[str, Any] = {
        "nodes": len(usable),
        "pending": len(pending),
        "placed": len(assignments),
        "unplaced": len(unplaced),
        "summary": (
            f"placed {len(assignments)} of {len(pending)} pending replicas on {len(usable)} nodes"
            + (f"; {len(unplaced)} cannot be placed" if unplaced else "")
        ),
    }
    return PlacementDecision(assignments=tuple(assignments), unplaced=unplaced, reason=reason)
