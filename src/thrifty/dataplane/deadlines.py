"""Many request deadlines, one periodic timer.

A timer per request (``call_later`` + ``cancel``, or ``asyncio.timeout``) costs 2-4 µs of a request that
costs 15-25 µs in all. Request timeouts are whole seconds, so checking every deadline on one timer every
``period_s`` (late by at most that much) is precise enough and costs two dict operations per request. The
timer only runs while some deadline is pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any


class Deadlines:
    def __init__(self, clock: Callable[[], float], period_s: float = 0.05) -> None:
        self._clock = clock
        self._period_s = period_s
        self._pending: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: Hashable, at_s: float, on_expiry: Callable[[], None]) -> None:
        """Call ``on_expiry()`` once ``clock()`` passes ``at_s``, unless ``discard(key)`` comes first."""
        self._pending[key] = (at_s, on_expiry)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period_s, self._sweep)

    def discard(self, key: Hashable) -> None:
        self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)

    def _sweep(self) -> None:
        now = self._clock()
        due = [key for key, (at_s, _) in self._pending.items() if at_s <= now]
        for key in due:
            entry = self._pending.pop(key, None)
            if entry is not None:
                entry[1]()
        self._timer = asyncio.get_running_loop().call_later(self._period_s, self._sweep) if self._pending else None

    def close(self) -> None:
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TaskExpiry:
    """What a deadline does to a coroutine running in its own task (an async predict() or a stream's step):
    cancels the task and remembers that the deadline, not the client, did it."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()
