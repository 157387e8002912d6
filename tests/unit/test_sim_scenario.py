"""The scenario schema: shipped scenarios load; mistakes are located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.config.scenario import load_scenario, parse_scenario_text
from thrifty.errors import ConfigError

SCENARIOS = Path(__file__).resolve().parents[2] / "examples" / "scenarios"

BASE = """
name: t
duration: 10m
cluster: {provider: simulated, node_pools: [{name: cpu, instance_type: m5.large, spot: true, max_nodes: 5}]}
apis: [{name: a}]
service: {a: {time: {p50: 10ms, p99: 50ms}}}
slo: {latency: 1s}
"""


@pytest.mark.parametrize("name", ["gpu-1000-models", "translation", "single-api", "trace"])
def test_shipped_scenarios_load(name: str) -> None:
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    assert sc.name == name


def test_minimal_scenario_defaults() -> None:
    sc = parse_scenario_text(BASE, "s.yaml")
    assert sc.traffic.kind == "poisson"
    assert sc.api_shares() == {"a": 1.0}
    assert sc.slo.share == 99.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("bogus: 1\n", "unknown field"),
        ("traffic: {kind: trace}\n", "needs a trace file"),
        ("traffic: {cv: 2}\n", "cv applies to kind: gamma only"),
        ("spot: {nope: {rate: 1}}\n", "not in cluster.node_pools"),
    ],
)
def test_schema_errors_are_located(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_scenario_text(BASE + extra, "s.yaml")
    assert message in str(err.value)
    assert "s.yaml" in str(err.value)


def test_service_for_every_api_and_p99_above_p50() -> None:
    with pytest.raises(ConfigError, match="no entry for the APIs"):
        parse_scenario_text(BASE.replace("apis: [{name: a}]", "apis: [{name: a}, {name: b}]"), "s.yaml")
    with pytest.raises(ConfigError, match="below p50"):
        parse_scenario_text(BASE.replace("p99: 50ms", "p99: 5ms"), "s.yaml")


def test_multi_model_api_needs_a_model_set() -> None:
    text = BASE.replace("apis: [{name: a}]", 'apis: [{name: a, models: {source: "s3://b/", cache_size: 2}}]')
    with pytest.raises(ConfigError, match=r"service\.a\.models is required"):
        parse_scenario_text(text, "s.yaml")
