"""The memory and disk tiers of the model cache, and making room in them before a load or download.

Room is made by asking the eviction policy, removing what it chose (a disk copy's files are deleted before
its slot leaves the books, so the books never show less than the disk holds), and planning again; the
incoming slot is added in the same step as the final "fits" decision, with no await in between. When
only pinned entries stand in the way, it waits for a change (an unpin, a removal) up to ``room_wait_s``
of the event loop's clock, then raises ModelCacheBusyError.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from thrifty.models.disk_store import DiskStore
from thrifty.models.errors import ModelCacheBusyError, ModelTooLargeError
from thrifty.models.names import ModelKey
from thrifty.models.tier import CacheTier, Slot
from thrifty.policy.eviction import CacheBudget, Verdict

log = logging.getLogger(__name__)

EvictionHook = Callable[[CacheTier, ModelKey], None]


class Tiers:
    def __init__(
        self,
        store: DiskStore,
        memory_budget: CacheBudget,
        disk_budget: CacheBudget,
        *,
        room_wait_s: float,
        on_evict: EvictionHook,
        frequency: Callable[[ModelKey], float] | None = None,
    ) -> None:
        self.store = store
        self.memory = CacheTier("memory", memory_budget, frequency)
        self.disk = CacheTier("disk", disk_budget, frequency)
        self.evictions: deque[dict[str, Any]] = deque(maxlen=32)  # recent reason records
        self._room_wait_s = room_wait_s
        self._on_evict = on_evict
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Something was unpinned or removed: wake whoever waits for room."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, timeout_s: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    async def make_room(
        self, tier: CacheTier, key: ModelKey, size: int, apply: Callable[..., None], *args: Any
    ) -> None:
        """Evict until ``key`` at ``size`` bytes fits ``tier``, then call ``apply(*args)`` at once."""
        deadline_s: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            decision = tier.plan(key, size)
            if decision.verdict is Verdict.FITS:
                apply(*args)
                return
            if decision.verdict is Verdict.EVICT:
                self.evictions.append({"tier": tier.name, "for": str(key), **decision.reason.as_dict()})
                victims = [tier.by_str(k) for k in decision.evict]
                for victim in victims:
                    self._on_evict(tier, victim.key)
                await self.remove(tier, victims)
                continue
            if decision.verdict is Verdict.TOO_LARGE:
                raise ModelTooLargeError(
                    f"model {key} needs {size} bytes, more than the whole {tier.name} cache "
                    f"({tier.budget.max_bytes} bytes)",
                    details={"model": key.name, "version": key.version, "bytes": size, "tier": tier.name},
                )
            if deadline_s is None:
                deadline_s = loop.time() + self._room_wait_s
            remaining_s = deadline_s - loop.time()
            if remaining_s <= 0:
                raise ModelCacheBusyError(
                    f"no room for model {key} in the {tier.name} cache: every cached model is in use "
                    f"(waited {self._room_wait_s:g} s)",
                    details={
                        "model": key.name,
                        "version": key.version,
                        "tier": tier.name,
                        **decision.reason.as_dict(),
                    },
                )
            await self.wait_for_change(remaining_s)

    async def remove(self, tier: CacheTier, slots: list[Slot]) -> None:
        if tier is self.memory:
            for slot in slots:
                tier.pop(slot.key)
                slot.model = None
        else:
            for slot in slots:
                slot.state = "removing"  # still counted, and pinned, until the files are gone
            try:
                results = await asyncio.gather(
                    *(asyncio.to_thread(self.store.remove, s.key) for s in slots), return_exceptions=True
                )
                for slot, result in zip(slots, results, strict=True):
                    if isinstance(result, BaseException):
                        log.warning("could not delete cached model %s: %s", slot.key, result)
            finally:
                for slot in slots:
                    if tier.get(slot.key) is slot:
                        tier.pop(slot.key)
        self.notify()

    async def discard_unused(self, key: ModelKey) -> None:
        """Drop unpinned copies of ``key`` from both tiers (a version gone from the source, a broken copy)."""
        for tier in (self.memory, self.disk):
            slot = tier.get(key)
            if slot is not None and slot.state == "ready" and slot.pins == 0:
                await self.remove(tier, [slot])


def set_size(slot: Slot, size: int) -> None:
    slot.size_bytes = size
