"""Table-driven tests of the pure admission policy (thrifty.policy.admission)."""

from __future__ import annotations

from collections import deque

import pytest

from thrifty.config.schema import ServingConfig
from thrifty.policy.admission import AdmissionLimits, Verdict, admit

LIMITS = AdmissionLimits(max_executing=2, max_queued=3)

CASES = [
    # executing, queued, draining -> verdict
    (0, 0, False, Verdict.RUN_NOW),
    (1, 0, False, Verdict.RUN_NOW),
    (2, 0, False, Verdict.QUEUE),
    (2, 2, False, Verdict.QUEUE),
    (2, 3, False, Verdict.REJECT_FULL),
    (1, 1, False, Verdict.QUEUE),  # FIFO: a newcomer never overtakes a waiting request
    (1, 4, False, Verdict.REJECT_FULL),
    (0, 0, True, Verdict.REJECT_DRAINING),
    (2, 3, True, Verdict.REJECT_DRAINING),
]


@pytest.mark.parametrize(("executing", "queued", "draining", "verdict"), CASES)
def test_verdicts(executing: int, queued: int, draining: bool, verdict: Verdict) -> None:
    decision = admit(LIMITS, executing, queued, draining)
    assert decision.verdict is verdict
    assert decision.admitted == (verdict in (Verdict.RUN_NOW, Verdict.QUEUE))
    assert decision.reason


def test_no_queue() -> None:
    limits = AdmissionLimits(max_executing=1, max_queued=0)
    assert admit(limits, 0, 0, False).verdict is Verdict.RUN_NOW
    assert admit(limits, 1, 0, False).verdict is Verdict.REJECT_FULL


def test_limits_from_serving_count_requests_in_batches() -> None:
    plain = ServingConfig(max_concurrency=3, max_queue_length=10)
    assert AdmissionLimits.from_serving(plain) == AdmissionLimits(3, 10, 1)
    batched = ServingConfig.model_validate(
        {"max_concurrency": 2, "max_queue_length": 5, "batching": {"max_batch_size": 8, "batch_interval": 0.01}}
    )
    assert AdmissionLimits.from_serving(batched) == AdmissionLimits(16, 5, 1)


def test_overload_never_holds_more_than_the_limits() -> None:
    """Tick by tick: 5 arrivals per tick, 1 completion per tick; in flight stays bounded, order is FIFO."""
    executing: deque[int] = deque()
    queue: deque[int] = deque()
    started: list[int] = []
    rejected = 0
    next_id = 0
    for _tick in range(50):
        for _ in range(5):
            d = admit(LIMITS, len(executing), len(queue), False)
            if d.verdict is Verdict.RUN_NOW:
                executing.append(next_id)
                started.append(next_id)
            elif d.verdict is Verdict.QUEUE:
                queue.append(next_id)
            else:
                rejected += 1
            next_id += 1
            assert len(executing) + len(queue) <= LIMITS.max_executing + LIMITS.max_queued
        executing.popleft()
        if queue:
            moved = queue.popleft()
            executing.append(moved)
            started.append(moved)
    assert started == sorted(started)
    assert rejected > 0


def test_admitted_is_set_for_every_decision() -> None:
    """``admitted`` is a field computed once (not a property): the same answer for any decision built."""
    from dataclasses import replace

    from thrifty.policy.admission import AdmissionDecision

    for verdict in Verdict:
        d = AdmissionDecision(verdict, "why")
        assert d.admitted == (verdict in (Verdict.RUN_NOW, Verdict.QUEUE))
        assert replace(d, reason="other").admitted == d.admitted
        assert d == AdmissionDecision(verdict, "why")
