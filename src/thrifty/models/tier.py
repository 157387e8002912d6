"""Book-keeping of one cache level (memory or disk): what it holds, how big, how recent, how pinned.

The tier holds no policy: it turns its slots into :class:`thrifty.policy.eviction.CacheEntry` records and
asks :func:`thrifty.policy.eviction.plan_eviction`. A slot that is still loading or being removed counts
toward the budget and is treated as pinned, so the books never show less than what is really used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from thrifty.models.names import ModelKey
from thrifty.policy.eviction import CacheBudget, CacheEntry, EvictionDecision, plan_eviction

SlotState = Literal["loading", "ready", "removing"]


@dataclass(slots=True)
class Slot:
    key: ModelKey
    size_bytes: int
    last_used: float
    state: SlotState = "loading"
    pins: int = 0  # requests (memory) or loads (disk) using the slot right now
    model: Any = None  # memory tier: the loaded model
    path: str = ""  # disk tier: the version's folder


class CacheTier:
    def __init__(self, name: str, budget: CacheBudget, frequency: Callable[[ModelKey], float] | None = None) -> None:
        self.name = name
        self.budget = budget
        self._frequency = frequency  # aged request counts: eviction takes the least frequent first
        self._slots: dict[ModelKey, Slot] = {}  # least recently used first

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots.values()))

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def total_bytes(self) -> int:
        return sum(s.size_bytes for s in self._slots.values())

    def get(self, key: ModelKey) -> Slot | None:
        return self._slots.get(key)

    def add(self, slot: Slot) -> None:
        self._slots.pop(slot.key, None)
        self._slots[slot.key] = slot

    def pop(self, key: ModelKey) -> Slot | None:
        return self._slots.pop(key, None)

    def touch(self, slot: Slot, now: float) -> None:
        slot.last_used = now
        if self._slots.get(slot.key) is slot:
            self._slots[slot.key] = self._slots.pop(slot.key)  # move to the recent end

    def plan(self, key: ModelKey, incoming_bytes: int) -> EvictionDecision:
        """Room for ``key`` at ``incoming_bytes``; ``key``'s own slot (a reservation) is left out."""
        freq = self._frequency
        entries = [
            CacheEntry(
                str(s.key),
                s.size_bytes,
                s.last_used,
                s.pins + (0 if s.state == "ready" else 1),
                freq(s.key) if freq is not None else 0.0,
            )
            for s in self._slots.values()
            if s.key != key
        ]
        return plan_eviction(entries, self.budget, incoming_bytes)

    def by_str(self, key: str) -> Slot:
        for slot in self._slots.values():
            if str(slot.key) == key:
                return slot
        raise KeyError(key)

    def usage(self) -> dict[str, Any]:
        return {
            "count": len(self._slots),
            "bytes": self.total_bytes,
            "max_count": self.budget.max_count,
            "max_bytes": self.budget.max_bytes,
        }
