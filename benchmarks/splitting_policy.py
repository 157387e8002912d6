"""Micro-benchmark of the splitting policy (the gateway calls it once per request to a splitter).

    .venv/bin/python benchmarks/splitting_policy.py

Prints ns per choice for the smooth weighted round robin (2 and 5 backends) and the sticky choice
(BLAKE2b of a header value), best of 5 runs of 200,000 choices each.
"""

from __future__ import annotations

import time

from thrifty.policy.splitting import Split, SplitState, choose, choose_sticky

N = 200_000


def best_ns(fn: object, *args: object) -> float:
    call = fn  # type: ignore[assignment]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(N):
            call(*args)  # type: ignore[operator]
        best = min(best, (time.perf_counter_ns() - t0) / N)
    return best


def empty_loop_ns() -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(N):
            pass
        best = min(best, (time.perf_counter_ns() - t0) / N)
    return best


def main() -> None:
    two = Split.of([("v1", 90), ("v2", 10)])
    five = Split.of([("a", 30), ("b", 25), ("c", 20), ("d", 15), ("e", 10)])
    loop = empty_loop_ns()
    rows = [
        ("smooth WRR, 2 backends", best_ns(choose, two, SplitState(two))),
        ("smooth WRR, 5 backends", best_ns(choose, five, SplitState(five))),
        ("sticky (blake2b), 2 backends", best_ns(choose_sticky, two, b"user-12345")),
        ("sticky (blake2b), 5 backends", best_ns(choose_sticky, five, b"user-12345")),
    ]
    print(f"{'choice':32} {'ns/choice':>10}   (loop overhead {loop:.0f} ns subtracted)")
    for name, ns in rows:
        print(f"{name:32} {ns - loop:10.0f}")


if __name__ == "__main__":
    main()
