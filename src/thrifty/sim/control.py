"""The seam between the simulator and the control plane: what a control tick sees and what it asks for.

``ControlPlane.tick(now, observation) -> Actions`` is called once per ``control_interval`` of virtual time.
The simulated world (``thrifty.sim.run``: nodes, replicas, the data plane) builds the observation and
carries out the actions.

:class:`OperatorControlPlane` is the only control plane: it builds the real :class:`~thrifty.control
.operator.Operator` with its cluster steps on the virtual clock, with the in-package fakes as its world
(``FakeEngine``, ``FakeGateway``, ``FakeCloud``), deploys the scenario's APIs through ``Operator.deploy``,
and at each tick feeds the fakes from the observation (in-flight counts as the gateway's stats, replicas
the simulated world lost as engine exits, spot notices as the cloud's preemptions), runs the operator's
own autoscaler tick and ``reconcile_once(now)``, and turns what the fakes recorded (replicas started and
stopped, nodes launched and terminated, nodes cordoned) into :class:`Actions`. Autoscaling, rollout,
placement, provisioning, consolidation and (once the operator wires it) spot handling are therefore the
production code paths; nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from thrifty.clouds.fake import FakeCloud
from thrifty.config.scenario import ScenarioConfig
from thrifty.control.cluster import Cluster
from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.engines.fake import FakeEngine
from thrifty.policy import placement
from thrifty.policy.cluster_types import ClusterReplica, NodeView
from thrifty.project_archive import pack

T = TypeVar("T")

PREDICTOR = "class Predictor:\n    def predict(self, payload):\n        return None\n"


@dataclass(frozen=True)
class Observation:
    """What a control tick reads: the in-flight sample per API and the cluster as the engine and cloud see it."""

    in_flight: dict[str, float]  # queued + executing + held at the gateway, per API, at this tick
    nodes: tuple[NodeView, ...]
    replicas: tuple[ClusterReplica, ...]  # started replicas with their nodes (draining ones excluded)
    noticed: tuple[tuple[str, float], ...] = ()  # (node, notice seconds): spot notices since the last tick
    warm: bool = False  # warm start: launches and cold starts take no time at this tick
    busy: dict[str, float] = field(default_factory=dict)  # share of execution slots busy per API (HPA baseline)
    # The integral of in_flight over time per API, as the real gateway reports it: the operator's autoscaler
    # turns two of them into the exact average over the tick (a bare sample at low load is mostly 0 or 2,
    # which sends the panic window up for nothing).
    in_flight_seconds: dict[str, float] = field(default_factory=dict)
    # models.keep_warm: distinct models asked for within the API's window, as the real gateway counts them.
    models_recent: dict[str, int] = field(default_factory=dict)


@dataclass
class Actions:
    """What a control tick asks the engine and the cloud to do."""

    start: list[placement.Assignment] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)  # replica ids: drain, then stop
    launch: list[tuple[str, str]] = field(default_factory=list)  # (pool, node id)
    release: list[str] = field(default_factory=list)  # node ids
    cordon: list[str] = field(default_factory=list)
    uncordon: list[str] = field(default_factory=list)
    desired: dict[str, int] = field(default_factory=dict)  # replicas per API after this tick (for the report)


class ControlPlane(Protocol):
    def tick(self, now_s: float, observation: Observation) -> Actions: ...


class ReplicaScaler(Protocol):
    def __call__(self, api: str, current: int, obs: Observation, now_s: float) -> int: ...


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the fakes do no I/O) without an event loop: one send."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("an operator step waited on real I/O inside the simulator")


class OperatorControlPlane:
    """The operator's own reconcile steps on the virtual clock (see the module docstring)."""

    def __init__(self, scenario: ScenarioConfig, workdir: Path | None = None,
                 scaler: ReplicaScaler | None = None) -> None:  # fmt: skip
        """``scaler``: another autoscaler in place of the operator's (the HPA baseline: the operator has no
        setting that swaps its autoscaling algorithm); it sets each API's requested count as
        ``Operator.autoscale`` does."""
        self.scenario = scenario
        self.scaler = scaler
        self._tmp = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="thrifty-sim-")) if workdir is None else workdir
        self.clock = VirtualClock()
        home = Home(self.workdir / "home")
        home.ensure()
        self.store = Store(Path(":memory:"))
        self.engine = FakeEngine(self.clock, ready_after_s=0.0)
        self.engine.ready_after_by_api = {n: float(s.cold_start) for n, s in scenario.service.items()}
        self.gateway = FakeGateway()
        self.launch_delay_s = scenario.cluster.launch_delay_s
        self.cloud = FakeCloud(self.clock, launch_delay_s=self.launch_delay_s)
        self.cluster = Cluster(scenario.cluster, self.cloud, self.store, self.clock)
        # Replica ids from the scenario's seed: model routing hashes them, so the same seed gives the same run.
        ids = random.Random(f"replica-ids-{scenario.seed}")
        self.op = Operator(home, self.store, self.engine, self.gateway, clock=self.clock, mono=self.clock,
                           cluster=self.cluster, placing=self.engine,
                           ids=lambda: f"{ids.getrandbits(24):06x}")  # fmt: skip
        self._started = 0
        self._stopped = 0
        self._launched = 0
        self._terminated = 0
        self._states: dict[str, str] = {}
        self._deploy()

    def _deploy(self) -> None:
        project = self.workdir / "project"
        project.mkdir(parents=True, exist_ok=True)
        apis = [a.model_dump(mode="json", by_alias=True, exclude_defaults=True) for a in self.scenario.apis]
        for a in self.scenario.apis:
            (project / a.predictor.path).parent.mkdir(parents=True, exist_ok=True)
            (project / a.predictor.path).write_text(PREDICTOR, encoding="utf-8")
        (project / "thrifty.yaml").write_text(yaml.safe_dump({"apis": apis}, sort_keys=False), encoding="utf-8")
        asyncio.run(self.op.deploy(pack(project)))

    def close(self) -> None:
        self.store.close()
        if self._tmp:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def tick(self, now_s: float, obs: Observation) -> Actions:
        self.clock.now = now_s
        self.engine.ready_after_by_api = (
            dict.fromkeys(self.engine.ready_after_by_api, 0.0) if obs.warm
            else {n: float(s.cold_start) for n, s in self.scenario.service.items()}
        )  # fmt: skip
        self.cloud.launch_delay_s = 0.0 if obs.warm else self.launch_delay_s
        # The world -> the fakes: the gateway's in-flight counts, replicas lost with their node, spot notices.
        alive = {r.id for r in obs.replicas}
        for rid in self.engine.running():
            if rid not in alive:
                self.engine.crash(rid, 137, {"message": "the replica's node went away"})
        for node_id, notice_s in obs.noticed:
            drive(self.cloud.preempt(node_id, notice_s))
        apis: dict[str, dict[str, Any]] = {}
        for name, value in obs.in_flight.items():
            api = apis[name] = {"in_flight": value}
            if name in obs.in_flight_seconds:
                api["in_flight_seconds"] = obs.in_flight_seconds[name]
            if name in obs.models_recent:
                api["models_recent"] = obs.models_recent[name]
        stats = {"apis": apis}
        self.gateway.next_stats = stats
        if self.scaler is None:
            self.op.autoscale(stats, self.gateway.generation)
        else:
            for name, rt in self.op.apis.items():
                rt.desired = self.scaler(name, rt.desired, obs, now_s)
        drive(self.op.reconcile_once(now_s))
        return self._recorded()

    def _recorded(self) -> Actions:
        """What the operator asked the fakes for since the last tick, as actions on the simulated world."""
        act = Actions(desired={name: rt.desired for name, rt in self.op.apis.items()})
        for launch in self.engine.started[self._started :]:
            rep = self.cluster.placed.get(launch.replica_id)
            if rep is not None and rep.node_id is not None:
                act.start.append(placement.Assignment(launch.replica_id, launch.api, rep.node_id, rep.gpu_indices))
        self._started = len(self.engine.started)
        act.stop.extend(self.engine.stopped[self._stopped :])
        self._stopped = len(self.engine.stopped)
        launched = self.cloud.launched[self._launched :]
        if launched:
            nodes = {n.id: n for n in self.cloud.nodes()}
            act.launch.extend((nodes[n].spec.pool, n) for n in launched)
        self._launched = len(self.cloud.launched)
        act.release.extend(self.cloud.terminated[self._terminated :])
        self._terminated = len(self.cloud.terminated)
        for node_id, tracked in self.cluster.nodes.nodes.items():
            before = self._states.get(node_id)
            if tracked.state != before:
                if tracked.state == "cordoned":
                    act.cordon.append(node_id)
                elif before == "cordoned" and tracked.state == "ready":
                    act.uncordon.append(node_id)
                self._states[node_id] = tracked.state
        for node_id in [n for n in self._states if n not in self.cluster.nodes.nodes]:
            del self._states[node_id]
        return act
