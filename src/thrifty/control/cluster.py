"""The operator's cluster steps, in order: nodes → placement → provisioning → start orders → costs.

Only with a cluster file (``thrifty up --cluster``). The deployments step asks for replicas; here they wait
as *pending* until placement puts them on a ready node; what no node can hold makes provisioning buy the
cheapest nodes that fit; then the engine starts each replica pinned to its node. Provisioning also gives
back nodes idle for ``node_idle_timeout`` and consolidates: the replicas of an underused node are moved
(a replacement started on another node, the old replica stopped only once the replacement is ready, so no
request fails) and the emptied node is released.

Everything here reads time through ``now`` (and the store's wall clock), and talks to the world only
through the cloud provider seam and the start orders it returns, so the cost simulator drives it on a
virtual clock with ``FakeCloud`` and ``FakeEngine``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import Any

from thrifty.clouds import preemption
from thrifty.clouds.base import CapacityError, CloudProvider
from thrifty.clouds.preemption import ChaosEvent, ChaosTarget, PoolChaos, Preemption, PreemptionProcess
from thrifty.config.cluster import ClusterConfig, SpotChaosConfig
from thrifty.control.cluster_costs import CostsStep
from thrifty.control.nodes import NodesStep
from thrifty.control.placement_step import PlacementStep
from thrifty.control.provisioning_step import ProvisioningStep
from thrifty.control.spot_step import SpotStep
from thrifty.control.store import Store
from thrifty.engines.base import NodePlacement, ReplicaLaunch, ReplicaObservation
from thrifty.errors import NotFoundError, RequestError
from thrifty.policy.cluster_types import ClusterReplica, NodePool, NodeView, ReplicaRequest
from thrifty.policy.placement import usage
from thrifty.policy.provisioning import Move, ProvisioningConfig, ProvisioningDecision
from thrifty.policy.rollout import ReplicaView
from thrifty.policy.spot import ReplicaLoad, SpotDecision


@dataclass
class PendingReplica:
    launch: ReplicaLaunch
    request: ReplicaRequest
    since_s: float


@dataclass(frozen=True, slots=True)
class StartOrder:
    """Start ``launch`` on cloud node ``node_id`` (``placement``: the engine's pinning, None where unpinned)."""

    launch: ReplicaLaunch
    node_id: str
    placement: NodePlacement | None


@dataclass(frozen=True, slots=True)
class ClusterTick:
    starts: tuple[StartOrder, ...]
    stops: tuple[str, ...]  # replicas whose replacement (a consolidation move) is ready; spot stops and cancels


class Cluster:
    def __init__(
        self,
        config: ClusterConfig,
        cloud: CloudProvider,
        store: Store,
        wall: Callable[[], float],
        *,
        pools: tuple[NodePool, ...] | None = None,
        pin: bool = True,
    ) -> None:
        """``pin``: the engine runs replicas on the node given (Ray); False for the local engine (one node)."""
        self.config = config
        self.pools = pools if pools is not None else config.pools()
        self.cloud = cloud
        self.pin = pin
        self.nodes = NodesStep(cloud, store, wall)
        self.placement = PlacementStep()
        self.provisioning = ProvisioningStep(
            ProvisioningConfig(
                pools=self.pools,
                node_idle_timeout_s=config.node_idle_timeout,
                consolidation=config.consolidation.enabled,
                utilization_threshold=config.consolidation.utilization_threshold,
                underused_for_s=config.consolidation.underused_for,
                move_timeout_s=config.consolidation.move_timeout,
            )
        )
        self.costs = CostsStep()
        self.spot = SpotStep(config, cloud, store, wall, event=self.nodes.event)
        self._chaos: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self.pending: dict[str, PendingReplica] = {}
        self.placed: dict[str, ClusterReplica] = {}
        self.moves: dict[str, str] = {}  # replacement id -> the replica it replaces
        self.unfit: dict[str, str] = {}  # pending replica -> why no node that can be bought would hold it

    # what the deployments step sees -------------------------------------------------------------------
    def queue(self, launch: ReplicaLaunch, request: ReplicaRequest, now: float) -> None:
        self.pending[launch.replica_id] = PendingReplica(launch, request, now)

    def drop(self, replica_id: str) -> bool:
        """A replica the deployments step stops: True when it was only pending (nothing to stop)."""
        return self.pending.pop(replica_id, None) is not None

    def pending_views(self, api: str) -> list[ReplicaView]:
        return [
            ReplicaView(rid, p.launch.revision, "starting", p.since_s)
            for rid, p in self.pending.items()
            if p.launch.api == api and rid not in self.spot.replacing  # a spot replacement is not one more
        ]

    def hidden(self, observed: list[ReplicaObservation]) -> set[str]:
        """Move replacements the deployments step must not count yet: their replica still serves."""
        if not self.moves and not self.spot.replacing:
            return set()
        live = {o.replica_id for o in observed if o.state != "stopping"}
        moves = {new for new, old in self.moves.items() if old in live}
        return moves | {new for new, old in self.spot.replacing.items() if old in live}

    def draining(self) -> set[str]:
        """Replicas the gateway must send nothing new to: unrouted by the spot step, and those of a node that is
        being given back or went away (their cut-off requests are retried elsewhere without bound)."""
        dying = {
            rid for rid, x in self.placed.items()
            if x.node_id not in self.nodes.nodes or self.nodes.nodes[x.node_id].state == "terminating"
        }  # fmt: skip
        return dying | set(self.spot.unrouted)

    def lost_with_node(self, replica_id: str) -> bool:
        """Whether the replica's node is gone or going (a replica that exits then did not crash)."""
        x = self.placed.get(replica_id)
        if x is None or x.node_id is None:
            return False
        live = {n.id for n in self.cloud.nodes() if n.state != "terminated"}
        tracked = self.nodes.nodes.get(x.node_id)
        return x.node_id not in live or (tracked is not None and tracked.state == "terminating")

    def forget(self, replica_id: str) -> None:
        self.placed.pop(replica_id, None)
        self.pending.pop(replica_id, None)
        self.spot.forget(replica_id)

    def drop_api(self, api: str) -> None:
        for rid in [rid for rid, p in self.pending.items() if p.launch.api == api]:
            del self.pending[rid]

    # the steps ---------------------------------------------------------------------------------------
    async def update(
        self,
        now: float,
        observed: list[ReplicaObservation],
        replacement: Callable[[str], ReplicaLaunch | None],
        requests: dict[str, int],
        loads: Mapping[str, ReplicaLoad] | None = None,
    ) -> ClusterTick:
        """One tick. ``replacement(api)``: a new launch of the API's current revision (for moves)."""
        ids = {o.replica_id: o for o in observed}
        for rid in [rid for rid in self.placed if rid not in ids]:
            del self.placed[rid]  # stopped or gone: its capacity is free again
        stops = self._finish_moves(ids)

        nodes = self.nodes.update(now)
        starts: list[StartOrder] = []
        pending = [ClusterReplica(rid, p.launch.api, p.request) for rid, p in self.pending.items()]
        decision = self.placement.update(now, nodes, list(self.placed.values()), pending)
        for a in decision.assignments:
            p = self.pending.pop(a.replica_id)
            starts.append(self._place(p.launch, p.request, a.node_id, a.gpu_indices))

        left = [ClusterReplica(rid, p.launch.api, p.request) for rid, p in self.pending.items()]
        out = self.spot.excluded(now)
        prov = self.provisioning.update(now, nodes, [*self.placed.values(), *left], out)
        spot = self.spot.update(now, self.nodes.views(), [*self.placed.values(), *left], loads or {}, prov.launch)
        prov = dc_replace(prov, launch=spot.launch)
        starts.extend(await self._carry_out(prov, now, replacement))
        stops.extend(await self._carry_out_spot(spot, now, ids, replacement))

        self.costs.update(now, self.nodes.views(), list(self.placed.values()), requests)
        return ClusterTick(tuple(starts), tuple(stops))

    def _finish_moves(self, ids: dict[str, ReplicaObservation]) -> list[str]:
        """Stop each moved replica once its replacement is ready; forget moves that ended either way."""
        stops = []
        for new, old in list(self.moves.items()):
            new_obs, old_obs = ids.get(new), ids.get(old)
            if old_obs is None or (new_obs is None and new not in self.pending):
                del self.moves[new]  # the old one is gone (done, or stopped for another reason), or the new failed
            elif new_obs is not None and new_obs.state == "ready" and old_obs.state != "stopping":
                stops.append(old)
        return stops

    def _place(self, launch: ReplicaLaunch, request: ReplicaRequest, node_id: str, gpus: tuple[int, ...]) -> StartOrder:
        self.placed[launch.replica_id] = ClusterReplica(launch.replica_id, launch.api, request, node_id, gpus)
        engine_node = self.nodes.engine_node_id(node_id)
        spec = self.nodes.spec(node_id)
        placement = None
        if self.pin and engine_node is not None:
            placement = NodePlacement(engine_node, spec.gpu_mem_bytes if spec is not None else 0)
        return StartOrder(launch, node_id, placement)

    async def _carry_out(
        self, d: ProvisioningDecision, now: float, replacement: Callable[[str], ReplicaLaunch | None]
    ) -> list[StartOrder]:
        reason = d.reason
        self.unfit = {u.replica_id: u.reason for u in d.unfit}
        pools = {p.name: p for p in self.pools}
        for launch in d.launch:
            pool = pools[launch.pool]
            apis = sorted({self.pending[r].launch.api for r in launch.replica_ids if r in self.pending})
            data = {"pool": launch.pool, "for_apis": apis, "replicas": list(launch.replica_ids), "reason": reason}
            for _ in range(launch.count):
                try:
                    node = await self.cloud.launch(pool.spec)
                except CapacityError as exc:
                    self.spot.record_launch(launch.pool, False, now)
                    self.nodes.event("node_launch_failed", f"pool {launch.pool}: {exc.message}", data)
                    break
                self.spot.record_launch(launch.pool, True, now)
                self.nodes.launched(node, launch.reason, now, data)
        for node_id in d.uncordon:
            self.nodes.set_state(node_id, "ready", now)
            self.nodes.event("consolidation", f"give up consolidating {node_id}: moves unfinished; uncordoned",
                             {"node": node_id, "reason": reason})  # fmt: skip
        for node_id in d.cordon:
            self.nodes.set_state(node_id, "cordoned", now)
            moved = [m.replica_id for m in d.moves if m.from_node == node_id]
            self.nodes.event("consolidation", f"consolidate {node_id}: move {len(moved)} replicas to the other nodes, "
                             "then release it", {"node": node_id, "moves": moved, "reason": reason})  # fmt: skip
        starts = [s for m in d.moves if (s := self._move(m, replacement)) is not None]
        for release in d.release:
            await self.nodes.release(release.node_id, release.reason, now, {"reason": reason})
        return starts

    async def _carry_out_spot(
        self,
        d: SpotDecision,
        now: float,
        observed: Mapping[str, ReplicaObservation],
        replacement: Callable[[str], ReplicaLaunch | None],
    ) -> list[str]:
        """The spot decision, after provisioning's (whose launches it has rewritten): cordons, replacements
        (pending, placed next tick with ``avoid_pools``), stops and cancels (returned), releases."""
        reason = d.reason
        for node_id in d.uncordon:
            node = self.nodes.nodes.get(node_id)
            if node is not None and node.state == "cordoned":
                self.nodes.set_state(node_id, "ready", now)
        for node_id in d.cordon:
            node = self.nodes.nodes.get(node_id)
            if node is not None and node.state in ("ready", "launching"):
                self.nodes.set_state(node_id, "cordoned", now)
        for r in d.replace:
            old = self.placed.get(r.replica_id)
            old_pending = self.pending.get(r.replica_id)
            request = old.request if old is not None else old_pending.request if old_pending is not None else None
            launch = replacement(r.api)
            if request is None or launch is None:
                continue
            avoiding = dc_replace(request, avoid_pools=r.avoid_pools)
            self.pending[launch.replica_id] = PendingReplica(launch, avoiding, now)
            self.spot.add_replacing(launch.replica_id, r.replica_id)
        stops: list[str] = []
        for rid in (*d.stop, *d.cancel):
            if self.pending.pop(rid, None) is not None:
                self.spot.forget(rid)
            elif rid in observed and observed[rid].state != "stopping":
                stops.append(rid)
        for release in d.release:
            node = self.nodes.nodes.get(release.node_id)
            if node is None or node.state == "terminating":
                continue  # asked before: the node is going
            await self.nodes.release(release.node_id, release.reason, now, {"reason": reason.get("summary", "")})
        return stops

    def _move(self, move: Move, replacement: Callable[[str], ReplicaLaunch | None]) -> StartOrder | None:
        old = self.placed.get(move.replica_id)
        launch = replacement(move.api)
        if old is None or launch is None:
            return None
        self.moves[launch.replica_id] = move.replica_id
        return self._place(launch, old.request, move.to_node, move.gpu_indices)

    # reading -----------------------------------------------------------------------------------------
    def node_of(self, replica_id: str) -> str | None:
        rep = self.placed.get(replica_id)
        return rep.node_id if rep is not None else None

    def waiting(self, api: str) -> dict[str, Any]:
        """The API's replicas that wait for a node, and why (for ``thrifty get``)."""
        ids = [rid for rid, p in self.pending.items() if p.launch.api == api]
        why = {**{r: f"{w}; waiting for a node to launch" for r, w in self.placement.unplaced.items()}, **self.unfit}
        reasons = sorted({why[r] for r in ids if r in why})
        return {"replicas": len(ids), "reasons": reasons}

    def info(self, wall_now: float) -> dict[str, Any]:
        """``thrifty cluster info``: every node (pool, spot, $/h, used and total, age) and the cluster's $/h."""
        views: list[NodeView] = self.nodes.views()
        used = {u.node_id: u for u in usage(views, list(self.placed.values()))}
        per_node = {n.node_id: n for n in self.costs.breakdown.nodes}
        rows = []
        for node in sorted(self.nodes.nodes.values(), key=lambda n: n.id):
            s = node.spec
            u = used.get(node.id)
            cost = per_node.get(node.id)
            rows.append({
                "id": node.id,
                "pool": s.pool,
                "instance_type": s.instance_type,
                "capacity": "spot" if s.spot else "on-demand",
                "state": node.state,
                "price_per_hour": s.price_per_hour,
                "replicas": sorted(r.id for r in self.placed.values() if r.node_id == node.id),
                "cpu": {"used": round(u.cpu, 3) if u else 0.0, "total": s.cpu},
                "mem_bytes": {"used": u.mem_bytes if u else 0, "total": s.mem_bytes},
                "gpu": {"used": round(u.gpus, 3) if u else 0.0, "total": s.gpus},
                "gpu_mem_bytes": {"used": u.gpu_mem_bytes if u else 0, "total": s.gpus * s.gpu_mem_bytes},
                "by_api_per_hour": cost.by_api if cost else {},
                "idle_per_hour": round(cost.idle_per_hour, 6) if cost else s.price_per_hour,
                "launched_at": node.launched_at,
                "age_s": round(wall_now - node.launched_at, 1),
                "engine_node_id": node.engine_node_id,
                "reason": node.reason,
            })  # fmt: skip
        return {
            "engine": self.config.engine,
            "provider": self.config.provider.value,
            "nodes": rows,
            "pools": [
                {
                    "name": p.name,
                    "instance_type": p.spec.instance_type,
                    "capacity": "spot" if p.spec.spot else "on-demand",
                    "price_per_hour": p.spec.price_per_hour,
                    "cpu": p.spec.cpu,
                    "mem_bytes": p.spec.mem_bytes,
                    "gpu": p.spec.gpus,
                    "min_nodes": p.min_nodes,
                    "max_nodes": p.max_nodes,
                    "nodes": sum(1 for n in self.nodes.nodes.values() if n.spec.pool == p.name),
                }
                for p in self.pools
            ],
            "pending_replicas": len(self.pending),
            "cost": self.costs.cluster(),
            "placement": self.placement.last_reason,
            "provisioning": self.provisioning.last_reason,
            "spot": self.spot_info(),
        }

    def spot_info(self) -> dict[str, Any]:
        """Spot vs on-demand nodes, and what spot saves per hour against the same capacity on demand."""
        live = [n for n in self.nodes.nodes.values() if n.state != "terminating"]
        spot = [n for n in live if n.spec.spot]
        b = self.costs.breakdown
        return {
            "spot_nodes": len(spot),
            "on_demand_nodes": len(live) - len(spot),
            "spot_per_hour": round(sum(n.spec.price_per_hour for n in spot), 6),
            "spot_on_demand_price_per_hour": round(sum(n.spec.price_on_demand_per_hour for n in spot), 6),
            "savings_per_hour": round(b.spot_savings_per_hour, 6),
            "notice_handling": self.spot.config.notice_handling,
            "on_demand_backup": self.spot.config.on_demand_backup,
            "draining": {k: v.kind for k, v in sorted(self.spot.state.drains.items())},
            "out_of_capacity": sorted(self.spot.excluded(self.spot.now)),
            "replacing": dict(sorted(self.spot.replacing.items())),
        }

    # simulated provider controls (thrifty cluster preempt|rebalance|capacity, the chaos market) ------------
    def _market(self, verb: str) -> ChaosTarget:
        cloud = self.cloud
        if not all(callable(getattr(cloud, a, None)) for a in ("preempt", "recommend_rebalance", "set_capacity")):
            raise RequestError(
                f"{verb} works with provider: simulated only (this platform runs provider "
                f"{self.config.provider.value}); a real cloud sends its own notices"
            )
        return cloud  # type: ignore[return-value]

    async def preempt(self, node_id: str, notice_s: float) -> dict[str, Any]:
        market = self._market("cluster preempt")
        notice = await market.preempt(node_id, notice_s)
        what = "hard kill (no notice)" if notice_s <= 0 else f"interruption notice, {notice_s:g}s to go"
        self.nodes.event("spot_preempt", f"{node_id} preempted on command: {what}", {"node": node_id,
                         "notice_s": notice_s})  # fmt: skip
        return {"node": node_id, "notice_s": notice_s, "deadline": notice.deadline_s}

    def rebalance(self, node_id: str) -> dict[str, Any]:
        market = self._market("cluster rebalance")
        market.recommend_rebalance(node_id)  # type: ignore[attr-defined]
        self.nodes.event("spot_preempt", f"rebalance recommendation for {node_id} on command", {"node": node_id})
        return {"node": node_id, "kind": "rebalance"}

    def set_capacity(self, pool: str, launches: int | None) -> dict[str, Any]:
        market = self._market("cluster capacity")
        if pool not in {p.name for p in self.pools}:
            raise NotFoundError(f"no pool named {pool!r} (pools: {', '.join(p.name for p in self.pools)})")
        market.set_capacity(pool, launches)
        left = "unlimited" if launches is None else str(launches)
        self.nodes.event("spot_capacity", f"pool {pool}: capacity set to {left} on command",
                         {"pool": pool, "launches": launches})  # fmt: skip
        return {"pool": pool, "launches": launches}

    def start_chaos(self, chaos: SpotChaosConfig) -> dict[str, Any]:
        """Run the random spot market (``clouds.preemption``) on this platform until stopped; no pools: stop it."""
        market = self._market("spot chaos")
        unknown = sorted(set(chaos.pools) - {p.name for p in self.pools})
        if unknown:
            raise NotFoundError(f"no pool named {', '.join(unknown)}")
        self.stop_chaos()
        if not chaos.pools:
            return {"running": False}
        pools = {name: PoolChaos(c.interruptions_per_node_hour, c.notice, c.correlation, c.outages_per_hour, c.outage)
                 for name, c in chaos.pools.items()}  # fmt: skip
        wall = self.nodes.wall
        process = PreemptionProcess(pools, random.Random(chaos.seed), wall())
        stop = asyncio.Event()

        def report(events: Sequence[ChaosEvent]) -> None:
            for e in events:
                if isinstance(e, Preemption):
                    what = "hard kill" if e.notice_s <= 0 else f"{e.notice_s:g}s notice"
                    along = " (taken along with another node of its pool)" if e.correlated else ""
                    self.nodes.event("spot_preempt", f"chaos: {e.node_id} reclaimed, {what}{along}",
                                     {"node": e.node_id, "pool": e.pool, "notice_s": e.notice_s})  # fmt: skip
                else:
                    state = "capacity back" if e.available else "out of capacity"
                    self.nodes.event("spot_capacity", f"chaos: pool {e.pool} {state}", {"pool": e.pool})

        task = asyncio.get_running_loop().create_task(
            preemption.run(market, process, wall, stop, tick_s=chaos.tick, on_events=report)
        )
        self._chaos = (task, stop)
        return {"running": True, "pools": sorted(pools), "seed": chaos.seed}

    def stop_chaos(self) -> None:
        if self._chaos is not None:
            self._chaos[1].set()
            self._chaos = None

    async def close(self) -> None:
        chaos = self._chaos
        self.stop_chaos()
        if chaos is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chaos[0], 5.0)
        await self.nodes.close()
