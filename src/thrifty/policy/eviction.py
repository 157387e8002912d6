"""Which cached entries to evict so that one more item fits a cache's budget.

Pure: the caller passes what the cache holds (key, bytes, last use, pins), the budget (a count, a byte
total, or both) and the size of the item it wants to add; it gets back the keys to evict first, or a
refusal, with a reason record holding every input and intermediate value. The same function decides for
the memory and the disk tier of the model cache and for the cost simulator.

Rules:

- Least frequently used first, then least recently used (smallest ``frequency``, then smallest
  ``last_used``); ties keep the order of ``entries``, so a caller that lists entries oldest first gets exact
  LRU among equals even with a clock that does not advance. ``frequency`` is the caller's aged request
  count of the item (0 when it keeps none: then this is plain LRU). Frequency first is what keeps a
  cache's popular models: under a skewed (Zipf) popularity, each request for a rarely used model
  otherwise evicts a popular one; with it, rarely used models take each other's place instead.
- A pinned entry (``pins > 0``: in use by a request, or still being loaded) is never chosen.
- Eviction is all or nothing: when the unpinned entries cannot free enough, nothing is evicted and the
  verdict says why, so the caller can wait for an unpin instead of throwing away warm entries for no gain.
- An item larger than the byte budget on its own can never fit (verdict ``too_large``).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter
from typing import Any


class Verdict(StrEnum):
    FITS = "fits"  # room already, nothing to evict
    EVICT = "evict"  # fits after evicting ``EvictionDecision.evict``
    BLOCKED_BY_PINS = "blocked_by_pins"  # would fit if pinned entries were released
    TOO_LARGE = "too_large"  # never fits, whatever is evicted


@dataclass(frozen=True, slots=True)
class CacheEntry:
    key: str
    size_bytes: int
    last_used: float
    pins: int = 0
    frequency: float = 0.0  # aged request count; equal frequencies fall back to LRU


@dataclass(frozen=True, slots=True)
class CacheBudget:
    """``None`` means unbounded in that dimension; both ``None`` means no limit at all."""

    max_count: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class EvictionReason:
    verdict: Verdict
    incoming_bytes: int
    max_count: int | None
    max_bytes: int | None
    count_before: int
    bytes_before: int
    pinned_count: int
    pinned_bytes: int
    need_count: int  # entries that had to go for the count budget
    need_bytes: int  # bytes that had to be freed for the byte budget
    evicted: tuple[str, ...]
    count_after: int  # including the incoming item
    bytes_after: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "incoming_bytes": self.incoming_bytes,
            "max_count": self.max_count,
            "max_bytes": self.max_bytes,
            "count_before": self.count_before,
            "bytes_before": self.bytes_before,
            "pinned_count": self.pinned_count,
            "pinned_bytes": self.pinned_bytes,
            "need_count": self.need_count,
            "need_bytes": self.need_bytes,
            "evicted": list(self.evicted),
            "count_after": self.count_after,
            "bytes_after": self.bytes_after,
        }


@dataclass(frozen=True, slots=True)
class EvictionDecision:
    verdict: Verdict
    evict: tuple[str, ...]
    reason: EvictionReason

    @property
    def fits(self) -> bool:
        return self.verdict in (Verdict.FITS, Verdict.EVICT)


_size = attrgetter("size_bytes")


# An entry's eviction rank, (frequency, last_used), smallest first: attrgetter builds that tuple in C (every cache
# miss ranks every cached entry).
_rank = attrgetter("frequency", "last_used")


def plan_eviction(entries: Sequence[CacheEntry], budget: CacheBudget, incoming_bytes: int) -> EvictionDecision:
    """Keys to evict (least frequent, then least recent; never pinned) so an item of ``incoming_bytes`` fits.

    ``entries`` must not contain the incoming item itself.
    """
    count_before = len(entries)
    bytes_before = sum(map(_size, entries))
    pinned = [e for e in entries if e.pins > 0]
    pinned_bytes = sum(map(_size, pinned))
    need_count = 0 if budget.max_count is None else max(0, count_before + 1 - budget.max_count)
    need_bytes = 0 if budget.max_bytes is None else max(0, bytes_before + incoming_bytes - budget.max_bytes)

    def decide(verdict: Verdict, evicted: tuple[str, ...], freed: int = 0) -> EvictionDecision:
        admitted = verdict in (Verdict.FITS, Verdict.EVICT)
        reason = EvictionReason(
            verdict=verdict,
            incoming_bytes=incoming_bytes,
            max_count=budget.max_count,
            max_bytes=budget.max_bytes,
            count_before=count_before,
            bytes_before=bytes_before,
            pinned_count=len(pinned),
            pinned_bytes=pinned_bytes,
            need_count=need_count,
            need_bytes=need_bytes,
            evicted=evicted,
            count_after=count_before - len(evicted) + (1 if admitted else 0),
            bytes_after=bytes_before - freed + (incoming_bytes if admitted else 0),
        )
        return EvictionDecision(verdict=verdict, evict=evicted, reason=reason)

    too_large = (budget.max_bytes is not None and incoming_bytes > budget.max_bytes) or (
        budget.max_count is not None and budget.max_count < 1
    )
    if too_large:
        return decide(Verdict.TOO_LARGE, ())
    if need_count == 0 and need_bytes == 0:
        return decide(Verdict.FITS, ())

    # sorted() is stable: equal (frequency, last_used) keeps the caller's (oldest first) order. With a count
    # budget only, the first need_count of that order are enough: min() and nsmallest() keep it (the first of
    # equals wins), in O(n) instead of a sort, which is what the cost simulator's every cache miss pays.
    unpinned = [e for e in entries if e.pins == 0]
    if need_bytes == 0 and need_count <= len(unpinned):
        if need_count == 1:
            first = min(unpinned, key=_rank)
            return decide(Verdict.EVICT, (first.key,), first.size_bytes)
        few = heapq.nsmallest(need_count, unpinned, key=_rank)
        return decide(Verdict.EVICT, tuple(e.key for e in few), sum(e.size_bytes for e in few))
    candidates = sorted(unpinned, key=_rank)
    chosen: list[str] = []
    freed_count = 0
    freed_bytes = 0
    for entry in candidates:
        if freed_count >= need_count and freed_bytes >= need_bytes:
            break
        chosen.append(entry.key)
        freed_count += 1
        freed_bytes += entry.size_bytes
    if freed_count >= need_count and freed_bytes >= need_bytes:
        return decide(Verdict.EVICT, tuple(chosen), freed_bytes)
    return decide(Verdict.BLOCKED_BY_PINS, ())
