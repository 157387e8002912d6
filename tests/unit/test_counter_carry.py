"""CounterCarry: the gateway's counters stay cumulative for the operator across gateway restarts."""

from __future__ import annotations

from typing import Any

from thrifty.control.scaling import ApiScaler
from thrifty.control.traffic import CounterCarry, TrafficHistory


def api(n2: int, n5: int = 0, integral: float = 0.0, counts: tuple[int, ...] = (0, 0), in_flight: int = 0) -> Any:
    return {
        "in_flight": in_flight,
        "in_flight_seconds": integral,
        "requests": {"2xx": n2, "4xx": 0, "5xx": n5},
        "latency": {"bounds_s": [0.1], "counts": list(counts), "sum_s": 0.01 * sum(counts), "count": sum(counts)},
        "retries": n5,
        "replicas": {},
    }


def snap(boot: str, **apis: Any) -> dict[str, Any]:
    return {"boot_id": boot, "apis": apis}


def test_same_boot_passes_through() -> None:
    carry = CounterCarry()
    assert carry.carry(snap("a", x=api(3)))["apis"]["x"] == api(3)
    assert carry.carry(snap("a", x=api(7)))["apis"]["x"] == api(7)


def test_a_restart_adds_the_last_snapshot_of_the_previous_gateway() -> None:
    carry = CounterCarry()
    # tick by tick: (boot, the new gateway's own counters) -> what the operator sees
    ticks = [
        ("a", api(3, 1, 2.0, (3, 1), in_flight=2), api(3, 1, 2.0, (3, 1), in_flight=2)),
        ("a", api(5, 1, 4.0, (4, 2)), api(5, 1, 4.0, (4, 2))),
        ("b", api(0), api(5, 1, 4.0, (4, 2))),  # restarted: from zero again
        ("b", api(2, 0, 1.0, (2, 0), in_flight=1), api(7, 1, 5.0, (6, 2), in_flight=1)),
        ("c", api(1, 0, 0.5, (1, 0)), api(8, 1, 5.5, (7, 2))),  # a second restart keeps both offsets
    ]
    for boot, raw, seen in ticks:
        out = carry.carry(snap(boot, x=raw))["apis"]["x"]
        assert out["requests"] == seen["requests"]
        assert out["in_flight_seconds"] == seen["in_flight_seconds"]
        assert out["latency"]["counts"] == seen["latency"]["counts"]
        assert out["latency"]["count"] == seen["latency"]["count"]
        assert abs(out["latency"]["sum_s"] - seen["latency"]["sum_s"]) < 1e-9
        assert out["retries"] == seen["retries"]
        assert out["in_flight"] == seen["in_flight"]  # an instantaneous figure: never carried


def test_a_deleted_api_loses_its_offset() -> None:
    carry = CounterCarry()
    carry.carry(snap("a", x=api(5), y=api(1)))
    carry.carry(snap("b", x=api(0), y=api(0)))
    carry.carry(snap("b", x=api(1)))  # y deleted
    assert carry.carry(snap("b", x=api(1), y=api(2)))["apis"]["y"]["requests"]["2xx"] == 2


def test_snapshots_without_a_boot_id_pass_through() -> None:
    carry = CounterCarry()
    stats = {"apis": {"x": api(4)}}
    assert carry.carry(stats) is stats


def test_the_operator_figures_never_step_back_over_a_restart() -> None:
    carry, history, scaler = CounterCarry(), TrafficHistory(), ApiScaler()
    raw = [("a", api(10, integral=5.0)), ("a", api(20, integral=9.0)), ("b", api(1, integral=0.5))]
    totals, samples = [], []
    for t, (boot, counters) in enumerate(raw):
        stats = carry.carry(snap(boot, x=counters))
        history.add(float(t), stats)
        totals.append(history.summary("x")["requests"]["2xx"])
        samples.append(scaler.observe(float(t), stats["apis"]["x"], keep_s=60.0))
    assert totals == [10, 20, 21]
    assert samples[1:] == [4.0, 0.5]  # the in-flight integral goes on: no negative (or dropped) sample
