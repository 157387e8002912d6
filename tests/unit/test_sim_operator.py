"""The simulator runs the operator's own reconcile steps: one implementation of every decision.

A policy changed under test changes the simulator's outcome (so the simulator holds no copy of it), the
operator's node launches and replica starts reach the simulated world, and a warm start opens with the
initial replicas up.
"""

from __future__ import annotations

from typing import Any

import pytest

from thrifty.config.scenario import ScenarioConfig, parse_scenario_text
from thrifty.policy.autoscaling import ScalingDecision
from thrifty.sim.control import OperatorControlPlane
from thrifty.sim.report import summarize
from thrifty.sim.run import Simulation
from thrifty.sim.traffic import generate

SCENARIO = """
name: t
duration: 10m
seed: 5
warm_start: WARM
cluster: {provider: simulated, launch_delay: 30s, node_idle_timeout: 1m,
          node_pools: [{name: cpu, instance_type: m5.large, spot: true, max_nodes: 10}]}
apis: [{name: a, compute: {cpu: 0.5}, serving: {max_concurrency: 1, max_queue_length: 8},
        autoscaling: {min_replicas: 1, max_replicas: 6}}]
service: {a: {time: {p50: 50ms}, cold_start: 10s}}
traffic: {rate: 4}
slo: {latency: 1s}
"""


def scenario(warm: bool = True) -> ScenarioConfig:
    return parse_scenario_text(SCENARIO.replace("WARM", "true" if warm else "false"), "s.yaml")


def run(sc: ScenarioConfig) -> dict[str, Any]:
    return summarize(sc, Simulation(sc, generate(sc), OperatorControlPlane(sc), "thrifty").run())


def test_a_policy_changed_under_test_changes_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = scenario()
    base = run(sc)
    import thrifty.control.scaling as scaling

    real = scaling.decide  # type: ignore[attr-defined]

    def always_max(cfg: Any, target: Any, samples: Any, current: int, state: Any, now_s: float) -> ScalingDecision:
        d = real(cfg, target, samples, current, state, now_s)
        return ScalingDecision(cfg.max_replicas, d.state, {**d.reason, "summary": "test: always max"})

    monkeypatch.setattr(scaling, "decide", always_max)
    changed = run(sc)
    assert sum(changed["replica_hours"].values()) > 3 * sum(base["replica_hours"].values())
    assert changed["total_dollars"] > base["total_dollars"]


def test_provisioning_policy_decides_the_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = scenario()
    import thrifty.control.provisioning_step as step

    real = step.decide  # type: ignore[attr-defined]
    calls = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "decide", counted)
    out = run(sc)
    assert calls and out["node_hours"]["cpu"] > 0


def test_warm_start_opens_with_the_initial_replica_up() -> None:
    warm = run(scenario(True))
    cold = run(scenario(False))
    assert warm["timed_out"] + warm["rejected_503"] == 0
    assert warm["slo_attainment_percent"] > cold["slo_attainment_percent"]


def test_same_seed_same_result() -> None:
    sc = scenario()
    assert run(sc) == run(sc)


def test_same_seed_same_result_with_model_routing() -> None:
    # Model routing hashes replica ids, so the operator's ids must come from the scenario's seed too.
    models = "models: {source: 's3://m/', cache_size: 2}"
    text = (
        SCENARIO.replace("WARM", "true")
        .replace("autoscaling: {min_replicas: 1, max_replicas: 6}}]",
                 f"autoscaling: {{min_replicas: 3, max_replicas: 6}},\n        {models}}}]")
        .replace("cold_start: 10s}}", "cold_start: 10s, models: {count: 20, size: 10Mi, download: 1s, load: 200ms}}}")
    )  # fmt: skip
    sc = parse_scenario_text(text, "s.yaml")
    first, second = run(sc), run(sc)
    assert first["cache_hit_ratio"] is not None and 0 < first["cache_hit_ratio"] < 1
    assert first == second


def test_keep_warm_runs_through_the_operator_and_buys_cache_hits() -> None:
    # 20 models, 2 cached per replica, keep_warm 2m wants ~15 replicas (capped at 6): the
    # fleet sits at its maximum instead of following the load.
    def multi(keep_warm: str) -> ScenarioConfig:
        models = f"models: {{source: 's3://m/', cache_size: 2, keep_warm: {keep_warm}}}"
        text = (
            SCENARIO.replace("WARM", "true")
            .replace("autoscaling: {min_replicas: 1, max_replicas: 6}}]",
                     f"autoscaling: {{min_replicas: 1, max_replicas: 6}},\n        {models}}}]")
            .replace("cold_start: 10s}}",
                     "cold_start: 10s, models: {count: 20, size: 10Mi, download: 1s, load: 200ms}}}")
        )  # fmt: skip
        return parse_scenario_text(text, "s.yaml")

    off, on = run(multi("0s")), run(multi("2m"))
    assert sum(on["replica_hours"].values()) > 1.2 * sum(off["replica_hours"].values())
    assert on["cache_hit_ratio"] > off["cache_hit_ratio"]
    # A warm start has seen the traffic before: the floor's replicas are up before the first request.
    sc = multi("2m")
    result = Simulation(sc, generate(sc), OperatorControlPlane(sc), "thrifty").run()
    assert result.timeline[0]["replicas"] == 6
