"""Aged request counts for frequency-aware eviction."""

from __future__ import annotations

from thrifty.models.frequency import RequestFrequency


def test_counts_then_halves_every_period_and_forgets() -> None:
    f = RequestFrequency(period=4)
    for key in ("a", "a", "a"):
        f.record(key)
    assert f("a") == 3.0 and f("b") == 0.0
    f.record("b")  # 4th record: everything halves
    assert f("a") == 1.5 and f("b") == 0.5
    for _ in range(4):
        f.record("c")  # another period: a 0.75, b 0.25, c 2.0
    assert f("b") == 0.25
    for _ in range(4):
        f.record("c")
    assert f("b") == 0.0 and len(f) == 2  # decayed below the threshold: forgotten
