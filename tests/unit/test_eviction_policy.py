"""Table-driven tests of the pure eviction policy (thrifty.policy.eviction)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from thrifty.policy.eviction import CacheBudget, CacheEntry, Verdict, plan_eviction


def entries(*specs: tuple[str, int, float, int]) -> list[CacheEntry]:
    return [CacheEntry(key, size, used, pins) for key, size, used, pins in specs]


@dataclass(frozen=True)
class Case:
    id: str
    entries: list[CacheEntry]
    budget: CacheBudget
    incoming: int
    verdict: Verdict
    evict: tuple[str, ...]


ABC = entries(("a", 10, 1.0, 0), ("b", 20, 2.0, 0), ("c", 30, 3.0, 0))

CASES = [
    Case("empty cache fits", [], CacheBudget(max_count=1), 5, Verdict.FITS, ()),
    Case("unbounded", ABC, CacheBudget(), 10**9, Verdict.FITS, ()),
    Case("count room left", ABC, CacheBudget(max_count=4), 1, Verdict.FITS, ()),
    Case("count full evicts the LRU", ABC, CacheBudget(max_count=3), 1, Verdict.EVICT, ("a",)),
    Case("count over budget evicts down to it", ABC, CacheBudget(max_count=2), 1, Verdict.EVICT, ("a", "b")),
    Case("bytes room left", ABC, CacheBudget(max_bytes=70), 10, Verdict.FITS, ()),
    Case("bytes exactly full", ABC, CacheBudget(max_bytes=60), 0, Verdict.FITS, ()),
    Case("bytes evict one", ABC, CacheBudget(max_bytes=70), 15, Verdict.EVICT, ("a",)),
    Case("bytes evict in LRU order, not by size", ABC, CacheBudget(max_bytes=70), 25, Verdict.EVICT, ("a", "b")),
    Case("bytes evict everything", ABC, CacheBudget(max_bytes=70), 70, Verdict.EVICT, ("a", "b", "c")),
    Case("incoming larger than the byte budget", ABC, CacheBudget(max_bytes=70), 71, Verdict.TOO_LARGE, ()),
    Case("too large even when empty", [], CacheBudget(max_bytes=5), 6, Verdict.TOO_LARGE, ()),
    Case("zero count budget", [], CacheBudget(max_count=0), 1, Verdict.TOO_LARGE, ()),
    Case("both: count binds", ABC, CacheBudget(max_count=3, max_bytes=1000), 1, Verdict.EVICT, ("a",)),
    Case("both: bytes bind", ABC, CacheBudget(max_count=10, max_bytes=60), 25, Verdict.EVICT, ("a", "b")),
    Case("both: each needs one", ABC, CacheBudget(max_count=3, max_bytes=60), 5, Verdict.EVICT, ("a",)),
    Case(
        "pinned LRU is skipped",
        entries(("a", 10, 1.0, 1), ("b", 20, 2.0, 0), ("c", 30, 3.0, 0)),
        CacheBudget(max_count=3),
        1,
        Verdict.EVICT,
        ("b",),
    ),
    Case(
        "pinned entries count toward the budget",
        entries(("a", 10, 1.0, 2), ("b", 20, 2.0, 0), ("c", 30, 3.0, 1)),
        CacheBudget(max_bytes=60),
        20,
        Verdict.EVICT,
        ("b",),
    ),
    Case(
        "everything pinned: cannot fit",
        entries(("a", 10, 1.0, 1), ("b", 20, 2.0, 1)),
        CacheBudget(max_count=2),
        1,
        Verdict.BLOCKED_BY_PINS,
        (),
    ),
    Case(
        "all or nothing when unpinned bytes are not enough",
        entries(("a", 10, 1.0, 0), ("b", 50, 2.0, 1)),
        CacheBudget(max_bytes=60),
        30,
        Verdict.BLOCKED_BY_PINS,
        (),
    ),
    Case(
        "ties keep the caller's order",
        entries(("x", 1, 5.0, 0), ("y", 1, 5.0, 0), ("z", 1, 5.0, 0)),
        CacheBudget(max_count=2),
        1,
        Verdict.EVICT,
        ("x", "y"),
    ),
    Case(
        "recency beats position",
        entries(("new", 1, 9.0, 0), ("old", 1, 1.0, 0)),
        CacheBudget(max_count=2),
        1,
        Verdict.EVICT,
        ("old",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_eviction(case: Case) -> None:
    decision = plan_eviction(case.entries, case.budget, case.incoming)
    assert decision.verdict is case.verdict
    assert decision.evict == case.evict
    assert decision.fits == (case.verdict in (Verdict.FITS, Verdict.EVICT))
    reason = decision.reason
    assert reason.evicted == case.evict
    assert reason.count_before == len(case.entries)
    if decision.fits:
        # The decision always lands inside the budget, with the incoming item counted.
        if case.budget.max_count is not None:
            assert reason.count_after <= case.budget.max_count
        if case.budget.max_bytes is not None:
            assert reason.bytes_after <= case.budget.max_bytes
        assert reason.count_after == len(case.entries) - len(case.evict) + 1
    else:
        assert reason.count_after == len(case.entries)


def test_reason_record_holds_inputs_and_intermediates() -> None:
    decision = plan_eviction(
        entries(("a", 10, 1.0, 0), ("b", 20, 2.0, 1), ("c", 30, 3.0, 0)),
        CacheBudget(max_count=5, max_bytes=70),
        25,
    )
    assert decision.reason.as_dict() == {
        "verdict": "evict",
        "incoming_bytes": 25,
        "max_count": 5,
        "max_bytes": 70,
        "count_before": 3,
        "bytes_before": 60,
        "pinned_count": 1,
        "pinned_bytes": 20,
        "need_count": 0,
        "need_bytes": 15,
        "evicted": ["a", "c"],
        "count_after": 2,
        "bytes_after": 45,
    }


def test_lru_order_over_a_sequence_of_uses() -> None:
    """Tick by tick: a cache of 3 with a fake clock; each use refreshes recency."""
    budget = CacheBudget(max_count=3)
    held: dict[str, float] = {}
    evicted: list[str] = []
    uses = ["a", "b", "c", "a", "d", "b", "e", "a"]
    for now, key in enumerate(uses):
        if key not in held:
            current = [CacheEntry(k, 1, t) for k, t in held.items()]
            decision = plan_eviction(current, budget, 1)
            assert decision.fits
            for k in decision.evict:
                del held[k]
                evicted.append(k)
        held[key] = float(now)
    # d evicts b (a was refreshed at t=3), b evicts c, e evicts a, a evicts d.
    assert evicted == ["b", "c", "a", "d"]
    assert sorted(held) == ["a", "b", "e"]


# ---- frequency before recency ---------------------------------------------------------------------


def test_least_frequent_goes_first_then_least_recent() -> None:
    entries = [
        CacheEntry("popular-old", 1, last_used=1.0, frequency=50.0),
        CacheEntry("rare-new", 1, last_used=9.0, frequency=1.0),
        CacheEntry("rare-old", 1, last_used=2.0, frequency=1.0),
        CacheEntry("warm", 1, last_used=3.0, frequency=5.0),
    ]
    d = plan_eviction(entries, CacheBudget(max_count=4), 1)
    assert d.evict == ("rare-old",)
    d = plan_eviction(entries, CacheBudget(max_count=2), 1)
    assert d.evict == ("rare-old", "rare-new", "warm")


def test_pinned_rare_entry_is_skipped_for_the_next_least_frequent() -> None:
    entries = [
        CacheEntry("rare", 1, last_used=1.0, pins=1, frequency=1.0),
        CacheEntry("popular", 1, last_used=2.0, frequency=9.0),
    ]
    assert plan_eviction(entries, CacheBudget(max_count=2), 1).evict == ("popular",)


def test_count_budget_shortcut_matches_a_full_sort_on_random_caches() -> None:
    """With a count budget only the victims come from min()/nsmallest(): the same keys as the stable sort."""
    import random

    rng = random.Random(3)
    for _ in range(2000):
        n = rng.randint(0, 12)
        cache = [
            CacheEntry(f"m{i}", 1, float(rng.randint(0, 5)), rng.choice((0, 0, 0, 1)), float(rng.randint(0, 3)))
            for i in range(n)
        ]
        budget = CacheBudget(max_count=rng.randint(1, 10))
        decision = plan_eviction(cache, budget, 1)
        need = max(0, n + 1 - (budget.max_count or 0))
        ranked = sorted((e for e in cache if e.pins == 0), key=lambda e: (e.frequency, e.last_used))
        if need == 0:
            assert decision.verdict is Verdict.FITS
        elif len(ranked) >= need:
            assert decision.verdict is Verdict.EVICT
            assert decision.evict == tuple(e.key for e in ranked[:need])
            assert decision.reason.bytes_after == n - need + 1
        else:
            assert decision.verdict is Verdict.BLOCKED_BY_PINS
