"""Which backend API of a splitter takes the next request.

Two rules, both deterministic:

- **Smooth weighted round robin** (nginx's ``ngx_http_upstream_get_peer``): every backend's ``current`` grows
  by its weight, the largest ``current`` wins and gives back the total weight. Over any run of ``total``
  consecutive choices each backend is chosen exactly ``weight`` times, and the choices interleave (weights
  5, 1, 1 give a a b a c a a, not a a a a a b c), so the split holds over short windows, not only on
  average. No randomness: two gateways with the same weights make the same sequence.
- **Sticky** (``sticky_header``): the header's value is hashed with BLAKE2b (stable across processes and
  Python versions, unlike ``hash()``) to a point of ``[0, 1)`` and the backend whose cumulative weight range
  holds it wins. The same value gets the same backend while the weights are unchanged; a weight change
  moves only the values between an old and a new range boundary (90/10 -> 75/25 moves 15% of users, all to
  the backend that grew).

Weights are turned into integers once (``Split.of``): integral weights as they are, fractional ones scaled
by 10^6; zero weights are left out (never chosen). Called once per request on the gateway's hot path, so a
choice is a bare index, allocates nothing, and the only state is ``SplitState.current``, which ``choose``
updates in place (a fresh ``SplitState`` goes with a fresh ``Split`` whenever the weights change).
Measured in ``benchmarks/splitting_policy.py``.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

_FRACTION_SCALE = 1_000_000
# Copying a ready BLAKE2b state is ~100 ns cheaper than constructing one per request (a pure value, no I/O).
_STICKY_HASH = hashlib.blake2b(digest_size=8)
_from_bytes = int.from_bytes
_bisect_right = bisect.bisect_right


@dataclass(frozen=True, slots=True)
class Split:
    """The backends that can be chosen (weight > 0), in the configured order, with integer weights."""

    names: tuple[str, ...]
    weights: tuple[int, ...]
    total: int
    bounds: tuple[int, ...]  # cumulative weights: backend i holds [bounds[i-1], bounds[i])

    @classmethod
    def of(cls, weights: Iterable[tuple[str, float]]) -> Split:
        pairs = [(name, float(w)) for name, w in weights]
        for name, w in pairs:
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"backend {name!r}: weight {w!r} must be a finite number >= 0")
        scale = 1 if all(w == int(w) for _, w in pairs) else _FRACTION_SCALE
        kept = [(name, round(w * scale)) for name, w in pairs]
        kept = [(name, w) for name, w in kept if w > 0]
        if not kept:
            raise ValueError("no backend has a weight above 0")
        divisor = math.gcd(*(w for _, w in kept))
        ints = tuple(w // divisor for _, w in kept)
        return cls(
            names=tuple(name for name, _ in kept),
            weights=ints,
            total=sum(ints),
            bounds=tuple(itertools.accumulate(ints)),
        )

    def shares(self) -> dict[str, float]:
        """Each chosen backend's share of requests (0-1)."""
        return {name: w / self.total for name, w in zip(self.names, self.weights, strict=True)}


class SplitState:
    """The smooth round robin's running counters; one per (splitter, Split)."""

    __slots__ = ("current",)

    def __init__(self, split: Split) -> None:
        self.current = [0] * len(split.weights)


def choose(split: Split, state: SplitState) -> int:
    """The index (into ``split.names``) of the backend for the next request; updates ``state`` in place."""
    current = state.current
    weights = split.weights
    best = 0
    best_value = current[0] = current[0] + weights[0]
    for i in range(1, len(weights)):
        value = current[i] = current[i] + weights[i]
        if value > best_value:
            best, best_value = i, value
    current[best] = best_value - split.total
    return best


def sticky_point(key: bytes, total: int) -> int:
    """Where ``key`` falls on ``[0, total)``: a stable 64-bit hash (BLAKE2b) scaled onto the range, not taken
    modulo it, so a key keeps its relative position (h / 2^64) whatever the total."""
    h = _STICKY_HASH.copy()
    h.update(key)
    return (_from_bytes(h.digest(), "big") * total) >> 64


def choose_sticky(split: Split, key: bytes) -> int:
    """The backend for the requests whose sticky header has the value ``key``; no state."""
    h = _STICKY_HASH.copy()
    h.update(key)
    return _bisect_right(split.bounds, (_from_bytes(h.digest(), "big") * split.total) >> 64)
