"""One simulation run: the simulated cloud (nodes, launch delay, prices, spot interruptions), the simulated
engine (replicas with cold starts) and the data plane, advanced tick by tick on virtual time while a
:class:`~thrifty.sim.control.ControlPlane` decides.

Billing is per second from a node's launch request to its end (release or interruption), at its pool's
price. Cold starts and node launches complete at the first control tick at or after they are due.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thrifty.config.scenario import ScenarioConfig
from thrifty.models.recent import RecentModels
from thrifty.policy.cluster_types import ClusterReplica, NodeSpec, NodeState, NodeView, ReplicaRequest
from thrifty.policy.placement import request_of
from thrifty.sim.control import Actions, ControlPlane, Observation
from thrifty.sim.dataplane import ApiModel, DataPlane, SimReplica
from thrifty.sim.traffic import Arrivals

TIMELINE_STEP_S = 60.0
WARM_START_PASSES = 6


@dataclass
class SimNode:
    id: str
    spec: NodeSpec
    state: NodeState  # launching | ready | cordoned
    since_s: float
    launched_s: float
    ready_at_s: float
    ends_at_s: float | None = None  # set by a spot notice


@dataclass
class RunResult:
    strategy: str
    duration_s: float
    apis: list[ApiModel]
    node_seconds: dict[str, float] = field(default_factory=dict)  # per pool
    dollars: dict[str, float] = field(default_factory=dict)  # per pool
    gpu_seconds: float = 0.0
    replica_seconds: dict[str, float] = field(default_factory=dict)  # per API
    interruptions: int = 0
    knob: str = ""  # the strategy's knob setting of this run
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Simulation:
    def __init__(self, scenario: ScenarioConfig, arrivals: Arrivals, control: ControlPlane, strategy: str,
                 progress: Callable[[float], None] | None = None, *,
                 plain_model_cache: bool = False) -> None:  # fmt: skip
        """``plain_model_cache``: multi-model APIs route without model affinity and evict least recently used
        (Cortex's per-replica cache), instead of thrifty's model routing and popularity-aware eviction."""
        self.sc = scenario
        self.arrivals = arrivals
        self.control = control
        self.progress = progress
        self.apis = [ApiModel(i, scenario.api(n), scenario.service[n], arrivals.model_names[i])
                     for i, n in enumerate(arrivals.api_names)]  # fmt: skip
        for api in self.apis:
            api.model_aware = not plain_model_cache
            api.lru = plain_model_cache
        self.api_by_name = {a.name: a for a in self.apis}
        self.dp = DataPlane(self.apis, scenario.seed, on_gone=self._replica_gone)
        self.pools = {p.name: p for p in scenario.cluster.pools()}
        self.nodes: dict[str, SimNode] = {}
        self.node_count = 0
        self.replicas: dict[str, SimReplica] = {}
        self.starting: list[tuple[float, SimReplica]] = []
        self.rng = random.Random(scenario.seed + 1)
        self.noticed: list[tuple[str, float]] = []
        self._requests: dict[int, ReplicaRequest] = {}  # per API: what a replica asks of its node
        self._views: dict[str, NodeView] = {}  # per node: its last observed view (_observe)
        self._replica_views: dict[str, tuple[SimReplica, ClusterReplica]] = {}  # per replica id: its view
        # models.keep_warm: the gateway's count of the models asked for recently, fed with each tick's arrivals.
        self.recent: dict[int, RecentModels] = {
            a.index: RecentModels(float(a.config.models.keep_warm))
            for a in self.apis
            if a.multi and a.model_aware and a.config.models is not None and a.config.models.keep_warm
        }
        self.result = RunResult(strategy, scenario.duration, self.apis,
                                node_seconds={p: 0.0 for p in self.pools}, dollars={p: 0.0 for p in self.pools},
                                replica_seconds={a.name: 0.0 for a in self.apis})  # fmt: skip

    # -- the simulated cloud -----------------------------------------------------------------------------

    def _launch(self, pool: str, node_id: str, now_s: float, warm: bool) -> None:
        self.node_count += 1
        delay = 0.0 if warm else self.sc.cluster.launch_delay_s
        state: NodeState = "ready" if warm else "launching"
        self.nodes[node_id] = SimNode(node_id, self.pools[pool].spec, state, now_s, now_s, now_s + delay)

    def _end_node(self, node_id: str, now_s: float) -> None:
        node = self.nodes.pop(node_id, None)
        self._views.pop(node_id, None)
        if node is None:
            return
        secs = now_s - node.launched_s
        self.result.node_seconds[node.spec.pool] += secs
        self.result.dollars[node.spec.pool] += secs / 3600.0 * node.spec.price_per_hour
        self.result.gpu_seconds += secs * node.spec.gpus
        for rep in [r for r in self.replicas.values() if r.node_id == node_id]:
            self.dp.kill(rep, now_s)

    def _spot(self, now_s: float, dt: float) -> None:
        for pool, proc in self.sc.spot.items():
            live = [n for n in self.nodes.values() if n.spec.pool == pool and n.ends_at_s is None]
            p = proc.rate * dt / 3600.0
            for node in live:
                if node.ends_at_s is None and self.rng.random() < p:
                    hit = [node] + [o for o in live if o is not node and o.ends_at_s is None
                                    and self.rng.random() < proc.correlation]  # fmt: skip
                    for n in hit:
                        n.ends_at_s = now_s + proc.notice
                        self.result.interruptions += 1
                        self.noticed.append((n.id, float(proc.notice)))

    # -- the simulated engine ----------------------------------------------------------------------------

    def _replica_gone(self, rep: SimReplica, now_s: float) -> None:
        self._replica_views.pop(rep.id, None)
        if self.replicas.pop(rep.id, None) is not None:
            self.result.replica_seconds[rep.api.name] += now_s - rep.started_s

    def _observe(self, now_s: float, warm: bool = False) -> Observation:
        views = tuple(self._node_view(n) for n in self.nodes.values())
        reps = tuple(self._replica_view(r) for r in self.replicas.values() if not r.draining)
        in_flight = {a.name: float(self.dp.in_flight[a.index]) for a in self.apis}
        in_flight_s = {a.name: self.dp.in_flight_seconds(a.index, now_s) for a in self.apis}
        busy = {}
        for a in self.apis:
            reps_a = self.dp.routable[a.index]
            busy[a.name] = sum(r.executing for r in reps_a) / (len(reps_a) * a.slots) if reps_a else 0.0
        noticed, self.noticed = tuple(self.noticed), []
        recent = {self.apis[i].name: r.count(now_s) for i, r in self.recent.items()}
        return Observation(in_flight, views, reps, noticed, warm, busy, in_flight_s, recent)

    def _see_models(self, lo: int, hi: int, now_s: float) -> None:
        """The gateway's ``RecentModels.seen`` for the arrivals ``lo:hi`` (one tick's), at the tick's end."""
        for i in self.recent:
            self._see_models_of(i, lo, hi, now_s)

    def _see_models_of(self, i: int, lo: int, hi: int, now_s: float) -> None:
        arr = self.arrivals
        models = arr.model[lo:hi][arr.api[lo:hi] == i] if len(self.apis) > 1 else arr.model[lo:hi]
        keys, recent = self.apis[i].keys, self.recent[i]
        for m in np.unique(models).tolist():
            recent.seen(keys[m], now_s)

    def _node_view(self, node: SimNode) -> NodeView:
        """What the operator observes of ``node``: the last view while its state is unchanged (frozen, equal)."""
        view = self._views.get(node.id)
        if view is None or view.state != node.state or view.since_s != node.since_s or view.spec is not node.spec:
            view = self._views[node.id] = NodeView(node.id, node.spec, node.state, node.since_s)
        return view

    def _replica_view(self, rep: SimReplica) -> ClusterReplica:
        """What the operator observes of ``rep``: fixed for the replica's life, so built once (frozen)."""
        seen = self._replica_views.get(rep.id)
        if seen is None or seen[0] is not rep:
            seen = self._replica_views[rep.id] = (rep, ClusterReplica(rep.id, rep.api.name, self.control_request(rep),
                                                                      rep.node_id))  # fmt: skip
        return seen[1]

    def control_request(self, rep: SimReplica) -> ReplicaRequest:
        req = self._requests.get(rep.api.index)
        if req is None:
            req = self._requests[rep.api.index] = request_of(rep.api.config.compute)
        return req

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        sc = self.sc
        dt = sc.control_interval
        arr = self.arrivals
        ticks = math.ceil(sc.duration / dt)
        bounds = np.searchsorted(arr.times_s, np.arange(ticks + 1) * dt, side="left")
        zs = np.random.default_rng(sc.seed + 2).standard_normal(len(arr))
        next_line = 0.0
        for k in range(ticks):
            now = k * dt
            for node in list(self.nodes.values()):
                if node.state == "launching" and node.ready_at_s <= now:
                    node.state, node.since_s = "ready", now
                if node.ends_at_s is not None and node.ends_at_s <= now:
                    self._end_node(node.id, now)
            self._spot(now, dt)
            still = []
            for due, rep in self.starting:
                if rep.dead:
                    continue
                if due <= now:
                    self.dp.add_ready(rep, now)
                else:
                    still.append((due, rep))
            self.starting = still
            self.dp.expire_held(now)
            if k == 0 and sc.warm_start:
                act = self._warm_start(now)
            else:
                act = self.control.tick(now, self._observe(now))
                self._apply(act, now)
            if now >= next_line:
                self._timeline(now, act.desired)
                next_line += TIMELINE_STEP_S
                if self.progress is not None:
                    self.progress(now / sc.duration)
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            self.dp.advance(arr.times_s[lo:hi].tolist(), arr.api[lo:hi].tolist(), arr.model[lo:hi].tolist(),
                            zs[lo:hi].tolist(), now + dt)  # fmt: skip
            if self.recent:
                self._see_models(lo, hi, now + dt)
        end = ticks * dt
        close = getattr(self.control, "close", None)
        if close is not None:
            close()
        for rep in list(self.replicas.values()):
            self._replica_gone(rep, end)
        for node_id in list(self.nodes):
            self._end_node(node_id, end)
        for api in self.apis:  # what is still queued or held at the end was not served
            api.stats.timed_out += self.dp.in_flight[api.index]
        return self.result

    def _warm_start(self, now_s: float) -> Actions:
        """Warm start: control ticks at time 0 with no launch delay and no cold start, until nothing changes
        (the initial replicas and their nodes are up before the first request). The gateway's count of recent
        models (``models.keep_warm``) starts as if the window before time 0 asked for the models that the
        window after it does: a warm platform has seen its traffic before."""
        for i, recent in self.recent.items():
            self._see_models_of(i, 0, int(np.searchsorted(self.arrivals.times_s, now_s + recent.window_s)), now_s)
        act = Actions()
        for _ in range(WARM_START_PASSES):
            act = self.control.tick(now_s, self._observe(now_s, warm=True))
            self._apply(act, now_s, warm=True)
            if not (act.start or act.launch or act.stop):
                break
        return act

    def _apply(self, act: Actions, now_s: float, warm: bool = False) -> None:
        for node_id in act.cordon:
            if node_id in self.nodes:
                self.nodes[node_id].state, self.nodes[node_id].since_s = "cordoned", now_s
        for node_id in act.uncordon:
            if node_id in self.nodes and self.nodes[node_id].state == "cordoned":
                self.nodes[node_id].state, self.nodes[node_id].since_s = "ready", now_s
        for rid in act.stop:
            rep = self.replicas.get(rid)
            if rep is not None:
                if not rep.ready:
                    rep.dead = True
                    self._replica_gone(rep, now_s)
                else:
                    self.dp.drain(rep, now_s)
        for a in act.start:
            if a.node_id not in self.nodes:
                continue
            api = self.api_by_name[a.api]
            rep = SimReplica(a.replica_id, api, a.node_id, now_s)
            self.replicas[rep.id] = rep
            if warm:
                self.dp.add_ready(rep, now_s)
            else:
                self.starting.append((now_s + api.cold_start_s, rep))
        for pool, node_id in act.launch:
            self._launch(pool, node_id, now_s, warm)
        for node_id in act.release:
            self._end_node(node_id, now_s)

    def _timeline(self, now_s: float, desired: dict[str, int]) -> None:
        by_pool = {p: 0 for p in self.pools}
        for n in self.nodes.values():
            by_pool[n.spec.pool] += 1
        ready = sum(1 for r in self.replicas.values() if r.ready and not r.draining)
        rate = float(np.searchsorted(self.arrivals.times_s, now_s + TIMELINE_STEP_S)
                     - np.searchsorted(self.arrivals.times_s, now_s)) / TIMELINE_STEP_S  # fmt: skip
        self.result.timeline.append({"t_s": now_s, "rate": rate, "replicas": ready,
                                     "desired": sum(desired.values()), "nodes": by_pool})  # fmt: skip
