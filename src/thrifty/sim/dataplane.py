"""The simulated data plane: a gateway that routes and holds requests, replicas that admit, batch, run and cache.

A discrete-event loop on virtual time: arrivals come in time order from the traffic arrays; completions,
batch timers and model loads sit in one heap of plain tuples ``(time, seq, kind, replica, payload)``. A
request is a tuple ``(arrival_s, model index, z)`` (``z`` a standard normal draw that fixes its service
time), never an object, and each replica keeps a FIFO ``deque`` of them: a few heap operations and function
calls per request, which is what keeps 24 h at 100 requests/s within the time budget.

Every decision is the platform's own pure policy, called here exactly as the gateway and the replica call
it: ``policy.routing.choose_replica`` and ``policy.model_routing.choose_model_replica`` pick the replica,
``policy.admission.admit`` queues or refuses (503 beyond the queue, as the real replica), ``policy.batching
.decide_flush`` fires batches, ``policy.eviction.plan_eviction`` chooses what leaves the memory and disk
caches, with ``models.frequency.RequestFrequency`` as the real cache's popularity. Nothing here decides
anything those functions decide; this module only moves requests between them on a virtual clock.

Time model: a batch of n requests takes ``exp(mu + sigma z) + per_item (n - 1)`` with ``z`` the first
request's draw; a request finishing later than ``request_timeout`` after its arrival is a timeout (failed).
A memory miss downloads the model unless the disk holds it, then loads it; the load takes no execution slot
and concurrent requests for a loading model wait for the one load (single flight). Requests that wait for
a load or a slot pin their model, so it is never evicted from under them.
"""

from __future__ import annotations

import itertools
import math
import random
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from math import exp
from typing import Any

from thrifty.config.scenario import ServiceConfig
from thrifty.config.schema import ApiConfig
from thrifty.models.frequency import RequestFrequency
from thrifty.policy import admission, batching, eviction, model_routing, routing

FINISH, WAKE, LOADED = 0, 1, 2
INF = math.inf

Request = tuple[float, int, float]  # (arrival_s, model index or -1, z)


@dataclass
class ApiStats:
    """What happened to one API's requests."""

    arrived: int = 0
    served: int = 0  # answered in time
    rejected: int = 0  # 503: replica queue full, or the gateway's hold full
    timed_out: int = 0  # answered after request_timeout, or held past cold_start_timeout
    lost: int = 0  # cut off with nowhere to retry (counted once; a retried request is not lost)
    retried: int = 0  # re-sent by the gateway after its replica went away
    hits: int = 0
    misses: int = 0
    busy_s: float = 0.0  # replica-seconds executing calls
    latencies_s: array[float] = field(default_factory=lambda: array("d"))  # of served requests

    @property
    def failed(self) -> int:
        return self.rejected + self.timed_out + self.lost


class ApiModel:
    """One API's static figures, precomputed for the hot path."""

    def __init__(self, index: int, api: ApiConfig, service: ServiceConfig, model_names: Sequence[str]) -> None:
        self.index = index
        self.name = api.name
        self.config = api
        self.limits = admission.AdmissionLimits.from_serving(api.serving)
        b = api.serving.batching
        self.batching = batching.BatchingLimits.from_config(b) if b is not None else None
        self.max_calls = api.serving.max_concurrency
        self.slots = self.max_calls * (b.max_batch_size if b is not None else 1)
        self.timeout_s = float(api.serving.request_timeout)
        self.hold_s = float(api.autoscaling.cold_start_timeout)
        self.max_held = api.autoscaling.max_cold_queue
        self.gpu = api.compute.gpu
        self.per_item_s = float(service.per_item)
        self.cold_start_s = float(service.cold_start)
        mu, sigma = service.time.mu, service.time.sigma
        self.multi = service.models is not None
        self.names: list[str] = list(model_names)
        self.keys: list[bytes] = [n.encode() for n in model_names]  # what model routing looks up
        self.model_of: dict[str, int] = {n: k for k, n in enumerate(model_names)}
        self.mu = [mu] * max(1, len(model_names))
        self.sigma = [sigma] * max(1, len(model_names))
        for k, name in enumerate(model_names):
            d = service.per_model.get(name)
            if d is not None:
                self.mu[k], self.sigma[k] = d.mu, d.sigma
        ms, mc = service.models, api.models
        self.size = ms.size if ms is not None else 0
        self.download_s = float(ms.download) if ms is not None else 0.0
        self.load_s = float(ms.load) if ms is not None else 0.0
        self.mem_budget = eviction.CacheBudget(mc.cache_size, mc.cache_bytes) if mc else eviction.CacheBudget()
        self.disk_budget = (
            eviction.CacheBudget(mc.disk_cache_size, mc.disk_cache_bytes) if mc else eviction.CacheBudget()
        )
        self.frequency_period = max(256, 32 * ((mc.cache_size if mc else None) or 32))
        self.model_aware = True  # False: plain routing for a multi-model API (Cortex: no model affinity)
        self.lru = False  # True: evict least recently used only (Cortex's cache), not by popularity
        self.stats = ApiStats()


