"""Table-driven tests of the model-aware replica choice (thrifty.policy.model_routing)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from thrifty.policy.model_routing import LoadBound, choose_model_replica, rendezvous_order, rendezvous_weight


@dataclass
class Rep:
    in_flight: int = 0
    held: frozenset[bytes] = field(default_factory=frozenset)
    draining: bool = False
    ejected_until: float = 0.0
    slots: int = 1


def holds(*keys: str) -> frozenset[bytes]:
    return frozenset(k.encode() for k in keys)


M = b"en-fr"
H = holds("en-fr", "en-fr/1")


@dataclass(frozen=True)
class Case:
    id: str
    reps: list[Rep]
    order: tuple[int, ...]
    expect: int | None
    tried: frozenset[int] = frozenset()
    now: float = 0.0


CASES = [
    Case("no replicas", [], (), None),
    Case("cold model: first in rendezvous order", [Rep(), Rep(), Rep()], (2, 0, 1), 2),
    Case("holder wins over rendezvous", [Rep(), Rep(held=H), Rep()], (2, 0, 1), 1),
    Case("least loaded holder", [Rep(3, H), Rep(1, H), Rep(0)], (0, 1, 2), 1),
    Case("equally loaded holders: rendezvous order breaks the tie", [Rep(1, H), Rep(1, H), Rep(1)], (1, 0, 2), 1),
    # mean = (9 + 1 + 1) / 3 = 3.67; limit = 1.25 * 3.67 + 1 = 5.58: the holder at 9 is overloaded
    Case("overloaded holder: next in rendezvous order", [Rep(9, H), Rep(1), Rep(1)], (0, 2, 1), 2),
    # mean 4, limit 6: in_flight 6 is at the bound, not over it
    Case("holder at the bound still takes it", [Rep(6, H), Rep(3), Rep(3)], (1, 2, 0), 0),
    Case("rendezvous first overloaded: second takes it", [Rep(0), Rep(10), Rep(2)], (1, 2, 0), 2),
    Case("draining holder skipped", [Rep(0, H, draining=True), Rep(0), Rep(0)], (0, 1, 2), 1),
    Case("ejected holder skipped", [Rep(0, H, ejected_until=5.0), Rep(0)], (0, 1), 1, now=1.0),
    Case("ejection over", [Rep(0, H, ejected_until=5.0), Rep(0)], (1, 0), 0, now=5.0),
    Case("tried holder skipped", [Rep(0, H), Rep(0), Rep(0)], (0, 1, 2), 1, tried=frozenset({0})),
    Case("all tried", [Rep(0, H), Rep(0)], (0, 1), None, tried=frozenset({0, 1})),
    Case("all draining", [Rep(0, draining=True), Rep(0, draining=True)], (0, 1), None),
    # the mean counts usable replicas only: the draining one's 100 in flight does not raise the bound
    Case("mean over usable replicas", [Rep(100, draining=True), Rep(4, H), Rep(0)], (1, 2, 0), 2),
    Case("pinned version: holder of another version is no holder", [Rep(0, holds("en-fr/2")), Rep(0)], (1, 0), 1),
    # mean 2, 1.25 * 2 = 2.5: with 1 slot the limit is 3.5 and 6 in flight is over it ...
    Case("one slot: holder with 6 in flight overloaded", [Rep(6, H), Rep(0), Rep(0)], (0, 1, 2), 1),
    # ... with 4 slots the limit is 2.5 + 4 = 6.5: the replica can run most of what it has
    Case("four slots: the same holder is not", [Rep(6, H, slots=4), Rep(0), Rep(0)], (0, 1, 2), 0),
    Case("slots raise the bound for cold models too", [Rep(6, slots=8), Rep(0), Rep(0)], (0, 1, 2), 0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_choose_model_replica(case: Case) -> None:
    key = b"en-fr/1" if case.id.startswith("pinned") else M
    assert choose_model_replica(case.reps, key, case.order, case.now, case.tried) == case.expect


def test_a_tight_bound_spreads_a_popular_model_and_a_loose_one_keeps_it() -> None:
    reps = [Rep(3, H), Rep(1), Rep(1)]  # mean 5/3
    assert choose_model_replica(reps, M, (0, 1, 2), 0.0, bound=LoadBound(factor=1.0, slack=0.0)) == 1
    assert choose_model_replica(reps, M, (0, 1, 2), 0.0, bound=LoadBound(factor=2.0, slack=1.0)) == 0


def test_rendezvous_order_is_a_stable_permutation() -> None:
    ids = ["api-r1", "api-r2", "api-r3", "api-r4"]
    order = rendezvous_order(b"en-fr", ids)
    assert sorted(order) == [0, 1, 2, 3]
    assert rendezvous_order(b"en-fr", ids) == order
    weights = [rendezvous_weight(b"en-fr", ids[i]) for i in order]
    assert weights == sorted(weights, reverse=True)
    assert rendezvous_order(b"x", []) == ()


def test_rendezvous_spreads_models_evenly_and_moves_few_when_a_replica_goes() -> None:
    ids = [f"translator-abc123-{i:06x}" for i in range(4)]
    models = [f"m{i}".encode() for i in range(2000)]
    first = {m: ids[rendezvous_order(m, ids)[0]] for m in models}
    shares = Counter(first.values())
    assert all(400 <= n <= 600 for n in shares.values()), shares
    fewer = ids[:3]
    after = {m: fewer[rendezvous_order(m, fewer)[0]] for m in models}
    moved = [m for m in models if first[m] != after[m]]
    assert all(first[m] == ids[3] for m in moved)  # only the models of the replica that left move
    assert len(moved) == shares[ids[3]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_caller_bookkeeping_gives_the_same_choice(case: Case) -> None:
    """holders= and load= (the cost simulator's precomputation) change nothing in the table above."""
    now = case.now
    usable = [i for i, r in enumerate(case.reps) if not r.draining and r.ejected_until <= now and i not in case.tried]
    holders = [i for i in case.order if M in case.reps[i].held]
    load = (len(usable), sum(case.reps[i].in_flight for i in usable))
    got = choose_model_replica(case.reps, M, case.order, now, case.tried, holders=holders, load=load)
    assert got == case.expect


def test_caller_bookkeeping_matches_the_scan_on_random_fleets() -> None:
    import random

    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(1, 8)
        reps = [
            Rep(in_flight=rng.randint(0, 6), held=H if rng.random() < 0.4 else holds(),
                draining=rng.random() < 0.15, ejected_until=2.0 if rng.random() < 0.1 else 0.0,
                slots=rng.randint(1, 3))
            for _ in range(n)
        ]  # fmt: skip
        order = rendezvous_order(M, [f"r{i}" for i in range(n)])
        tried = frozenset(i for i in range(n) if rng.random() < 0.1)
        usable = [i for i, r in enumerate(reps) if not r.draining and r.ejected_until <= 1.0 and i not in tried]
        holders = [i for i in order if M in reps[i].held]
        load = (len(usable), sum(reps[i].in_flight for i in usable))
        assert choose_model_replica(reps, M, order, 1.0, tried, holders=holders, load=load) == choose_model_replica(
            reps, M, order, 1.0, tried
        )


def test_rendezvous_order_with_the_callers_memo_is_the_same_order() -> None:
    memo: dict[str, int] = {}
    ids = [f"r{i}" for i in range(12)]
    assert rendezvous_order(M, ids, memo) == rendezvous_order(M, ids)
    assert set(memo) == set(ids)
    assert rendezvous_order(M, ids[3:], memo) == rendezvous_order(M, ids[3:])


def test_rendezvous_order_is_highest_weight_first_then_index() -> None:
    """Equal weights (equal ids) keep index order: the same order as a key of (-weight, index)."""
    import random

    rng = random.Random(11)
    for _ in range(500):
        ids = [f"r{rng.randint(0, 4)}" for _ in range(rng.randint(0, 9))]
        model = f"m{rng.randint(0, 30)}".encode()
        w = [rendezvous_weight(model, rid) for rid in ids]
        assert rendezvous_order(model, ids) == tuple(sorted(range(len(ids)), key=lambda i: (-w[i], i)))
        memo: dict[str, int] = {}
        assert rendezvous_order(model, ids, memo) == rendezvous_order(model, ids)
