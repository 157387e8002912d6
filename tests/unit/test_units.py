"""Human units in thrifty.yaml."""

from __future__ import annotations

import pytest

from thrifty.config.units import (
    parse_count_or_percent,
    parse_cpu,
    parse_duration,
    parse_size,
    resolve_count_or_percent,
)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("5m", 300), ("500ms", 0.5), ("1h", 3600), ("1h30m", 5400), (2.5, 2.5), (0, 0), ("10", 10)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["soon", "-1s", -1, True, "5 parsecs", "1x"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "size"),
    [("10MiB", 10 * 2**20), ("1Gi", 2**30), ("512M", 512 * 10**6), (1024, 1024), ("2KB", 2000), ("1.5Gi", 3 * 2**29)],
)
def test_sizes(raw: object, size: int) -> None:
    assert parse_size(raw) == size


@pytest.mark.parametrize("raw", ["big", "10XB", -5, False])
def test_bad_sizes(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_size(raw)


def test_cpu() -> None:
    assert parse_cpu("500m") == 0.5
    assert parse_cpu(2) == 2.0
    with pytest.raises(ValueError):
        parse_cpu("two")


def test_count_or_percent() -> None:
    assert parse_count_or_percent("25%") == "25%"
    assert parse_count_or_percent(3) == 3
    assert parse_count_or_percent("3") == 3
    for bad in ("101%", -1, "x%", True):
        with pytest.raises(ValueError):
            parse_count_or_percent(bad)
    assert resolve_count_or_percent("25%", 1, round_up=True) == 1
    assert resolve_count_or_percent("25%", 1, round_up=False) == 0
    assert resolve_count_or_percent("25%", 8, round_up=False) == 2
    assert resolve_count_or_percent(2, 8, round_up=False) == 2
