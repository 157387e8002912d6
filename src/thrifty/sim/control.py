"""The seam between the simulator and the control plane: what a control tick sees and what it asks for.

``ControlPlane.tick(now, observation) -> Actions`` is called once per ``control_interval`` of virtual time.
The simulated world (engine, cloud, gateway: ``thrifty.sim.run``) builds the observation and carries out
the actions. The operator's own reconcile steps, driven with the virtual clock and simulated engine,
gateway and cloud, are meant to sit behind this seam; until then :class:`PolicyControlPlane` calls the
same pure policies the operator's steps call (``policy.autoscaling.decide``, ``policy.placement.place``,
``policy.provisioning.decide``) so the simulator runs end to end. It holds no decision of its own beyond
bookkeeping (which replica ids exist, which to stop first) and the spot-notice drain, for which no pure
policy exists yet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from thrifty.config.scenario import ScenarioConfig
from thrifty.policy import autoscaling, placement, provisioning
from thrifty.policy.cluster_types import ClusterReplica, NodeView


@dataclass(frozen=True)
class Observation:
    """What a control tick reads: the in-flight sample per API and the cluster as the engine and cloud see it."""

    in_flight: dict[str, float]  # queued + executing + held at the gateway, per API, at this tick
    nodes: tuple[NodeView, ...]
    replicas: tuple[ClusterReplica, ...]  # started replicas with their nodes (draining ones excluded)
    noticed: tuple[str, ...] = ()  # nodes that got a spot interruption notice since the last tick


@dataclass
class Actions:
    """What a control tick asks the engine and the cloud to do."""

    start: list[placement.Assignment] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)  # replica ids: drain, then stop
    launch: list[tuple[str, int]] = field(default_factory=list)  # (pool, count)
    release: list[str] = field(default_factory=list)  # node ids
    cordon: list[str] = field(default_factory=list)
    uncordon: list[str] = field(default_factory=list)
    desired: dict[str, int] = field(default_factory=dict)  # replicas per API after this tick (for the report)


class ControlPlane(Protocol):
    def tick(self, now_s: float, observation: Observation) -> Actions: ...


class PolicyControlPlane:
    """The pure policies, called directly: a stand-in for the operator's reconcile steps.

    ``fixed_replicas`` (API -> count) skips the autoscaler for those APIs: static provisioning baselines.
    """

    def __init__(self, scenario: ScenarioConfig, fixed_replicas: dict[str, int] | None = None) -> None:
        self.scenario = scenario
        self.fixed = dict(fixed_replicas or {})
        self.prov_cfg = provisioning.ProvisioningConfig.from_cluster(scenario.cluster)
        self.prov_state = provisioning.ProvisioningState()
        self.requests = {a.name: placement.request_of(a.compute) for a in scenario.apis}
        self.states = {a.name: autoscaling.AutoscalerState() for a in scenario.apis}
        keep = {a.name: max(a.autoscaling.window, a.autoscaling.panic_window) for a in scenario.apis}
        self.keep_s = keep
        self.samples: dict[str, deque[tuple[float, float]]] = {a.name: deque() for a in scenario.apis}
        self.pending: dict[str, list[ClusterReplica]] = {a.name: [] for a in scenario.apis}
        self.count = {a.name: 0 for a in scenario.apis}
        self.last_desired = {a.name: self.fixed.get(a.name, a.autoscaling.initial_replicas) for a in scenario.apis}

    def _new(self, api: str) -> ClusterReplica:
        self.count[api] += 1
        return ClusterReplica(id=f"{api}-{self.count[api]}", api=api, request=self.requests[api])

    def tick(self, now_s: float, obs: Observation) -> Actions:
        act = Actions()
        started: dict[str, list[ClusterReplica]] = {a: [] for a in self.pending}
        for r in obs.replicas:
            started[r.api].append(r)
        # Spot notice (drain): replace first, then stop; the data plane lets in-flight work finish.
        noticed = set(obs.noticed)
        for api, reps in started.items():
            for r in [r for r in reps if r.node_id in noticed]:
                reps.remove(r)
                act.stop.append(r.id)
                self.pending[api].append(self._new(api))
        for a in self.scenario.apis:
            name = a.name
            samples = self.samples[name]
            samples.append((now_s, obs.in_flight.get(name, 0.0)))
            while samples and samples[0][0] <= now_s - self.keep_s[name]:
                samples.popleft()
            current = len(started[name]) + len(self.pending[name])
            if name in self.fixed:
                desired = self.fixed[name]
            else:
                d = autoscaling.decide(a.autoscaling, a.target_in_flight, samples, current, self.states[name], now_s)
                self.states[name] = d.state
                desired = d.desired
            act.desired[name] = desired
            while current < desired:
                self.pending[name].append(self._new(name))
                current += 1
            while current > desired and self.pending[name]:
                self.pending[name].pop()
                current -= 1
            while current > desired:  # newest first: the least likely to hold warm caches
                victim = started[name].pop()
                act.stop.append(victim.id)
                current -= 1
        everyone = [r for reps in started.values() for r in reps]
        waiting = [r for reps in self.pending.values() for r in reps]
        if waiting:
            placed = placement.place(obs.nodes, everyone + waiting)
            act.start.extend(placed.assignments)
            done = {x.replica_id for x in placed.assignments}
            for api in self.pending:
                self.pending[api] = [r for r in self.pending[api] if r.id not in done]
            for x in placed.assignments:
                everyone.append(ClusterReplica(x.replica_id, x.api, self.requests[x.api], x.node_id, x.gpu_indices))
        left = [r for reps in self.pending.values() for r in reps]
        prov = provisioning.decide(self.prov_cfg, obs.nodes, everyone + left, self.prov_state, now_s)
        self.prov_state = prov.state
        act.launch.extend((x.pool, x.count) for x in prov.launch)
        act.release.extend(x.node_id for x in prov.release)
        act.cordon.extend(prov.cordon)
        act.uncordon.extend(prov.uncordon)
        for mv in prov.moves:  # consolidation: the replacement starts now, the old replica drains
            new = self._new(mv.api)
            act.start.append(placement.Assignment(new.id, mv.api, mv.to_node, mv.gpu_indices))
            act.stop.append(mv.replica_id)
        return act
