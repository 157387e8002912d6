"""The gateway's side of multi-model APIs: which models each replica holds, model-aware choice, metrics.

- **Polling.** :class:`ModelPoller` asks every replica of every multi-model API for ``GET /_thrifty/stats``
  once per ``interval_s`` (1 s) over the gateway's upstream pool, and keeps on the replica's state the
  models it holds in memory (``held``, for routing) and its per-model cache counters (for ``/metrics`` and
  the admin stats). A replica that does not answer keeps its last report; one that leaves the table is
  forgotten with it. The held sets are at most one interval old: routing tolerates that (a request sent to
  a replica that just evicted the model is a miss, not an error; and a cold model's first requests all go
  to the same replica by rendezvous hashing whether or not the report has arrived).
- **Choice.** :func:`choose_for_model` applies ``policy.model_routing`` with the model's rendezvous order
  over the route's replicas, computed once per (route table, model) and cached on the route.
- **Metrics.** :class:`ModelMetricsCollector` turns the last reports into Prometheus families labelled
  ``api``, ``model`` and ``replica`` (counters restart when a replica does, as Prometheus expects).

Why the gateway and not the replica serves these metrics: the gateway needs the held lists anyway, and
one scrape target (``GET /metrics`` on the gateway) then has every figure of the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Container, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from thrifty.dataplane.platform_secret import header_line
from thrifty.dataplane.upstream import UpstreamError, UpstreamPool
from thrifty.models.errors import ModelNameError
from thrifty.models.names import parse_model_path
from thrifty.policy.model_routing import choose_model_replica, rendezvous_order

if TYPE_CHECKING:
    from thrifty.dataplane.gateway_routes import ApiRoute, ReplicaState

_log = logging.getLogger("thrifty.gateway")

MAX_CACHED_ORDERS = 4096  # rendezvous orders kept per route (a table change starts afresh anyway)
POLL_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 2.0


@functools.lru_cache(maxsize=4096)
def model_request_key(fwd_path: bytes) -> tuple[bytes, bytes] | None:
    """(model name, held-set key) of ``/<model>`` or ``/<model>/<version>``; None for any other path.

    Read by ``models.parse_model_path``, exactly as the replica reads it (percent-decoding, ``02`` is 2,
    ``latest`` is the name alone). The name is what rendezvous hashing uses (every version of a model
    lands on the same replicas); the key is what a replica must hold: any version (``name``) or the pinned
    one (``name/version``). Cached: a busy API's requests name the same few paths over and over.
    """
    try:
        name, version = parse_model_path(fwd_path)
    except ModelNameError:
        return None  # the replica answers 400 for this path; any replica will do
    raw = name.encode("ascii")
    return raw, (raw if version is None else b"%s/%d" % (raw, version))


def model_order(route: ApiRoute, name: bytes) -> tuple[int, ...]:
    orders = route.model_orders
    order = orders.get(name)
    if order is None:
        if len(orders) >= MAX_CACHED_ORDERS:
            orders.clear()
        order = orders[name] = rendezvous_order(name, [r.id for r in route.replicas])
    return order


def choose_for_model(route: ApiRoute, name: bytes, key: bytes, now_s: float, tried: Container[int] = ()) -> int | None:
    return choose_model_replica(route.replicas, key, model_order(route, name), now_s, tried)


def held_keys(held: Iterable[str]) -> frozenset[bytes]:
    """The set a replica's ``["name/version", ...]`` report stands for: each ``name/version`` and ``name``."""
    keys: set[bytes] = set()
    for ref in held:
        raw = ref.encode("utf-8", "replace")
        keys.add(raw)
        keys.add(raw.partition(b"/")[0])
    return frozenset(keys)


