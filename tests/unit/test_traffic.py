"""Rates and percentiles from successive gateway snapshots."""

from __future__ import annotations

import pytest

from thrifty.control.traffic import TrafficHistory, percentile_from_histogram

BOUNDS = [0.001, 0.002, 0.005, 0.01]


def snap(total_2xx: int, counts: list[int], in_flight: int = 0) -> dict[str, object]:
    return {
        "apis": {
            "a": {
                "in_flight": in_flight,
                "requests": {"2xx": total_2xx, "4xx": 0, "5xx": 1},
                "latency": {"bounds_s": BOUNDS, "counts": counts, "sum_s": 0.0, "count": sum(counts)},
            }
        }
    }


def test_percentile_interpolates_inside_bucket() -> None:
    assert percentile_from_histogram(BOUNDS, [0, 10, 0, 0, 0], 0.5) == pytest.approx(0.0015)
    assert percentile_from_histogram(BOUNDS, [100, 0, 0, 0, 0], 0.99) == pytest.approx(0.00099)
    assert percentile_from_histogram(BOUNDS, [0, 0, 0, 0, 5], 0.5) == 0.01  # +Inf bucket: report the top bound
    assert percentile_from_histogram(BOUNDS, [0, 0, 0, 0, 0], 0.5) is None


def test_rate_and_window_percentiles() -> None:
    h = TrafficHistory()
    h.add(0.0, snap(0, [0, 0, 0, 0, 0]))
    h.add(5.0, snap(50, [50, 0, 0, 0, 0], in_flight=3))
    s = h.summary("a")
    assert s["requests_per_s"] == 10.0
    assert s["in_flight"] == 3
    assert s["requests"] == {"2xx": 50, "4xx": 0, "5xx": 1}
    assert s["p50_ms"] is not None and s["p50_ms"] < 1.0
    # Two minutes later only slow requests came: the window shows them, not the old fast ones.
    h.add(100.0, snap(50, [50, 0, 0, 0, 0]))
    h.add(110.0, snap(60, [50, 0, 0, 10, 0]))
    s = h.summary("a")
    assert 5.0 <= s["p50_ms"] <= 10.0


def test_unknown_api_and_reset() -> None:
    h = TrafficHistory()
    assert h.summary("nope")["requests_per_s"] == 0.0
    h.add(1.0, snap(5, [5, 0, 0, 0, 0]))
    h.reset()
    assert h.summary("a")["requests"]["2xx"] == 0
