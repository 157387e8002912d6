"""Strategies: scenario transforms as a user would configure them, and one report comparing them all."""

from __future__ import annotations

import json
from pathlib import Path

from thrifty.config.scenario import parse_scenario_text
from thrifty.sim.__main__ import simulate
from thrifty.sim.report import targets
from thrifty.sim.strategies import STRATEGIES, Knob

TEXT = """
name: t
duration: 5m
seed: 2
warm_start: true
cluster: {provider: simulated, launch_delay: 30s,
          node_pools: [{name: gpu, instance_type: g4dn.xlarge, spot: true, max_nodes: 10},
                       {name: gpu-od, instance_type: g4dn.xlarge, max_nodes: 10, priority: 1}]}
apis: [{name: m, compute: {cpu: 1, gpu: 0.25}, serving: {max_concurrency: 2, max_queue_length: 16},
        autoscaling: {min_replicas: 1, max_replicas: 8},
        models: {source: "s3://m/", cache_size: 4}}]
service: {m: {time: {p50: 20ms}, cold_start: 10s, models: {count: 12, size: 10Mi, download: 1s, load: 0.2s}}}
traffic: {rate: 5}
spot: {gpu: {rate: 0.5, notice: 2m}}
slo: {latency: 2s, share: 90}
"""


def test_transforms() -> None:
    sc = parse_scenario_text(TEXT, "s.yaml")
    naive = STRATEGIES["naive"].setup(sc, Knob(1.0)).scenario
    assert [p.spot for p in naive.cluster.node_pools] == [False]
    assert naive.apis[0].compute.gpu == 1 and naive.apis[0].autoscaling.min_replicas == 12
    cortex = STRATEGIES["cortex"].setup(sc, Knob(1.0))
    assert cortex.plain_model_cache and cortex.scenario.cluster.spot.notice_handling == "ignore"
    thrifty = STRATEGIES["thrifty"].setup(sc, Knob(1.0)).scenario
    assert thrifty.apis[0].compute.gpu == 0.25 and thrifty.cluster.consolidation.enabled


def test_one_report_compares_every_strategy(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(TEXT)
    rows = simulate(tmp_path / "s.yaml", tmp_path / "out", quiet=True, sweep=False)
    assert [r["strategy"] for r in rows] == list(STRATEGIES)
    by = {r["strategy"]: r for r in rows}
    assert by["naive"]["total_dollars"] > by["thrifty"]["total_dollars"]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["targets"] and "Targets" in (tmp_path / "out" / "report.md").read_text()


def test_cli_validates_a_scenario_and_simulates(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from thrifty.cli.main import cli

    (tmp_path / "s.yaml").write_text(TEXT)
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", str(tmp_path / "s.yaml")])
    assert result.exit_code == 0 and "valid scenario 't'" in result.output
    result = runner.invoke(cli, ["simulate", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
                                 "--strategy", "thrifty", "--no-sweep", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| thrifty |" in result.output


def test_thrifty_against_cortex_is_judged_at_equal_service() -> None:
    sc = parse_scenario_text(TEXT, "s.yaml")
    cortex = {"strategy": "cortex", "total_dollars": 0.33, "slo_attainment_percent": 94.0}
    best = {"strategy": "thrifty", "total_dollars": 0.57, "slo_attainment_percent": 97.2}  # best attainment
    cheaper = {"total_dollars": 0.30, "slo_attainment_percent": 96.8}  # another setting of its knob
    worse = {"total_dollars": 0.10, "slo_attainment_percent": 90.0}  # cheaper, but below cortex's service
    (check,) = targets(sc, [cortex, best], {"thrifty": [worse, cheaper]})
    assert check["met"] is True and "$0.30 vs $0.33" in check["figures"]
    (check,) = targets(sc, [cortex, best], {"thrifty": [worse]})
    assert check["met"] is False


def test_runs_in_worker_processes_give_the_same_report(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(TEXT)
    strategies = ("cortex", "thrifty")
    one = simulate(tmp_path / "s.yaml", tmp_path / "one", strategies, quiet=True)
    shown: list[str] = []
    two = simulate(tmp_path / "s.yaml", tmp_path / "two", strategies, sweep=True, jobs=2,
                   progress=lambda label, share: shown.append(label))  # fmt: skip
    assert one == two
    assert len(shown) == 8 and shown[-1].startswith("[8/8] ")  # one line per finished run
    sweeps = [json.loads((tmp_path / d / "report.json").read_text())["sweeps"] for d in ("one", "two")]
    for s in sweeps:
        for rows in s.values():
            for row in rows:
                row.pop("wall_s")
    assert sweeps[0] == sweeps[1]


def test_keep_warm_is_swept_on_and_off_for_thrifty_and_off_for_cortex() -> None:
    sc = parse_scenario_text(TEXT.replace("cache_size: 4}", "cache_size: 4, keep_warm: 10m}"), "s.yaml")
    knobs = STRATEGIES["thrifty"].values(sc)
    assert [k.label for k in knobs][-2:] == ["1, keep_warm off", "2, keep_warm off"] and len(knobs) == 8
    assert STRATEGIES["thrifty"].setup(sc, Knob(1.0)).scenario.apis[0].models.keep_warm == 600  # type: ignore[union-attr]
    off = STRATEGIES["thrifty"].setup(sc, Knob(1.0, keep_warm=False)).scenario
    assert off.apis[0].models.keep_warm == 0  # type: ignore[union-attr]
    assert len(STRATEGIES["cortex"].values(sc)) == 4
    assert STRATEGIES["cortex"].setup(sc, Knob(1.0)).scenario.apis[0].models.keep_warm == 0  # type: ignore[union-attr]
    assert len(STRATEGIES["thrifty"].values(parse_scenario_text(TEXT, "s.yaml"))) == 4  # nothing kept warm


def test_a_strategy_that_fixes_every_replica_count_is_not_swept() -> None:
    sc = parse_scenario_text(TEXT, "s.yaml")  # one API, 12 models: one replica per model is 12, min = max
    for name in ("hpa-cpu", "thrifty-autoscaling", "thrifty+spot"):
        assert STRATEGIES[name].knobs(sc) == (Knob(1.0),), name
    assert len(STRATEGIES["thrifty"].knobs(sc)) == 4 and len(STRATEGIES["cortex"].knobs(sc)) == 4


def test_a_static_on_demand_fleet_ticks_every_10_s() -> None:
    sc = parse_scenario_text(TEXT, "s.yaml")
    for name in ("naive", "hpa-cpu", "thrifty-autoscaling"):  # on-demand, one replica per model: fixed
        assert STRATEGIES[name].setup(sc, Knob(1.0)).scenario.control_interval == 10.0, name
    for name in ("thrifty+spot", "thrifty", "cortex"):  # spot notices or an autoscaled fleet: every second
        assert STRATEGIES[name].setup(sc, Knob(1.0)).scenario.control_interval == 1.0, name
