"""The data-plane model: 503 over the queue limit, batching, cold starts, eviction through the real policy."""

from __future__ import annotations

from typing import Any

import pytest

from thrifty.config.scenario import ScenarioConfig, parse_scenario_text
from thrifty.policy import eviction
from thrifty.sim.control import OperatorControlPlane
from thrifty.sim.dataplane import ApiModel, DataPlane, SimReplica
from thrifty.sim.report import summarize
from thrifty.sim.run import Simulation
from thrifty.sim.traffic import generate

BASE = """
name: t
duration: 10m
seed: 3
cluster: {provider: simulated, launch_delay: 5s,
          node_pools: [{name: cpu, instance_type: m5.large, spot: true, max_nodes: 10}]}
apis: [{name: a, compute: {cpu: 0.5}, serving: {max_concurrency: 1, max_queue_length: 2}}]
service: {a: {time: {p50: 100ms}, cold_start: 10s}}
traffic: {rate: 5}
slo: {latency: 1s}
"""


def scenario(text: str = BASE) -> ScenarioConfig:
    return parse_scenario_text(text, "s.yaml")


def one_replica(sc: ScenarioConfig) -> tuple[DataPlane, ApiModel, SimReplica]:
    api = ApiModel(0, sc.apis[0], sc.service["a"], ())
    dp = DataPlane([api], seed=1)
    rep = SimReplica("a-1", api, "n-1", 0.0)
    dp.add_ready(rep, 0.0)
    return dp, api, rep


def test_queue_over_its_limit_gets_503() -> None:
    dp, api, _ = one_replica(scenario())
    # 5 at once: 1 runs, 2 wait, 2 are refused; every call takes exactly 100 ms.
    dp.advance([0.0] * 5, [0] * 5, [-1] * 5, [0.0] * 5, 10.0)
    assert api.stats.rejected == 2
    assert api.stats.served == 3
    assert sorted(round(x, 6) for x in api.stats.latencies_s) == [0.1, 0.2, 0.3]


def test_batching_takes_one_call_for_a_full_batch() -> None:
    text = BASE.replace(
        "serving: {max_concurrency: 1, max_queue_length: 2}",
        "serving: {max_concurrency: 1, max_queue_length: 8, batching: {max_batch_size: 4, batch_interval: 50ms}}",
    ).replace("time: {p50: 100ms}", "time: {p50: 100ms}, per_item: 10ms")
    dp, api, _ = one_replica(scenario(text))
    dp.advance([0.0, 0.0, 0.0, 0.0, 0.0], [0] * 5, [-1] * 5, [0.0] * 5, 10.0)
    lats = sorted(round(x, 6) for x in api.stats.latencies_s)
    # A full batch of 4 at once: 100 ms + 3 x 10 ms; the fifth waits for it, then fires alone at once.
    assert lats == [0.13, 0.13, 0.13, 0.13, 0.23]
    assert api.stats.busy_s == pytest.approx(0.23)


def test_requests_are_held_through_the_cold_start() -> None:
    sc = scenario()
    api = ApiModel(0, sc.apis[0], sc.service["a"], ())
    dp = DataPlane([api], seed=1)
    dp.advance([1.0], [0], [-1], [0.0], 5.0)
    assert dp.in_flight == [1] and api.stats.served == 0
    dp.add_ready(SimReplica("a-1", api, "n-1", 0.0), 5.0)
    dp.advance([], [], [], [], 10.0)
    assert list(api.stats.latencies_s) == [pytest.approx(4.1)]