class SimReplica:
    """One replica as the gateway sees it (``in_flight``, ``draining``, ``ejected_until``, ``held``, ``slots``)."""

    __slots__ = (
        "agings",
        "api",
        "blocked",
        "busy",
        "calls",
        "dead",
        "disk",
        "disk_dirty",
        "disk_entries",
        "draining",
        "ejected_until",
        "executing",
        "frequency",
        "held",
        "id",
        "in_flight",
        "loading",
        "mem",
        "mem_dirty",
        "mem_entries",
        "node_id",
        "queue",
        "ready",
        "slots",
        "started_s",
        "wake_at",
    )  # fmt: skip

    def __init__(self, replica_id: str, api: ApiModel, node_id: str, now_s: float) -> None:
        self.id = replica_id
        self.api = api
        self.node_id = node_id
        self.started_s = now_s
        self.ready = False
        self.draining = False
        self.dead = False
        self.ejected_until = 0.0
        self.in_flight = 0  # admitted, not finished: executing + queued + waiting for a load
        self.executing = 0  # requests in running calls
        self.calls = 0
        self.slots = api.slots
        self.queue: deque[Request] = deque()
        self.busy: list[list[Request]] = []  # running batches, to retry them if the replica dies
        self.mem: dict[str, list[Any]] = {}  # key -> [size, last_used, pins, loading]
        self.disk: dict[str, list[Any]] = {}  # key -> [size, last_used]
        self.held: set[bytes] = set()  # loaded in memory (what model routing sees)
        self.loading: dict[str, list[Request]] = {}  # key -> requests waiting for its load
        self.blocked: list[str] = []  # loads waiting for an unpin
        self.frequency = RequestFrequency(api.frequency_period)
        # The eviction policy's view of each tier: the tier's keys in the tier's own (insertion) order, as the
        # policy's ties need, each entry rebuilt in place only when its key is dirty (its figures changed since
        # the last eviction plan; every key when the popularity counts age): a cache miss passes the policy a
        # copy of the values instead of building one CacheEntry per cached model.
        self.mem_entries: dict[str, eviction.CacheEntry] = {}
        self.mem_dirty: set[str] = set()
        self.disk_entries: dict[str, eviction.CacheEntry] = {}
        self.disk_dirty: set[str] = set()
        self.agings = 0
        self.wake_at = INF


ReplicaGone = Callable[[SimReplica, float], None]


def _no_frequency(key: str) -> int:
    return 0


