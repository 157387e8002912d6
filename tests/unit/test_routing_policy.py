"""Table-driven tests of the pure replica choice (thrifty.policy.routing), with a scripted RNG."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from thrifty.policy.routing import choose_replica


@dataclass
class Rep:
    in_flight: int
    draining: bool = False
    ejected_until: float = 0.0


class Script:
    """An RNG that returns the given values in turn."""

    def __init__(self, *values: float) -> None:
        self._values: Iterator[float] = iter(values)

    def random(self) -> float:
        return next(self._values)


@dataclass(frozen=True)
class Case:
    id: str
    reps: list[Rep]
    rng: tuple[float, ...]
    now: float
    tried: frozenset[int]
    expect: int | None


CASES = [
    Case("no replicas", [], (), 0.0, frozenset(), None),
    Case("one", [Rep(5)], (), 0.0, frozenset(), 0),
    Case("one draining", [Rep(0, draining=True)], (), 0.0, frozenset(), None),
    Case("one ejected", [Rep(0, ejected_until=2.0)], (), 1.0, frozenset(), None),
    Case("ejection over", [Rep(0, ejected_until=2.0)], (), 2.0, frozenset(), 0),
    Case("one tried", [Rep(0)], (), 0.0, frozenset({0}), None),
    # i = int(0.0 * 2) = 0; j = int(0.0 * 1) = 0 -> bumped to 1: the less loaded of 0 and 1
    Case("two: less loaded", [Rep(3), Rep(1)], (0.0, 0.0), 0.0, frozenset(), 1),
    Case("two: tie keeps the first sample", [Rep(2), Rep(2)], (0.9, 0.0), 0.0, frozenset(), 1),
    # samples 2 and 0 among four; replica 3 (idle) was not sampled: P2C, not least-loaded
    Case("p2c samples", [Rep(4), Rep(0), Rep(5), Rep(0)], (0.5, 0.0), 0.0, frozenset(), 0),
    Case("sample draining -> scan", [Rep(0, draining=True), Rep(7), Rep(2)], (0.0, 0.0), 0.0, frozenset(), 2),
    Case("tried excluded", [Rep(0), Rep(1), Rep(9)], (0.0, 0.0), 0.0, frozenset({0}), 1),
    Case("all unusable", [Rep(0, draining=True), Rep(0, ejected_until=9)], (0.0, 0.0), 1.0, frozenset(), None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_choice(case: Case) -> None:
    assert choose_replica(case.reps, Script(*case.rng), case.now, case.tried) == case.expect


def test_two_samples_are_always_distinct() -> None:
    rng = random.Random(1)
    # Were both samples ever the busy replica, it would be picked; two distinct samples always beat it.
    busy_last = [Rep(0), Rep(0), Rep(9)]
    assert {choose_replica(busy_last, rng, 0.0) for _ in range(200)} == {0, 1}
    # With equal loads the first sample wins, so every replica gets picked: the samples vary.
    equal = [Rep(0) for _ in range(3)]
    assert {choose_replica(equal, rng, 0.0) for _ in range(200)} == {0, 1, 2}


def test_load_steers_traffic_to_the_idle_replica() -> None:
    rng = random.Random(42)
    reps = [Rep(0), Rep(5), Rep(5), Rep(5)]
    picks = Counter(choose_replica(reps, rng, 0.0) for _ in range(2000))
    # replica 0 wins whenever it is sampled (half the time); each busy one gets about a sixth
    assert picks[0] > 800
    assert all(picks[i] < picks[0] for i in (1, 2, 3))
