"""Which replica of a multi-model API takes a request for one model: holders first, under a load bound.

Pure: the caller passes the replicas (anything with ``in_flight``, ``draining``, ``ejected_until``,
``slots``, the requests the replica executes at once, and ``held``, the set of model keys the replica
reported holding in memory), the model's key, the model's
rendezvous order over those replicas (:func:`rendezvous_order`, which the caller may cache per model),
``now`` and the indexes already tried; it gets back an index or ``None`` when no replica can take it.

Rules, in order:

1. A replica is *usable* when it is not draining, not ejected and not already tried (as in
   :mod:`thrifty.policy.routing`).
2. A usable replica is *overloaded* when ``in_flight > factor * mean + max(slack, slots)``, with ``mean``
   the average in-flight of the usable replicas (bounded-load consistent hashing, Mirrokni et al. 2018).
   The least loaded usable replica is never overloaded, so rule 4 always finds one. The slack is at least
   the replica's execution slots: a replica that can run every request it has at once is not overloaded.
   That matters because in-flight counts requests waiting for a model load, which take no slot: with a
   slack of 1, a holder busy loading two other models looked overloaded, its hits were sent elsewhere and
   became loads there (benchmarks/multimodel: 66% -> 75% of the ideal hit ratio at 100 requests/s).
3. The least loaded usable holder that is not overloaded takes the request (a hit, no load). Ties go to
   the holder earliest in the model's rendezvous order, so repeated choices are stable.
4. Otherwise the first usable, not overloaded replica in the model's rendezvous order takes it. Every
   gateway computes the same order, so a cold model is loaded on one replica rather than on all of them;
   when that replica is busy the next one in the order takes the model, and holds it from then on: a
   popular model spreads over as many replicas as its traffic needs, and an unpopular one stays on one.

Rendezvous (highest random weight) hashing: a model's order ranks replicas by a hash of
(model, replica id). Adding or removing a replica moves only the models whose first choice it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from thrifty.policy.routing import RoutingCandidate


class ModelRoutingCandidate(RoutingCandidate, Protocol):
    """A replica as plain routing sees it, plus what it holds and how many requests it runs at once."""

    @property
    def held(self) -> Container[bytes]: ...

    @property
    def slots(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LoadBound:
    """A replica is overloaded above ``factor`` x the mean in-flight, plus ``slack`` or its slots if more."""

    factor: float = 1.25
    slack: float = 1.0


DEFAULT_BOUND = LoadBound()


def rendezvous_weight(model: bytes, replica_id: str) -> int:
    digest = hashlib.blake2b(model + b"\x00" + replica_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(
    model: bytes, replica_ids: Sequence[str], memo: MutableMapping[str, int] | None = None
) -> tuple[int, ...]:
    """Indexes of ``replica_ids``, highest weight for ``model`` first (ties, which need equal ids, by index).

    ``memo``: the caller's cache of ``model``'s weights by replica id, filled as it goes (the cost simulator
    recomputes orders whenever a replica comes or goes; a weight never changes)."""
    if memo is None:
        weights = [rendezvous_weight(model, rid) for rid in replica_ids]
    else:
        weights = []
        for rid in replica_ids:
            w = memo.get(rid)
            if w is None:
                w = memo[rid] = rendezvous_weight(model, rid)
            weights.append(w)
    # Stable sort, reversed stably: highest weight first, equal weights by index (as a key of (-weight, index)).
    return tuple(sorted(range(len(replica_ids)), key=weights.__getitem__, reverse=True))


def choose_model_replica(
    candidates: Sequence[ModelRoutingCandidate],
    model: bytes,
    order: Sequence[int],
    now_s: float,
    tried: Container[int] = (),
    bound: LoadBound = DEFAULT_BOUND,
    *,
    holders: Sequence[int] | None = None,
    load: tuple[int, int] | None = None,
) -> int | None:
    """``model`` is the key looked up in ``held`` (e.g. ``b"en-fr"`` or ``b"en-fr/2"``).

    ``holders`` and ``load``, together, are a caller's bookkeeping that spares the scan of every replica (the
    cost simulator keeps them as it goes; the gateway passes neither): ``holders`` the indexes of the
    candidates whose ``held`` contains ``model``, in ``order``'s order, usable or not; ``load`` the number of
    usable candidates and their total in-flight. The decision is the same as without them.
    """
    if holders is not None and load is not None:
        return _choose_with_holders(candidates, order, now_s, tried, bound, holders, load)
    usable = [
        i for i in order if not candidates[i].draining and candidates[i].ejected_until <= now_s and i not in tried
    ]
    if not usable:
        return None
    mean = sum(candidates[i].in_flight for i in usable) / len(usable)
    base = bound.factor * mean
    best: int | None = None
    best_load = 0
    for i in usable:  # rendezvous order: the first of equally loaded holders wins
        c = candidates[i]
        if (
            model in c.held
            and c.in_flight <= base + max(bound.slack, c.slots)
            and (best is None or c.in_flight < best_load)
        ):
            best, best_load = i, c.in_flight
    if best is not None:
        return best
    for i in usable:
        c = candidates[i]
        if c.in_flight <= base + max(bound.slack, c.slots):
            return i
    # Unreachable with factor >= 1 and slack >= 0 (the least loaded is never above the mean); kept so that
    # a caller's odd bound still gets an answer.
    return min(usable, key=lambda i: candidates[i].in_flight)


def _choose_with_holders(
    candidates: Sequence[ModelRoutingCandidate],
    order: Sequence[int],
    now_s: float,
    tried: Container[int],
    bound: LoadBound,
    holders: Sequence[int],
    load: tuple[int, int],
) -> int | None:
    """:func:`choose_model_replica`'s rules with the usable count, load sum and holders given by the caller.

    The cost simulator calls this once per request: the conditions are tested cheapest first and
    ``max(bound.slack, c.slots)`` is spelled out, which decides exactly as the scan above."""
    count, total = load
    if count == 0:
        return None
    base = bound.factor * (total / count)
    slack = bound.slack
    best: int | None = None
    best_load = 0
    for i in holders:  # in rendezvous order: the first of equally loaded holders wins
        c = candidates[i]
        f = c.in_flight
        if best is not None and f >= best_load:
            continue
        s = c.slots
        if f <= base + (s if s > slack else slack) and not c.draining and c.ejected_until <= now_s and i not in tried:
            best, best_load = i, f
    if best is not None:
        return best
    usable = []
    for i in order:
        c = candidates[i]
        if not c.draining and c.ejected_until <= now_s and i not in tried:
            s = c.slots
            if c.in_flight <= base + (s if s > slack else slack):
                return i
            usable.append(i)
    return min(usable, key=lambda i: candidates[i].in_flight) if usable else None