class DataPlane:
    """Gateway + replicas of every API, advanced by :meth:`advance` between control ticks."""

    def __init__(self, apis: Sequence[ApiModel], seed: int, on_gone: ReplicaGone | None = None) -> None:
        self.apis = list(apis)
        self.rng = random.Random(seed)
        self.heap: list[tuple[float, int, int, SimReplica, Any]] = []
        self.seq: Iterator[int] = itertools.count(1)  # heap tie-breaker: events at one time in push order
        self.routable: list[list[SimReplica]] = [[] for _ in apis]
        # Per API and model: its rendezvous order over the routable replicas and each index's rank in it,
        # memoised until the routable set changes; the replicas holding each model in memory; the routable
        # replicas' positions and total in-flight (what model routing reads instead of scanning them all).
        self.orders: list[dict[int, tuple[tuple[int, ...], list[int]]]] = [{} for _ in apis]
        # Per API and model: its order and the positions of its holders in that order (what model routing is
        # passed), memoised until the routable set or the model's holders change.
        self.routes: list[dict[int, tuple[tuple[int, ...], list[int]]]] = [{} for _ in apis]
        self.holding: list[dict[int, set[SimReplica]]] = [{} for _ in apis]
        self.weights: list[dict[int, dict[str, int]]] = [{} for _ in apis]  # rendezvous weights by replica id
        self.position: list[dict[SimReplica, int]] = [{} for _ in apis]
        self.load: list[int] = [0 for _ in apis]
        self.held: list[deque[Request]] = [deque() for _ in apis]
        self.in_flight: list[int] = [0 for _ in apis]  # per API: admitted + held at the gateway
        # Per API, the integral of in_flight over time up to flight_at (what the real gateway reports as
        # in_flight_seconds, so the operator's autoscaler sees the exact 1-s average, not a sample).
        self.flight_seconds: list[float] = [0.0 for _ in apis]
        self.flight_at: list[float] = [0.0 for _ in apis]
        self.on_gone = on_gone

    def _flight(self, a: int, delta: int, now_s: float) -> None:
        """Change API ``a``'s in-flight count at ``now_s``, integrating the count up to then."""
        self.flight_seconds[a] += self.in_flight[a] * (now_s - self.flight_at[a])
        self.flight_at[a] = now_s
        self.in_flight[a] += delta

    def in_flight_seconds(self, a: int, now_s: float) -> float:
        """The integral of API ``a``'s in-flight count from the start to ``now_s``."""
        return self.flight_seconds[a] + self.in_flight[a] * (now_s - self.flight_at[a])

    # -- replicas (called by the simulated engine) -------------------------------------------------------

    def add_ready(self, rep: SimReplica, now_s: float) -> None:
        """A replica finished its cold start: route to it, and release requests the gateway held."""
        rep.ready = True
        a = rep.api.index
        self.position[a][rep] = len(self.routable[a])
        self.routable[a].append(rep)
        self.load[a] += rep.in_flight
        self.orders[a].clear()
        self.routes[a].clear()
        held = self.held[a]
        while held:
            req = held.popleft()
            self._flight(a, -1, now_s)
            if now_s - req[0] > rep.api.hold_s:
                rep.api.stats.timed_out += 1
                continue
            self._route(rep.api, now_s, req)

    def drain(self, rep: SimReplica, now_s: float) -> None:
        """Stop routing new work to ``rep``; it goes when what it holds has finished."""
        if rep.draining or rep.dead:
            return
        rep.draining = True
        self._unroute(rep)
        if rep.in_flight == 0:
            self._gone(rep, now_s)

    def kill(self, rep: SimReplica, now_s: float) -> None:
        """The replica's node ended: what it held is retried elsewhere by the gateway (read-only requests)."""
        if rep.dead:
            return
        self._unroute(rep)
        rep.dead = True
        self._forget_holder(rep)
        self._forget_weights(rep)
        cut: list[Request] = list(rep.queue)
        for batch in rep.busy:
            cut.extend(batch)
        for waiters in rep.loading.values():
            cut.extend(waiters)
        api = rep.api
        self._flight(api.index, -rep.in_flight, now_s)
        rep.queue.clear()
        rep.busy.clear()
        rep.loading.clear()
        rep.in_flight = rep.executing = rep.calls = 0
        api.stats.retried += len(cut)
        for req in sorted(cut):
            self._route(api, now_s, req)
        if self.on_gone is not None:
            self.on_gone(rep, now_s)

    def _unroute(self, rep: SimReplica) -> None:
        a = rep.api.index
        if rep in self.position[a]:
            self.routable[a].remove(rep)
            self.position[a] = {r: i for i, r in enumerate(self.routable[a])}
            self.load[a] -= rep.in_flight
            self.orders[a].clear()
            self.routes[a].clear()

    def _forget_holder(self, rep: SimReplica) -> None:
        api = rep.api
        holding, routes = self.holding[api.index], self.routes[api.index]
        for key in rep.mem:
            m = api.model_of[key]
            holders = holding.get(m)
            if holders is not None:
                holders.discard(rep)
                routes.pop(m, None)

    def _forget_weights(self, rep: SimReplica) -> None:
        for memo in self.weights[rep.api.index].values():
            memo.pop(rep.id, None)

    def _gone(self, rep: SimReplica, now_s: float) -> None:
        rep.dead = True
        self._forget_holder(rep)
        self._forget_weights(rep)
        if self.on_gone is not None:
            self.on_gone(rep, now_s)

    def expire_held(self, now_s: float) -> None:
        """Requests held at the gateway past cold_start_timeout get their 503 (called each control tick)."""
        for api in self.apis:
            held = self.held[api.index]
            while held and now_s - held[0][0] > api.hold_s:
                held.popleft()
                self._flight(api.index, -1, now_s)
                api.stats.timed_out += 1

    # -- the event loop ----------------------------------------------------------------------------------

    def advance(self, times: Sequence[float], apis: Sequence[int], models: Sequence[int], zs: Sequence[float],
                until_s: float) -> None:  # fmt: skip
        """Process the given arrivals (sorted, all before ``until_s``) and every event before ``until_s``."""
        heap = self.heap
        api_models = self.apis
        route, finish = self._route, self._finish
        n = len(times)
        if len(api_models) == 1:
            api_models[0].stats.arrived += n
        else:
            for a, count in Counter(apis).items():
                api_models[a].stats.arrived += count
        i = 0
        next_t = times[0] if n else INF
        while True:
            if heap and heap[0][0] <= next_t:
                if heap[0][0] >= until_s:
                    break
                t, _, kind, rep, payload = heappop(heap)
                if kind == FINISH:
                    finish(rep, t, payload)
                elif kind == WAKE:
                    if rep.wake_at == t:
                        rep.wake_at = INF
                        self._pump(rep, t)
                else:
                    self._loaded(rep, t, payload)
            else:
                if i >= n:
                    break
                route(api_models[apis[i]], next_t, (next_t, models[i], zs[i]))
                i += 1
                next_t = times[i] if i < n else INF

    def _route(self, api: ApiModel, now_s: float, req: Request) -> None:
        a = api.index
        reps = self.routable[a]
        if not reps:
            held = self.held[a]
            if len(held) >= api.max_held:
                api.stats.rejected += 1
            else:
                held.append(req)
                self._flight(a, 1, now_s)
            return
        if api.multi and api.model_aware:
            m = req[1]
            route = self.routes[a].get(m)
            if route is None:
                route = self._model_route(a, m, reps)
            idx = model_routing.choose_model_replica(reps, api.keys[m], route[0], now_s, holders=route[1],
                                                     load=(len(reps), self.load[a]))  # fmt: skip
        else:
            idx = routing.choose_replica(reps, self.rng, now_s)
        if idx is None:
            api.stats.rejected += 1
            return
        rep = reps[idx]
        executing, admitted = rep.executing, rep.in_flight
        if not admission.admit(api.limits, executing, admitted - executing, rep.draining).admitted:
            api.stats.rejected += 1  # the replica's 503: the gateway passes it on, it does not retry it
            return
        rep.in_flight = admitted + 1
        self.load[a] += 1
        in_flight = self.in_flight  # self._flight(a, 1, now_s), inlined
        self.flight_seconds[a] += in_flight[a] * (now_s - self.flight_at[a])
        self.flight_at[a] = now_s
        in_flight[a] += 1
        if api.multi:
            key = api.names[req[1]]
            rep.frequency.record(key)
            rep.mem_dirty.add(key)  # its popularity changed (passed on to disk_dirty at the next memory plan)
            waiting = rep.loading.get(key)
            if waiting is not None:  # single flight: wait for the load under way (or blocked)
                api.stats.misses += 1
                waiting.append(req)
                entry = rep.mem.get(key)
                if entry is not None:
                    entry[2] += 1
                return
            entry = rep.mem.get(key)
            if entry is None:
                api.stats.misses += 1
                self._start_load(rep, key, now_s, [req])
                return
            api.stats.hits += 1
            entry[1] = now_s
            entry[2] += 1
        if api.batching is None and not rep.queue and rep.calls < api.max_calls:
            self._start(rep, now_s, [req])  # what _pump would do with this one request: run it now
            return
        rep.queue.append(req)
        self._pump(rep, now_s)

    def _model_route(self, a: int, m: int, reps: list[SimReplica]) -> tuple[tuple[int, ...], list[int]]:
        """Model ``m``'s rendezvous order over API ``a``'s routable replicas and its holders' indexes in it."""
        memo = self.orders[a].get(m)
        if memo is None:
            memo_w = self.weights[a].get(m)
            if memo_w is None:
                memo_w = self.weights[a][m] = {}
            order = model_routing.rendezvous_order(self.apis[a].keys[m], [r.id for r in reps], memo_w)
            rank = [0] * len(order)
            for r_, i_ in enumerate(order):
                rank[i_] = r_
            memo = self.orders[a][m] = (order, rank)
        order, rank = memo
        holding = self.holding[a].get(m)
        holders: list[int] = []
        if holding:
            pos = self.position[a]
            holders = [pos[r] for r in holding if r in pos]
            if len(holders) > 1:
                holders.sort(key=rank.__getitem__)
        route = self.routes[a][m] = (order, holders)
        return route

    def _pump(self, rep: SimReplica, now_s: float) -> None:
        """Start calls while slots are free (and, with batching, while the batcher says fire)."""
        api = rep.api
        queue = rep.queue
        limits = api.batching
        if limits is None:
            while queue and rep.calls < api.max_calls:
                self._start(rep, now_s, [queue.popleft()])
            return
        while queue:
            d = batching.decide_flush(limits, len(queue), queue[0][0], api.max_calls - rep.calls, now_s)
            if d.batch_size:
                self._start(rep, now_s, [queue.popleft() for _ in range(d.batch_size)])
                continue
            if d.wake_at_s is not None and d.wake_at_s < rep.wake_at:
                rep.wake_at = d.wake_at_s
                heappush(self.heap, (d.wake_at_s, next(self.seq), WAKE, rep, None))
            return

    def _start(self, rep: SimReplica, now_s: float, batch: list[Request]) -> None:
        api = rep.api
        _, m, z = batch[0]
        k = m if m >= 0 else 0
        n = len(batch)
        dur = exp(api.mu[k] + api.sigma[k] * z) + api.per_item_s * (n - 1)
        rep.calls += 1
        rep.executing += n
        rep.busy.append(batch)
        api.stats.busy_s += dur
        heappush(self.heap, (now_s + dur, next(self.seq), FINISH, rep, batch))

    def _finish(self, rep: SimReplica, now_s: float, batch: list[Request]) -> None:
        if rep.dead:
            return  # its requests were retried when it died
        api = rep.api
        stats = api.stats
        a = api.index
        n = len(batch)
        rep.busy.remove(batch)
        rep.calls -= 1
        rep.executing -= n
        rep.in_flight -= n
        if not rep.draining:
            self.load[a] -= n
        in_flight = self.in_flight  # self._flight(a, -n, now_s), inlined
        self.flight_seconds[a] += in_flight[a] * (now_s - self.flight_at[a])
        self.flight_at[a] = now_s
        in_flight[a] -= n
        timeout = api.timeout_s
        lat = stats.latencies_s
        for req in batch:
            d = now_s - req[0]
            if d > timeout:
                stats.timed_out += 1
            else:
                stats.served += 1
                lat.append(d)
        if api.multi:
            mem, names, dirty = rep.mem, api.names, rep.mem_dirty
            for req in batch:
                key = names[req[1]]
                mem[key][2] -= 1
                dirty.add(key)
        if rep.blocked:
            self._retry_blocked(rep, now_s)
        if rep.draining and rep.in_flight == 0:
            self._gone(rep, now_s)
            return
        if rep.queue:
            self._pump(rep, now_s)

    # -- model cache -------------------------------------------------------------------------------------

    def _start_load(self, rep: SimReplica, key: str, now_s: float, waiters: list[Request]) -> None:
        api = rep.api
        freq = _no_frequency if api.lru else rep.frequency
        if rep.agings != rep.frequency.agings:  # every popularity count changed: every entry is stale
            rep.agings = rep.frequency.agings
            rep.mem_dirty.update(rep.mem)
            rep.disk_dirty.update(rep.disk)
        mem, cached = rep.mem, rep.mem_entries
        dirty = rep.mem_dirty
        for k in dirty:
            e = mem.get(k)
            if e is not None:  # in place: the entries keep the cache's own (insertion) order
                cached[k] = eviction.CacheEntry(k, e[0], e[1], e[2] + (1 if e[3] else 0), freq(k))
        rep.disk_dirty |= dirty  # a request marks its key dirty in memory only: its popularity changed in both
        dirty.clear()
        decision = eviction.plan_eviction(list(cached.values()), api.mem_budget, api.size)
        if decision.verdict is eviction.Verdict.TOO_LARGE:
            n = len(waiters)
            api.stats.rejected += n
            rep.in_flight -= n
            if not rep.draining:
                self.load[api.index] -= n
            self._flight(api.index, -n, now_s)
            return
        rep.loading[key] = waiters
        if decision.verdict is eviction.Verdict.BLOCKED_BY_PINS:
            if key not in rep.blocked:
                rep.blocked.append(key)
            return
        holding, routes = self.holding[api.index], self.routes[api.index]
        for k in decision.evict:
            del mem[k]
            del cached[k]
            rep.held.discard(k.encode())
            m = api.model_of[k]
            holders = holding.get(m)
            if holders is not None:
                holders.discard(rep)
                routes.pop(m, None)
        mem[key] = [api.size, now_s, len(waiters), True]
        cached[key] = eviction.CacheEntry(key, api.size, now_s, len(waiters) + 1, freq(key))
        rep.mem_dirty.add(key)
        dur = api.load_s
        on_disk = rep.disk.get(key)
        rep.disk_dirty.add(key)
        if on_disk is not None:
            on_disk[1] = now_s
        else:
            dur += api.download_s
            disk, disk_cached = rep.disk, rep.disk_entries
            for k in rep.disk_dirty:
                e = disk.get(k)
                if e is not None:
                    disk_cached[k] = eviction.CacheEntry(k, e[0], e[1], 0, freq(k))
            rep.disk_dirty.clear()
            d = eviction.plan_eviction(list(disk_cached.values()), api.disk_budget, api.size)
            if d.fits:
                for k in d.evict:
                    del disk[k]
                    del disk_cached[k]
                disk[key] = [api.size, now_s]
                disk_cached[key] = eviction.CacheEntry(key, api.size, now_s, 0, freq(key))
                rep.disk_dirty.add(key)
        heappush(self.heap, (now_s + dur, next(self.seq), LOADED, rep, key))

    def _retry_blocked(self, rep: SimReplica, now_s: float) -> None:
        blocked, rep.blocked = rep.blocked, []
        for key in blocked:
            self._start_load(rep, key, now_s, rep.loading.pop(key))

    def _loaded(self, rep: SimReplica, now_s: float, key: str) -> None:
        if rep.dead:
            return
        entry = rep.mem[key]
        entry[1] = now_s
        entry[3] = False
        rep.mem_dirty.add(key)
        rep.held.add(key.encode())
        a, m = rep.api.index, rep.api.model_of[key]
        self.holding[a].setdefault(m, set()).add(rep)
        self.routes[a].pop(m, None)
        rep.queue.extend(rep.loading.pop(key))
        self._pump(rep, now_s)
