"""The splitting policy: smooth weighted round robin holds the split over short windows; sticky choices."""

from __future__ import annotations

from collections import Counter

import pytest

from thrifty.policy.splitting import Split, SplitState, choose, choose_sticky, sticky_point


def run(split: Split, n: int, state: SplitState | None = None) -> list[str]:
    state = state or SplitState(split)
    return [split.names[choose(split, state)] for _ in range(n)]


def test_nginx_sequence_interleaves() -> None:
    # nginx's documented example: weights 5, 1, 1 give a a b a c a a.
    split = Split.of([("a", 5), ("b", 1), ("c", 1)])
    assert "".join(run(split, 7)) == "aabacaa"
    assert "".join(run(split, 14)) == "aabacaa" * 2


@pytest.mark.parametrize(
    "weights",
    [
        [("v1", 90), ("v2", 10)],
        [("v1", 1), ("v2", 1), ("v3", 2)],
        [("v1", 0.25), ("v2", 0.75)],
        [("v1", 99), ("v2", 1)],
        [("v1", 3), ("v2", 7), ("v3", 0)],
    ],
)
def test_every_window_of_total_choices_holds_the_split_exactly(weights: list[tuple[str, float]]) -> None:
    split = Split.of(weights)
    seq = run(split, split.total * 5)
    expected = {n: w for n, w in zip(split.names, split.weights, strict=True)}
    for start in range(0, len(seq) - split.total + 1):
        assert Counter(seq[start : start + split.total]) == expected
    # Shorter windows stay within one request of the exact share (smoothness).
    for window in (10, 20):
        for start in range(0, len(seq) - window):
            counts = Counter(seq[start : start + window])
            for name, share in split.shares().items():
                assert abs(counts[name] - share * window) <= 1 + 1e-9


def test_weights_are_reduced_and_zero_weights_never_chosen() -> None:
    split = Split.of([("a", 90), ("b", 10), ("off", 0)])
    assert split.names == ("a", "b") and split.weights == (9, 1) and split.total == 10
    assert split.bounds == (9, 10)
    assert split.shares() == {"a": 0.9, "b": 0.1}
    assert Split.of([("a", 0.5), ("b", 1.5)]).weights == (1, 3)


@pytest.mark.parametrize("weights", [[("a", 0)], [], [("a", -1)], [("a", float("nan"))], [("a", float("inf"))]])
def test_unusable_weights_are_refused(weights: list[tuple[str, float]]) -> None:
    with pytest.raises(ValueError):
        Split.of(weights)


def test_deterministic_across_instances() -> None:
    split = Split.of([("a", 2), ("b", 3)])
    assert run(split, 50) == run(Split.of([("a", 2), ("b", 3)]), 50)


def test_sticky_same_key_same_backend_and_shares_hold() -> None:
    split = Split.of([("v1", 90), ("v2", 10)])
    users = [f"user-{i}".encode() for i in range(4000)]
    first = [choose_sticky(split, u) for u in users]
    assert first == [choose_sticky(split, u) for u in users]  # stable
    share_v2 = first.count(1) / len(users)
    assert 0.08 < share_v2 < 0.12
    # A stable hash: fixed values, whatever the process or Python version.
    assert [sticky_point(k, 1000) for k in (b"alice", b"bob", b"carol")] == [304, 456, 661]
    assert [choose_sticky(split, k) for k in (b"alice", b"bob", b"carol")] == [
        choose_sticky(Split.of([("v1", 9), ("v2", 1)]), k) for k in (b"alice", b"bob", b"carol")
    ]


def test_sticky_weight_change_moves_only_users_at_the_boundary() -> None:
    before = Split.of([("v1", 90), ("v2", 10)])
    after = Split.of([("v1", 75), ("v2", 25)])
    users = [f"u{i}".encode() for i in range(5000)]
    moved = [u for u in users if choose_sticky(before, u) != choose_sticky(after, u)]
    # Only v1 users move to v2 (the v2 range grows): about 15% of all users, none the other way.
    assert all(choose_sticky(before, u) == 0 and choose_sticky(after, u) == 1 for u in moved)
    assert 0.12 < len(moved) / len(users) < 0.18


def test_sticky_point_is_the_blake2b_value() -> None:
    import hashlib

    value = int.from_bytes(hashlib.blake2b(b"X", digest_size=8).digest(), "big")
    assert sticky_point(b"X", 1000) == value * 1000 >> 64
