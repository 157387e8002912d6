"""Whether a replica takes one more request: run it now, queue it, or refuse it at once.

Pure: the caller passes the limits and what the replica holds right now (requests executing, requests
waiting, draining or not); it gets back a verdict with its reason. Rules (Cortex's proxy breaker, FIFO):

- A draining replica refuses everything new (``REJECT_DRAINING``): the gateway retries it elsewhere.
- ``RUN_NOW`` only when nothing waits and an execution slot is free, so a newcomer never overtakes the
  queue (FIFO).
- ``QUEUE`` while requests in flight (executing + waiting) stay below ``max_executing + max_queued``.
- Otherwise ``REJECT_FULL``: an immediate 503 with Retry-After, so memory stays bounded under overload.

With server-side batching ``max_executing`` counts requests, not calls: ``max_concurrency`` batches of
``max_batch_size`` requests each; requests gathering in a forming batch count as waiting.

This runs once per request on the hot path, so decisions are shared constants (no allocation) and the
reason record is the verdict itself plus the constant text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from thrifty.config.schema import ServingConfig


class Verdict(StrEnum):
    RUN_NOW = "run_now"
    QUEUE = "queue"
    REJECT_FULL = "reject_full"
    REJECT_DRAINING = "reject_draining"


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_executing: int  # requests executing at once
    max_queued: int  # requests waiting beyond those
    retry_after_s: int = 1  # what a refused client is told to wait

    @classmethod
    def from_serving(cls, serving: ServingConfig, retry_after_s: int = 1) -> AdmissionLimits:
        batch = serving.batching.max_batch_size if serving.batching is not None else 1
        return cls(serving.max_concurrency * batch, serving.max_queue_length, retry_after_s)


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    verdict: Verdict
    reason: str
    # RUN_NOW or QUEUE; a field set once, not a property, since the cost simulator reads it for every request.
    admitted: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "admitted", self.verdict is Verdict.RUN_NOW or self.verdict is Verdict.QUEUE)


RUN_NOW = AdmissionDecision(Verdict.RUN_NOW, "an execution slot is free and nothing waits")
QUEUE = AdmissionDecision(Verdict.QUEUE, "all execution slots busy (or others wait first); room in the queue")
REJECT_FULL = AdmissionDecision(Verdict.REJECT_FULL, "execution slots and queue are full")
REJECT_DRAINING = AdmissionDecision(Verdict.REJECT_DRAINING, "the replica is draining")


def admit(limits: AdmissionLimits, executing: int, queued: int, draining: bool) -> AdmissionDecision:
    """The verdict for one more request, given the replica's state just before it arrives."""
    if draining:
        return REJECT_DRAINING
    if queued == 0 and executing < limits.max_executing:
        return RUN_NOW
    if executing + queued < limits.max_executing + limits.max_queued:
        return QUEUE
    return REJECT_FULL
