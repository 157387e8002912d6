"""A random spot market for chaos runs and the cost simulator: interruptions and capacity outages per pool.

Per pool (``PoolChaos``):
- **interruptions**: each live spot node of the pool is reclaimed at ``interruptions_per_node_hour`` (a
  Poisson process: over a step of ``dt`` seconds a node goes with probability ``1 - exp(-rate x dt / 3600)``),
  with ``notice_s`` of notice (0: a hard kill, no notice);
- **correlation**: when a node is reclaimed, each other live node of the same pool goes with it with
  probability ``correlation`` (real reclaims cluster by instance type and zone: most co-interruptions come
  within minutes, ``reference/peers.md`` §7.1);
- **capacity**: the pool runs out at ``outages_per_hour`` and stays out for ``outage_s`` (launches raise
  ``CapacityError`` meanwhile).

``PreemptionProcess.step(now_s, nodes)`` is pure given its injected RNG: the same seed and the same calls
give the same events, so a chaos run and a simulation are reproducible. ``apply`` turns events into calls on a
provider (``preempt``, ``set_capacity``: ``SimulatedCloud`` or ``FakeCloud``); ``run`` does both on a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from thrifty.clouds.base import CloudNode, NodeNotice


@dataclass(frozen=True, slots=True)
class PoolChaos:
    interruptions_per_node_hour: float = 0.0
    notice_s: float = 120.0  # 0 = hard kill
    correlation: float = 0.0  # 0..1: chance each other node of the pool is taken along
    outages_per_hour: float = 0.0
    outage_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Preemption:
    node_id: str
    pool: str
    notice_s: float
    correlated: bool  # taken along with another node of its pool


@dataclass(frozen=True, slots=True)
class CapacityChange:
    pool: str
    available: bool
    until_s: float | None = None  # an outage: when capacity comes back


ChaosEvent = Preemption | CapacityChange


def chance(rate_per_hour: float, dt_s: float) -> float:
    """Probability of at least one event of a Poisson process at ``rate_per_hour`` within ``dt_s``."""
    if rate_per_hour <= 0 or dt_s <= 0:
        return 0.0
    return 1.0 - math.exp(-rate_per_hour * dt_s / 3600.0)


class PreemptionProcess:
    def __init__(self, pools: Mapping[str, PoolChaos], rng: random.Random, start_s: float) -> None:
        self._pools = dict(pools)
        self._rng = rng
        self._last_s = start_s
        self._taken: set[str] = set()  # nodes already reclaimed: never twice
        self._out_until: dict[str, float] = {}

    def out_of_capacity(self) -> dict[str, float]:
        """Pools in an outage now, with when each ends."""
        return dict(self._out_until)

    def step(self, now_s: float, nodes: Sequence[CloudNode]) -> list[ChaosEvent]:
        """What the market does between the last step and ``now_s`` to these nodes (ordered by pool, node id)."""
        dt = max(0.0, now_s - self._last_s)
        self._last_s = max(self._last_s, now_s)
        events: list[ChaosEvent] = []
        for pool in sorted(self._pools):
            chaos = self._pools[pool]
            until = self._out_until.get(pool)
            if until is not None:
                if now_s >= until:
                    del self._out_until[pool]
                    events.append(CapacityChange(pool, True))
            elif self._rng.random() < chance(chaos.outages_per_hour, dt):
                self._out_until[pool] = now_s + chaos.outage_s
                events.append(CapacityChange(pool, False, now_s + chaos.outage_s))
        live = sorted((n for n in nodes if n.state != "terminated" and n.spec.spot and n.id not in self._taken),
                      key=lambda n: n.id)  # fmt: skip
        for node in live:
            pool_chaos = self._pools.get(node.spec.pool)
            if pool_chaos is None or node.id in self._taken:
                continue
            if self._rng.random() >= chance(pool_chaos.interruptions_per_node_hour, dt):
                continue
            self._taken.add(node.id)
            events.append(Preemption(node.id, node.spec.pool, pool_chaos.notice_s, False))
            for other in live:
                if other.spec.pool != node.spec.pool or other.id in self._taken:
                    continue
                if self._rng.random() < pool_chaos.correlation:
                    self._taken.add(other.id)
                    events.append(Preemption(other.id, other.spec.pool, pool_chaos.notice_s, True))
        return events


class ChaosTarget(Protocol):
    def nodes(self) -> list[CloudNode]: ...

    async def preempt(self, node_id: str, notice_s: float) -> NodeNotice: ...

    def set_capacity(self, pool: str, launches: int | None) -> None: ...


async def apply(target: ChaosTarget, events: Sequence[ChaosEvent]) -> None:
    """Carry the events out on a provider: reclaim nodes, take a pool's capacity away or give it back."""
    for e in events:
        if isinstance(e, Preemption):
            await target.preempt(e.node_id, e.notice_s)
        else:
            target.set_capacity(e.pool, None if e.available else 0)


async def run(
    target: ChaosTarget,
    process: PreemptionProcess,
    clock: Callable[[], float],
    stop: asyncio.Event,
    *,
    tick_s: float = 1.0,
    on_events: Callable[[Sequence[ChaosEvent]], Awaitable[None] | None] | None = None,
) -> None:
    """Step the process every ``tick_s`` until ``stop`` is set; ``on_events`` sees each non-empty batch."""
    while not stop.is_set():
        events = process.step(clock(), target.nodes())
        if events:
            await apply(target, events)
            if on_events is not None:
                result = on_events(events)
                if result is not None:
                    await result
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick_s)
