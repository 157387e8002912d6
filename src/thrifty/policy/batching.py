"""When a replica's server-side batcher fires a batch, and how big.

Pure: the caller passes the batching limits, what waits (count and the arrival time of the oldest
request, which is the first request of the batch being formed), how many execution slots are free, and
``now``; it gets back how many requests to take (0 = none yet), when to ask again (``wake_at_s``) and why.
Rules (Cortex's batcher, v0.35 FIFO fix, no busy polling):

- Nothing fires without a free execution slot; the caller asks again when a batch finishes.
- A full batch (``max_batch_size`` waiting) fires at once.
- Otherwise the batch fires with whatever waits once ``batch_interval_s`` has passed since its first
  (oldest) request; before that the caller sleeps until exactly that moment.

The caller takes the oldest ``batch_size`` requests and asks again (several full batches may be ready).
"""

from __future__ import annotations

from dataclasses import dataclass

from thrifty.config.schema import BatchingConfig


@dataclass(frozen=True, slots=True)
class BatchingLimits:
    max_batch_size: int
    batch_interval_s: float

    @classmethod
    def from_config(cls, batching: BatchingConfig) -> BatchingLimits:
        return cls(batching.max_batch_size, float(batching.batch_interval))


@dataclass(frozen=True, slots=True)
class FlushDecision:
    batch_size: int  # requests to take now, oldest first; 0 = fire nothing
    wake_at_s: float | None  # ask again at this time (if nothing else happens first); None = on the next event
    reason: str


def decide_flush(
    limits: BatchingLimits, queued: int, oldest_arrival_s: float | None, free_slots: int, now_s: float
) -> FlushDecision:
    if queued <= 0 or oldest_arrival_s is None:
        return FlushDecision(0, None, "nothing waits")
    if free_slots <= 0:
        return FlushDecision(0, None, "no free execution slot; asking again when a batch finishes")
    if queued >= limits.max_batch_size:
        return FlushDecision(limits.max_batch_size, None, "batch full")
    fire_at_s = oldest_arrival_s + limits.batch_interval_s
    if now_s >= fire_at_s:
        return FlushDecision(queued, None, "batch interval passed since the batch's first request")
    return FlushDecision(0, fire_at_s, "waiting for more requests until the batch interval passes")