class ModelPoller:
    """Polls the replicas of multi-model APIs for the models they hold (see the module docstring)."""

    def __init__(
        self,
        pool: UpstreamPool,
        routes: Callable[[], Iterable[ApiRoute]],
        *,
        interval_s: float = POLL_INTERVAL_S,
        timeout_s: float = POLL_TIMEOUT_S,
        secret: bytes | None = None,
    ) -> None:
        self._pool = pool
        self._secret_line = header_line(secret) if secret else b""  # replicas answer the gateway only
        self._routes = routes
        self.interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._polls: dict[ReplicaState, asyncio.Task[None]] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        polls = list(self._polls.values())
        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)

    async def _run(self) -> None:
        # Each replica is polled on its own: a slow one (busy, or on its way out) only delays its own
        # report, never the others'; it is skipped while its previous poll has not answered.
        loop = asyncio.get_running_loop()
        while True:
            for rep in self._targets():
                if rep not in self._polls:
                    task = self._polls[rep] = loop.create_task(self._poll(rep))
                    task.add_done_callback(functools.partial(self._polled, rep))
            await asyncio.sleep(self.interval_s)

    def _polled(self, rep: ReplicaState, task: asyncio.Task[None]) -> None:
        self._polls.pop(rep, None)
        if not task.cancelled() and task.exception() is not None:  # a bad report must not go unnoticed
            _log.error("polling replica %s for its models failed", rep.id, exc_info=task.exception())

    def _targets(self) -> list[ReplicaState]:
        return [r for route in self._routes() if route.multi_model for r in route.replicas if not r.draining]

    async def poll_once(self) -> None:
        """One round: every replica of every multi-model API, concurrently (tests; the loop polls each alone)."""
        replicas = self._targets()
        if replicas:
            await asyncio.gather(*(self._poll(r) for r in replicas))

    async def _poll(self, rep: ReplicaState) -> None:
        head = b"".join(
            (
                b"GET /_thrifty/stats HTTP/1.1\r\nhost: ",
                rep.authority,
                b"\r\n",
                self._secret_line,
                b"content-length: 0\r\n\r\n",
            )
        )
        try:
            resp = await self._pool.request(rep.host, rep.port, head, self._timeout_s)
        except UpstreamError:
            return  # keep the last report; the replica may be busy or on its way out
        if resp.status != 200:
            return
        try:
            stats = orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            return
        held = stats.get("models") if isinstance(stats, dict) else None
        if not isinstance(held, list):
            return
        rep.held = held_keys(str(h) for h in held)
        rep.held_refs = tuple(str(h) for h in held)
        model_stats = stats.get("model_stats")
        rep.model_stats = model_stats if isinstance(model_stats, dict) else {}
        rep.slots = max(1, _int(stats.get("slots")))


def models_json(route: ApiRoute) -> dict[str, Any]:
    """Per model, across the replicas' last reports: versions, which replicas hold which versions, counters."""
    out: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        e = out.get(name)
        if e is None:
            e = out[name] = {"versions": set(), "replicas": {}, "hits": 0, "misses": 0, "loads": 0, "evictions": 0}
        return e

    for rep in route.replicas:
        for name, s in rep.model_stats.items():
            if not isinstance(s, dict):
                continue
            e = entry(str(name))
            e["versions"].update(v for v in s.get("versions", []) if isinstance(v, int))
            e["hits"] += _int(s.get("hits"))
            e["misses"] += _int(s.get("misses"))
            e["loads"] += _int(s.get("load_seconds_count"))
            e["evictions"] += _int(s.get("memory_evictions"))
        for ref in rep.held_refs:
            name, _, version = ref.partition("/")
            e = entry(name)
            if version.isdigit():
                e["replicas"].setdefault(rep.id, []).append(int(version))
                e["versions"].add(int(version))
    return {name: {**e, "versions": sorted(e["versions"])} for name, e in sorted(out.items())}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


_COUNTERS = (
    ("thrifty_model_hits", "Requests that found the model in a replica's memory.", "hits"),
    ("thrifty_model_misses", "Requests that waited for a model load.", "misses"),
    ("thrifty_model_load_failures", "Model downloads or loads that failed.", "load_failures"),
    ("thrifty_model_downloads", "Model versions downloaded to a replica's disk cache.", "downloads"),
    ("thrifty_model_download_bytes", "Bytes of model files downloaded.", "download_bytes"),
)


class ModelMetricsCollector(Collector):
    """Per-model cache figures of every multi-model API, from the replicas' last reports."""

    def __init__(self, routes: Callable[[], Iterable[ApiRoute]]) -> None:
        self._routes = routes

    def collect(self) -> Iterator[Metric]:
        labels = ["api", "model", "replica"]
        counters = [(CounterMetricFamily(name, doc, labels=labels), field) for name, doc, field in _COUNTERS]
        load = SummaryMetricFamily(
            "thrifty_model_load_seconds", "Time to download (when not on disk) and load a model.", labels=labels
        )
        evictions = CounterMetricFamily(
            "thrifty_model_evictions", "Model versions evicted from a cache tier.", labels=[*labels, "tier"]
        )
        memory = GaugeMetricFamily("thrifty_model_memory_bytes", "Bytes of the model in memory.", labels=labels)
        disk = GaugeMetricFamily("thrifty_model_disk_bytes", "Bytes of the model on local disk.", labels=labels)
        held = GaugeMetricFamily("thrifty_models_held", "Model versions held in memory.", labels=["api", "replica"])
        for route in self._routes():
            if not route.multi_model:
                continue
            for rep in route.replicas:
                held.add_metric([route.name, rep.id], len(rep.held_refs))
                for name, s in rep.model_stats.items():
                    if not isinstance(s, dict):
                        continue
                    values = [route.name, str(name), rep.id]
                    for family, field in counters:
                        family.add_metric(values, _num(s.get(field)))
                    load.add_metric(values, _int(s.get("load_seconds_count")), _num(s.get("load_seconds_sum")))
                    evictions.add_metric([*values, "memory"], _num(s.get("memory_evictions")))
                    evictions.add_metric([*values, "disk"], _num(s.get("disk_evictions")))
                    memory.add_metric(values, _num(s.get("memory_bytes")))
                    disk.add_metric(values, _num(s.get("disk_bytes")))
        yield from (family for family, _ in counters)
        yield from (load, evictions, memory, disk, held)
