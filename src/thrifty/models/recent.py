"""The distinct models an API was asked for within a time window: the signal behind ``models.keep_warm``.

The gateway records every request of a multi-model API (:meth:`RecentModels.seen`: one dict lookup and one
store, plus a heap push the first time a model is seen in the window); the operator reads the count once a
second (:meth:`RecentModels.count`) and keeps enough replicas that the fleet's memory caches hold that many
models (``policy.keep_warm.warm_floor``). The cost simulator feeds the same class with its arrivals.

Exact, with amortised O(log n) work per model and window: every tracked model has one heap entry no later
than its last sighting; expiring pops entries older than the window and pushes back, at its last sighting,
any model seen since. Memory is bounded: at most ``cap`` models are tracked (beyond it new names are not
counted until others expire, and ``saturated`` says so).
"""

from __future__ import annotations

from heapq import heappop, heappush

MAX_TRACKED_MODELS = 100_000  # per API: what a gateway remembers (names are at most 256 bytes each)


class RecentModels:
    __slots__ = ("_heap", "_last", "cap", "saturated", "window_s")

    def __init__(self, window_s: float, cap: int = MAX_TRACKED_MODELS) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        self.window_s = window_s
        self.cap = cap
        self.saturated = False  # a model went uncounted because ``cap`` were tracked
        self._last: dict[bytes, float] = {}  # model -> last time it was asked for
        self._heap: list[tuple[float, bytes]] = []  # one entry per tracked model, at or before its last sighting

    def seen(self, model: bytes, now_s: float) -> None:
        last = self._last
        if model in last:
            last[model] = now_s
            return
        if len(last) >= self.cap:
            self.saturated = True
            return
        last[model] = now_s
        heappush(self._heap, (now_s, model))

    def count(self, now_s: float) -> int:
        """Models asked for in ``(now_s - window_s, now_s]``."""
        cutoff = now_s - self.window_s
        heap, last = self._heap, self._last
        while heap and heap[0][0] <= cutoff:
            _, model = heappop(heap)
            t = last[model]
            if t <= cutoff:
                del last[model]
            else:
                heappush(heap, (t, model))  # seen since: look again when that sighting leaves the window
        if len(last) < self.cap:
            self.saturated = False
        return len(last)
