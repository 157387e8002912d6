"""A short memory of failed model loads and lookups, so a broken or missing model is not retried per request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thrifty.errors import ThriftyError

FailureKey = tuple[str, int | None]  # (model, version); version None = the model as a whole


@dataclass(frozen=True, slots=True)
class _Failure:
    error: ThriftyError
    expires_s: float


class FailureMemory:
    """Remembers errors for ``ttl_s`` of the given clock; holds at most ``max_entries`` (oldest dropped)."""

    def __init__(self, clock: Callable[[], float], ttl_s: float, max_entries: int = 1024) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._failures: dict[FailureKey, _Failure] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def remember(self, key: FailureKey, error: ThriftyError) -> None:
        if self._ttl_s <= 0:
            return
        now = self._clock()
        for stale in [k for k, f in self._failures.items() if f.expires_s <= now]:
            del self._failures[stale]
        self._failures.pop(key, None)
        while len(self._failures) >= self._max_entries:
            del self._failures[next(iter(self._failures))]
        self._failures[key] = _Failure(error, now + self._ttl_s)

    def check(self, key: FailureKey) -> None:
        """Raise a copy of the remembered error while it is fresh."""
        failure = self._failures.get(key)
        if failure is None:
            return
        remaining_s = failure.expires_s - self._clock()
        if remaining_s <= 0:
            del self._failures[key]
            return
        raise copy_error(failure.error, retry_after_s=round(remaining_s, 3))

    def forget(self, key: FailureKey) -> None:
        self._failures.pop(key, None)


def copy_error(error: ThriftyError, **details: object) -> ThriftyError:
    """A fresh instance, so tracebacks of different requests do not pile up on one shared exception."""
    return type(error)(error.message, details={**error.details, **details})


def retrieve_outcome(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's exception as seen: when every waiter was cancelled, nobody else reads it."""
    if not task.cancelled():
        task.exception()
