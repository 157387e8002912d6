"""Which replica of an API takes the next request: the less loaded of two picked at random.

Pure: the caller passes the replicas (anything with ``in_flight``, ``draining`` and ``ejected_until``),
a random source, ``now`` and the indexes already tried for this request; it gets back an index or
``None`` when no replica can take the request. Rules:

- A replica is usable when it is not draining, not ejected (``ejected_until <= now``: the gateway ejects a
  replica for a moment after it refused a connection) and not already tried for this request.
- Power of two choices (Mitzenmacher): sample two distinct replicas, take the one with fewer requests in
  flight (the first on a tie). Nearly as good as least-loaded, O(1), and it avoids every gateway herding
  onto the same replica.
- When a sample is unusable, fall back to the least-loaded usable replica (a scan; rare).

Called once per request on the gateway's hot path, so the decision is a bare index: no reason record.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Protocol


class RoutingCandidate(Protocol):
    @property
    def in_flight(self) -> int: ...

    @property
    def draining(self) -> bool: ...

    @property
    def ejected_until(self) -> float: ...


class RandomSource(Protocol):
    def random(self) -> float: ...


def _usable(c: RoutingCandidate, i: int, now_s: float, tried: Container[int]) -> bool:
    return not c.draining and c.ejected_until <= now_s and i not in tried


def choose_replica(
    candidates: Sequence[RoutingCandidate],
    rng: RandomSource,
    now_s: float,
    tried: Container[int] = (),
) -> int | None:
    n = len(candidates)
    if n == 0:
        return None
    if n == 1:
        return 0 if _usable(candidates[0], 0, now_s, tried) else None
    i = int(rng.random() * n)
    j = int(rng.random() * (n - 1))
    if j >= i:
        j += 1
    a, b = candidates[i], candidates[j]
    if _usable(a, i, now_s, tried) and _usable(b, j, now_s, tried):
        return i if a.in_flight <= b.in_flight else j
    best: int | None = None
    best_load = 0
    for k, c in enumerate(candidates):
        if _usable(c, k, now_s, tried) and (best is None or c.in_flight < best_load):
            best, best_load = k, c.in_flight
    return best