def test_in_flight_seconds_is_the_integral_the_real_gateway_reports() -> None:
    # 3 queued at 0 on one slot of 100 ms: in flight 3 for 0.1 s, 2 for 0.1 s, 1 for 0.1 s = 0.6 request-seconds,
    # and one request held from 1.0 s (no routable replica after the drain) adds 1 x (2.0 - 1.0).
    dp, _api, rep = one_replica(scenario())
    dp.advance([0.0] * 3, [0] * 3, [-1] * 3, [0.0] * 3, 0.5)
    assert dp.in_flight_seconds(0, 0.5) == pytest.approx(0.6)
    dp.drain(rep, 0.5)
    dp.advance([1.0], [0], [-1], [0.0], 2.0)
    assert dp.in_flight == [1]
    assert dp.in_flight_seconds(0, 2.0) == pytest.approx(1.6)


def test_same_seed_same_result() -> None:
    sc = scenario()
    rows = []
    for _ in range(2):
        run = Simulation(sc, generate(sc), OperatorControlPlane(sc), "thrifty").run()
        row = summarize(sc, run)
        rows.append((row, list(run.apis[0].stats.latencies_s)))
    assert rows[0] == rows[1]
    assert rows[0][0]["requests"] > 0 and rows[0][0]["total_dollars"] > 0


MULTI = """
name: m
duration: 20m
seed: 5
cluster: {provider: simulated, launch_delay: 5s,
          node_pools: [{name: cpu, instance_type: m5.large, max_nodes: 4}]}
apis:
  - name: a
    compute: {cpu: 0.5}
    autoscaling: {min_replicas: 1, max_replicas: 1}
    models: {source: "s3://b/", cache_size: 4}
service: {a: {time: {p50: 20ms}, cold_start: 5s,
              models: {count: 40, size: 1Mi, download: 1s, load: 100ms, zipf: 1.2}}}
traffic: {rate: 4}
slo: {latency: 2s}
"""


def hit_ratio() -> Any:
    sc = scenario(MULTI)
    return summarize(sc, Simulation(sc, generate(sc), OperatorControlPlane(sc), "thrifty").run())["cache_hit_ratio"]


def test_eviction_goes_through_the_real_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    real = hit_ratio()
    assert 0 < real < 1
    plan = eviction.plan_eviction

    def most_frequent_first(
        entries: list[eviction.CacheEntry], budget: eviction.CacheBudget, incoming: int
    ) -> eviction.EvictionDecision:
        # The opposite rule: evict the most popular model. The simulator must follow it.
        flipped = [eviction.CacheEntry(e.key, e.size_bytes, e.last_used, e.pins, -e.frequency) for e in entries]
        return plan(flipped, budget, incoming)

    monkeypatch.setattr(eviction, "plan_eviction", most_frequent_first)
    worse = hit_ratio()
    assert worse < real


def test_eviction_entries_mirror_each_cache_tier() -> None:
    """The policy's view of each tier, kept in place between cache misses, has the tier's keys in the tier's
    (insertion) order, and every clean entry holds the tier's current figures."""
    text = MULTI.replace("cache_size: 4}", "cache_size: 4, disk_cache_size: 8}")
    sc = scenario(text)
    sim = Simulation(sc, generate(sc), OperatorControlPlane(sc), "thrifty")
    seen = 0
    start_load = sim.dp._start_load

    def checked(rep: SimReplica, key: str, now_s: float, waiters: list[Any]) -> None:
        nonlocal seen
        start_load(rep, key, now_s, waiters)
        seen += 1
        assert list(rep.mem_entries) == list(rep.mem) and list(rep.disk_entries) == list(rep.disk)
        for k, e in rep.mem.items():
            if k not in rep.mem_dirty:
                want = eviction.CacheEntry(k, e[0], e[1], e[2] + (1 if e[3] else 0), rep.frequency(k))
                assert rep.mem_entries[k] == want
        for k, e in rep.disk.items():
            if k not in rep.disk_dirty and k not in rep.mem_dirty:  # a request marks memory only
                assert rep.disk_entries[k] == eviction.CacheEntry(k, e[0], e[1], 0, rep.frequency(k))

    sim.dp._start_load = checked  # type: ignore[method-assign]
    sim.run()
    assert seen > 20
