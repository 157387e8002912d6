"""Table-driven and tick-by-tick tests of the pure batch-flush policy (thrifty.policy.batching)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest

from thrifty.config.schema import BatchingConfig
from thrifty.policy.batching import BatchingLimits, decide_flush

LIMITS = BatchingLimits(max_batch_size=4, batch_interval_s=0.010)

CASES = [
    # queued, oldest arrival, free slots, now -> batch size, wake at
    (0, None, 1, 0.0, 0, None),
    (1, 0.0, 1, 0.0, 0, 0.010),
    (1, 0.0, 1, 0.009, 0, 0.010),
    (1, 0.0, 1, 0.010, 1, None),
    (3, 0.0, 1, 0.005, 0, 0.010),
    (3, 0.0, 1, 0.020, 3, None),
    (4, 0.0, 1, 0.001, 4, None),
    (9, 0.0, 1, 0.0, 4, None),
    (4, 0.0, 0, 1.0, 0, None),  # no free slot: nothing fires, asked again when a batch finishes
    (2, 0.0, 0, 1.0, 0, None),
    (2, 5.0, 2, 5.004, 0, 5.010),
]


@pytest.mark.parametrize(("queued", "oldest", "free", "now", "size", "wake"), CASES)
def test_decisions(queued: int, oldest: float | None, free: int, now: float, size: int, wake: float | None) -> None:
    d = decide_flush(LIMITS, queued, oldest, free, now)
    assert (d.batch_size, d.wake_at_s) == (size, wake)
    assert d.reason


def test_limits_from_config() -> None:
    limits = BatchingLimits.from_config(BatchingConfig(max_batch_size=16, batch_interval=0.005))
    assert limits == BatchingLimits(16, 0.005)


@dataclass
class Batch:
    fired_at_ms: int
    ids: list[int]


def simulate(arrivals_ms: dict[int, int], slots: int, run_ms: int, ticks: int) -> list[Batch]:
    """Drive the policy with a fake clock in 1 ms ticks, the way the replica does on events and timers."""
    queue: deque[tuple[int, float]] = deque()  # (request id, arrival s)
    running: list[int] = []  # finish times of executing batches (ms)
    fired: list[Batch] = []
    next_id = 0
    for t in range(ticks):
        now = t / 1000
        running = [end for end in running if end > t]
        for _ in range(arrivals_ms.get(t, 0)):
            queue.append((next_id, now))
            next_id += 1
        while True:
            d = decide_flush(LIMITS, len(queue), queue[0][1] if queue else None, slots - len(running), now)
            if d.batch_size == 0:
                if d.wake_at_s is not None:
                    assert d.wake_at_s > now
                break
            fired.append(Batch(t, [queue.popleft()[0] for _ in range(d.batch_size)]))
            running.append(t + run_ms)
    return fired


def test_tick_by_tick_fires_on_interval_from_first_request() -> None:
    # Requests at 0, 3 and 6 ms: the batch fires at 10 ms (interval since its first request), not at 16.
    fired = simulate({0: 1, 3: 1, 6: 1}, slots=1, run_ms=1, ticks=30)
    assert fired == [Batch(10, [0, 1, 2])]


def test_tick_by_tick_full_batches_fire_at_once_and_wait_for_a_slot() -> None:
    # 10 requests at once, one slot, each batch runs 5 ms: 4 now, 4 when the slot frees, then the rest.
    fired = simulate({0: 10}, slots=1, run_ms=5, ticks=30)
    assert fired == [Batch(0, [0, 1, 2, 3]), Batch(5, [4, 5, 6, 7]), Batch(10, [8, 9])]


def test_tick_by_tick_two_slots() -> None:
    fired = simulate({0: 9}, slots=2, run_ms=5, ticks=30)
    # the 9th is alone: slots are free at 5 ms, but it fires only 10 ms after it arrived
    assert fired == [Batch(0, [0, 1, 2, 3]), Batch(0, [4, 5, 6, 7]), Batch(10, [8])]
