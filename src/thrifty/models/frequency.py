"""How often each model version has been asked for lately: request counts that halve periodically.

The eviction policy evicts the least frequently used entry first, so the cache needs a popularity
estimate that covers models it does not hold (a popular model evicted once must win its place back) and
that forgets (popularity shifts). Counts are kept per model version for every request, hit or miss, and
all halve every ``period`` requests; counts that decay below ``FORGET_BELOW`` are dropped, which bounds the
table to the models asked for in the last few periods. A variant of TinyLFU's aging, without the sketch:
a plain dict is small for the hundreds to thousands of models one API serves.
"""

from __future__ import annotations

from collections.abc import Hashable

FORGET_BELOW = 0.25


class RequestFrequency:
    def __init__(self, period: int) -> None:
        self._period = max(1, period)
        self._counts: dict[Hashable, float] = {}
        self._since_aging = 0
        self.agings = 0  # how many times the counts halved: every count changed then

    def record(self, key: Hashable) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0.0) + 1.0
        since = self._since_aging + 1
        if since < self._period:
            self._since_aging = since
        else:
            self._since_aging = 0
            self.agings += 1
            self._counts = {k: v / 2 for k, v in self._counts.items() if v / 2 >= FORGET_BELOW}

    def __call__(self, key: Hashable) -> float:
        return self._counts.get(key, 0.0)

    def __len__(self) -> int:
        return len(self._counts)
