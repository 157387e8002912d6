"""The strategies a simulation compares, each a scenario transform plus a control plane, and the sweep of each
strategy's main knob for comparisons at equal service.

Every strategy runs the operator's own reconcile steps (``OperatorControlPlane``); what differs is the
configuration the operator is given, as a user would set it:

- ``naive``: on-demand nodes only, static peak provisioning (a fixed replica count all day: the knob), one
  replica per model of a multi-model API, a whole GPU each, no consolidation. Any strategy whose fleet is
  static (on-demand, every API's replica count fixed) ticks every 10 s (or the scenario's interval if longer):
  it has nothing to decide in between.
- ``hpa-cpu``: like thrifty's first lever, but scaled by a CPU-utilisation autoscaler at a 70% target
  (``policy.hpa``, a simulator-only baseline that replaces the operator's autoscaler; knob: min replicas).
- ``cortex``: Cortex's autoscaler defaults through the real autoscaling policy (no panic mode, 60 s up and
  300 s down stabilization, 1.5x/0.75x steps), spot with notices ignored, a per-replica LRU cache without
  model-aware routing and without a ``models.keep_warm`` floor, whole GPUs, no consolidation (knob: target
  in-flight).
- thrifty with each lever switched on in turn (knob: target in-flight): ``thrifty-autoscaling`` (queue
  autoscaling; on-demand, one replica per model, whole GPUs, no consolidation) -> ``thrifty+spot`` (spot,
  notices drained) -> ``thrifty+multi-model`` (model cache, model-aware routing, ``keep_warm`` as configured)
  -> ``thrifty+gpu-sharing`` (the configured GPU fractions) -> ``thrifty`` (+ consolidation: everything as configured).
  Where an API sets ``models.keep_warm``, the multi-model levers' sweep also runs each target with it off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thrifty.config.scenario import ScenarioConfig
from thrifty.config.schema import ApiConfig
from thrifty.policy import hpa
from thrifty.policy.autoscaling import CORTEX_DEFAULTS
from thrifty.sim.control import ControlPlane, Observation, OperatorControlPlane

CORTEX_AUTOSCALING: dict[str, Any] = dict(CORTEX_DEFAULTS)  # Cortex's realtime autoscaler defaults
TARGET_FACTORS = (0.25, 0.5, 1.0, 2.0)  # sweep: x the API's configured target in-flight
NAIVE_FACTORS = (0.25, 0.5, 1.0)  # sweep: x max_replicas, for single-model APIs
HPA_MIN_FACTORS = (0.0, 0.25, 0.5)
# A static fleet has nothing to decide between ticks (on-demand, min = max replicas for every API); ticking it
# every 10 s instead of every second makes a 1,000-replica run ~10x cheaper to simulate. Its only effect: a
# replica or node that is due becomes ready at the next tick, up to 10 s later (none is due after a warm start).
STATIC_CONTROL_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Setup:
    """One strategy at one knob value: the scenario the operator is given and how the run is driven."""

    scenario: ScenarioConfig
    control: Callable[[ScenarioConfig], ControlPlane]
    plain_model_cache: bool = False


@dataclass(frozen=True)
class Knob:
    """One setting of a strategy's main knob: a factor, and (thrifty's multi-model levers) whether the APIs'
    ``models.keep_warm`` stays as configured or is switched off — the cheaper, worse-served side of the same
    platform, which the equal-service comparison may pick."""

    factor: float
    keep_warm: bool = True

    @property
    def label(self) -> str:
        return f"{self.factor:g}" if self.keep_warm else f"{self.factor:g}, keep_warm off"


@dataclass(frozen=True)
class Strategy:
    name: str
    knob: str
    values: Callable[[ScenarioConfig], tuple[Knob, ...]]
    setup: Callable[[ScenarioConfig, Knob], Setup]

    def knobs(self, sc: ScenarioConfig) -> tuple[Knob, ...]:
        """The settings to sweep: ``values``, or the configured one alone where the strategy fixes every API's
        replica count (min = max, e.g. one replica per model of a multi-model API): the knob then changes
        nothing, and each run of a 1,000-replica fleet is the dearest to simulate."""
        values = self.values(sc)
        if len(values) > 1:
            fixed = self.setup(sc, Knob(1.0)).scenario
            if all(a.autoscaling.min_replicas >= a.autoscaling.max_replicas for a in fixed.apis):
                return (Knob(1.0),)
        return values


# -- scenario transforms (what a user would configure) ---------------------------------------------------


def _apis(sc: ScenarioConfig, f: Callable[[ApiConfig], dict[str, Any]]) -> ScenarioConfig:
    apis = [a.model_copy(update=f(a)) for a in sc.apis]
    return sc.model_copy(update={"apis": apis})


def _autoscaling(sc: ScenarioConfig, f: Callable[[ApiConfig], dict[str, Any]]) -> ScenarioConfig:
    return _apis(sc, lambda a: {"autoscaling": a.autoscaling.model_copy(update=f(a))})


def on_demand(sc: ScenarioConfig) -> ScenarioConfig:
    pools = [p for p in sc.cluster.node_pools if not p.spot]
    if not pools:
        pools = [p.model_copy(update={"spot": False, "price_spot": None, "spot_discount": None})
                 for p in sc.cluster.node_pools]  # fmt: skip
    return sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"node_pools": pools}), "spot": {}})


def whole_gpus(sc: ScenarioConfig) -> ScenarioConfig:
    return _apis(sc, lambda a: {"compute": a.compute.model_copy(update={"gpu": math.ceil(a.compute.gpu)})})


def no_consolidation(sc: ScenarioConfig) -> ScenarioConfig:
    off = sc.cluster.consolidation.model_copy(update={"enabled": False})
    return sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"consolidation": off})})


def ignore_notices(sc: ScenarioConfig) -> ScenarioConfig:
    spot = sc.cluster.spot.model_copy(update={"notice_handling": "ignore"})
    return sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"spot": spot})})


def no_keep_warm(sc: ScenarioConfig) -> ScenarioConfig:
    """No ``models.keep_warm`` floor (Cortex sizes a multi-model API for its load only)."""
    return _apis(sc, lambda a: {"models": a.models.model_copy(update={"keep_warm": 0.0})} if a.models else {})


def model_count(sc: ScenarioConfig, api: ApiConfig) -> int:
    models = sc.service[api.name].models
    return models.count if models is not None else 0


def one_replica_per_model(sc: ScenarioConfig) -> ScenarioConfig:
    """No multi-model serving: every model has a replica of its own (each keeps its one model warm)."""

    def update(a: ApiConfig) -> dict[str, Any]:
        n = min(model_count(sc, a), 1000)
        if n == 0 or a.models is None:
            return {}
        low = max(a.autoscaling.min_replicas, n)
        top = max(low, a.autoscaling.max_replicas)
        auto = a.autoscaling.model_copy(update={"min_replicas": low, "max_replicas": top})
        cache = a.models.model_copy(update={"cache_size": n, "disk_cache_size": n, "cache_bytes": None,
                                            "disk_cache_bytes": None})  # fmt: skip
        return {"autoscaling": auto, "models": cache}

    return _apis(sc, update)


def roomy_pools(sc: ScenarioConfig, replicas: int) -> ScenarioConfig:
    """Pools large enough for a fixed count of whole-GPU replicas (a naive fleet is bought, not capped)."""
    pools = [p.model_copy(update={"max_nodes": max(p.max_nodes, min(1000, replicas))}) for p in sc.cluster.node_pools]
    return sc.model_copy(update={"cluster": sc.cluster.model_copy(update={"node_pools": pools})})


def with_target(sc: ScenarioConfig, factor: float) -> ScenarioConfig:
    return _autoscaling(sc, lambda a: {"target_in_flight": a.target_in_flight * factor})


# -- the strategies --------------------------------------------------------------------------------------


def _operator(sc: ScenarioConfig) -> ControlPlane:
    return OperatorControlPlane(sc)


def _naive_values(sc: ScenarioConfig) -> tuple[Knob, ...]:
    if any(model_count(sc, a) for a in sc.apis):
        return (Knob(1.0),)
    return tuple(Knob(f) for f in NAIVE_FACTORS)


def _naive(sc: ScenarioConfig, knob: Knob) -> Setup:
    factor = knob.factor

    def fixed(a: ApiConfig) -> dict[str, Any]:
        n = min(model_count(sc, a), 1000) or max(1, math.ceil(a.autoscaling.max_replicas * factor))
        return {"min_replicas": n, "max_replicas": n}

    s = no_consolidation(whole_gpus(on_demand(one_replica_per_model(sc))))
    s = _autoscaling(s, fixed)
    s = roomy_pools(s, sum(a.autoscaling.max_replicas for a in s.apis))
    return Setup(static_ticks(s), _operator)


def static_ticks(sc: ScenarioConfig) -> ScenarioConfig:
    """A static fleet (on-demand only, every API's replica count fixed) ticks every 10 s (see above)."""
    fixed = all(a.autoscaling.min_replicas >= a.autoscaling.max_replicas for a in sc.apis)
    if not fixed or any(p.spot for p in sc.cluster.node_pools):
        return sc
    return sc.model_copy(update={"control_interval": max(sc.control_interval, STATIC_CONTROL_INTERVAL_S)})


def _hpa(sc: ScenarioConfig, knob: Knob) -> Setup:
    factor = knob.factor
    s = no_consolidation(whole_gpus(on_demand(one_replica_per_model(sc))))
    s = roomy_pools(s, sum(a.autoscaling.max_replicas for a in s.apis))
    cfgs = {a.name: hpa.HpaConfig(max(a.autoscaling.min_replicas, math.ceil(a.autoscaling.max_replicas * factor)),
                                  a.autoscaling.max_replicas) for a in s.apis}  # fmt: skip

    def control(scenario: ScenarioConfig) -> ControlPlane:
        states = {name: hpa.HpaState() for name in cfgs}

        def scale(api: str, current: int, obs: Observation, now_s: float) -> int:
            desired, states[api] = hpa.decide(cfgs[api], obs.busy.get(api, 0.0), current, states[api], now_s)
            return desired

        return OperatorControlPlane(scenario, scaler=scale)

    return Setup(static_ticks(s), control)


def _cortex(sc: ScenarioConfig, knob: Knob) -> Setup:
    s = no_consolidation(whole_gpus(ignore_notices(no_keep_warm(sc))))
    s = with_target(_autoscaling(s, lambda a: CORTEX_AUTOSCALING), knob.factor)
    return Setup(s, _operator, plain_model_cache=True)


def _lever(level: int) -> Callable[[ScenarioConfig, Knob], Setup]:
    def setup(sc: ScenarioConfig, knob: Knob) -> Setup:
        s = with_target(sc, knob.factor)
        if not knob.keep_warm:
            s = no_keep_warm(s)
        if level < 1:
            s = on_demand(s)
        if level < 2:
            s = one_replica_per_model(s)
        if level < 3:
            s = whole_gpus(s)
        if level < 4:
            s = no_consolidation(s)
        if level < 3:
            s = roomy_pools(s, sum(a.autoscaling.max_replicas for a in s.apis))
        return Setup(static_ticks(s), _operator)

    return setup


def _targets(sc: ScenarioConfig) -> tuple[Knob, ...]:
    return tuple(Knob(f) for f in TARGET_FACTORS)


def _multi_model_targets(sc: ScenarioConfig) -> tuple[Knob, ...]:
    """Target factors, and, where an API keeps models warm, the same factors with keep_warm off."""
    warm = any(a.models is not None and a.models.keep_warm for a in sc.apis)
    return _targets(sc) + (tuple(Knob(f, keep_warm=False) for f in TARGET_FACTORS) if warm else ())


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("naive", "fixed replicas (x max_replicas; one per model)", _naive_values, _naive),
        Strategy("hpa-cpu", "min replicas (x max_replicas)", lambda sc: tuple(Knob(f) for f in HPA_MIN_FACTORS), _hpa),
        Strategy("cortex", "target in-flight (x configured)", _targets, _cortex),
        Strategy("thrifty-autoscaling", "target in-flight (x configured)", _targets, _lever(0)),
        Strategy("thrifty+spot", "target in-flight (x configured)", _targets, _lever(1)),
        Strategy("thrifty+multi-model", "target in-flight (x configured)", _multi_model_targets, _lever(2)),
        Strategy("thrifty+gpu-sharing", "target in-flight (x configured)", _multi_model_targets, _lever(3)),
        Strategy("thrifty", "target in-flight (x configured)", _multi_model_targets, _lever(4)),
    )
}
