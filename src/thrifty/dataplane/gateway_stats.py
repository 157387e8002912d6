"""The gateway's per-API figures: plain counters on the hot path, read by the admin API and /metrics.

Recording a request is a few integer additions and one bisect; nothing touches prometheus_client until a
scrape, when ``GatewayCollector`` turns the counters into metric families.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from thrifty.dataplane.gateway_routes import ApiRoute
    from thrifty.dataplane.gateway_splitters import SplitterRoute
    from thrifty.dataplane.http_limits import HttpServerStats

LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class ApiStats:
    __slots__ = ("_in_flight_integral", "_last_change_s", "buckets", "codes", "count", "in_flight", "retries", "sum_s")

    def __init__(self) -> None:
        self.in_flight = 0
        # Integral of in_flight over time: the operator divides its growth between two snapshots by the time
        # between them and gets the exact average in-flight, however bursty the traffic.
        self._in_flight_integral = 0.0
        self._last_change_s = 0.0
        self.codes = [0, 0, 0, 0, 0, 0]  # responses by status // 100
        self.buckets = [0] * (len(LATENCY_BOUNDS_S) + 1)  # last = +Inf
        self.sum_s = 0.0
        self.count = 0
        self.retries = 0

    def enter(self, now_s: float) -> None:
        self._in_flight_integral += self.in_flight * (now_s - self._last_change_s)
        self._last_change_s = now_s
        self.in_flight += 1

    def leave(self, now_s: float) -> None:
        self._in_flight_integral += self.in_flight * (now_s - self._last_change_s)
        self._last_change_s = now_s
        self.in_flight -= 1

    def in_flight_seconds(self, now_s: float) -> float:
        return self._in_flight_integral + self.in_flight * max(0.0, now_s - self._last_change_s)

    def record(self, status: int, latency_s: float) -> None:
        self.codes[status // 100] += 1
        self.buckets[bisect_left(LATENCY_BOUNDS_S, latency_s)] += 1
        self.sum_s += latency_s
        self.count += 1

    def to_json(self, route: ApiRoute, now_s: float) -> dict[str, Any]:
        c = self.codes
        return {
            "in_flight": self.in_flight,
            "in_flight_seconds": self.in_flight_seconds(now_s),
            "requests": {"2xx": c[2], "4xx": c[4], "5xx": c[5]},
            "latency": {
                "bounds_s": list(LATENCY_BOUNDS_S),
                "counts": list(self.buckets),
                "sum_s": self.sum_s,
                "count": self.count,
            },
            "retries": self.retries,
            "replicas": {r.id: {"in_flight": r.in_flight} for r in route.replicas},
            **({"models_recent": route.recent_models.count(now_s)} if route.recent_models is not None else {}),
        }


def _latency_json(stats: ApiStats) -> dict[str, Any]:
    counts = list(stats.buckets)
    return {"bounds_s": list(LATENCY_BOUNDS_S), "counts": counts, "sum_s": stats.sum_s, "count": stats.count}


class SplitterStats:
    """One splitter's figures: per backend, the requests it served through the splitter (status and latency
    as the client saw them); per shadow API, what its copies got, and the copies dropped (queue full) or
    with no route. The APIs' own ``ApiStats`` count these requests too (autoscaling sees them)."""

    __slots__ = ("backends", "shadow", "shadow_dropped")

    def __init__(self) -> None:
        self.backends: dict[str, ApiStats] = {}
        self.shadow: dict[str, ApiStats] = {}
        self.shadow_dropped = 0

    def backend(self, api: str) -> ApiStats:
        stats = self.backends.get(api)
        if stats is None:
            stats = self.backends[api] = ApiStats()
        return stats

    def shadow_of(self, api: str) -> ApiStats:
        stats = self.shadow.get(api)
        if stats is None:
            stats = self.shadow[api] = ApiStats()
        return stats

    def to_json(self) -> dict[str, Any]:
        def one(s: ApiStats) -> dict[str, Any]:
            c = s.codes
            return {"requests": {"2xx": c[2], "4xx": c[4], "5xx": c[5]}, "latency": _latency_json(s)}

        return {
            "backends": {name: one(s) for name, s in self.backends.items()},
            "shadow": {name: one(s) for name, s in self.shadow.items()},
            "shadow_dropped": self.shadow_dropped,
        }


class GatewayCollector(Collector):
    """Builds the Prometheus families from the live routing table at scrape time."""

    def __init__(self, routes: Callable[[], Iterable[ApiRoute]], clock: Callable[[], float] | None = None) -> None:
        self._routes = routes
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "thrifty_requests", "Requests answered by the gateway.", labels=["api", "code_class"]
        )
        duration = HistogramMetricFamily("thrifty_request_duration_seconds", "Gateway request latency.", labels=["api"])
        in_flight = GaugeMetricFamily("thrifty_in_flight", "Requests in flight at the gateway.", labels=["api"])
        retries = CounterMetricFamily("thrifty_retries", "Requests retried on another replica.", labels=["api"])
        ready = GaugeMetricFamily("thrifty_replicas_ready", "Replicas taking new requests.", labels=["api"])
        recent = GaugeMetricFamily(
            "thrifty_models_recent", "Distinct models asked for within the API's keep_warm window.", labels=["api"]
        )
        for route in self._routes():
            s = route.stats
            for code_class in (2, 4, 5):
                requests.add_metric([route.name, f"{code_class}xx"], s.codes[code_class])
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip(LATENCY_BOUNDS_S, s.buckets, strict=False):
                cumulative += n
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", s.count))
            duration.add_metric([route.name], buckets, s.sum_s)
            in_flight.add_metric([route.name], s.in_flight)
            retries.add_metric([route.name], s.retries)
            ready.add_metric([route.name], route.replicas_ready)
            if route.recent_models is not None and self._clock is not None:
                recent.add_metric([route.name], route.recent_models.count(self._clock()))
        yield from (requests, duration, in_flight, retries, ready, recent)


class SplitterCollector(Collector):
    """Per splitter: requests per backend and code class, shadow copies per shadow API, copies dropped."""

    def __init__(self, splitters: Callable[[], Iterable[SplitterRoute]]) -> None:
        self._splitters = splitters

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "thrifty_splitter_requests",
            "Requests a splitter sent to each backend.",
            labels=["splitter", "backend", "code_class"],
        )
        shadow = CounterMetricFamily(
            "thrifty_shadow_requests",
            "Shadow copies answered, per shadow API.",
            labels=["splitter", "api", "code_class"],
        )
        dropped = CounterMetricFamily(
            "thrifty_shadow_dropped", "Shadow copies dropped (too many in flight).", labels=["splitter"]
        )
        for split in self._splitters():
            st = split.stats
            for family, per_api in ((requests, st.backends), (shadow, st.shadow)):
                for api, s in per_api.items():
                    for code_class in (2, 4, 5):
                        family.add_metric([split.name, api, f"{code_class}xx"], s.codes[code_class])
            dropped.add_metric([split.name], st.shadow_dropped)
        yield from (requests, shadow, dropped)


class HttpServerCollector(Collector):
    """The public listener's connection figures (``HttpServer.stats``), read at scrape time."""

    def __init__(self, stats: HttpServerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield GaugeMetricFamily("thrifty_open_connections", "Client connections open.", value=s.open_connections)
        yield CounterMetricFamily(
            "thrifty_connections_refused", "Connections answered 503 over max connections.", value=s.connections_refused
        )
        timeouts = CounterMetricFamily(
            "thrifty_request_timeouts", "Requests answered 408: head or body not received in time.", labels=["part"]
        )
        timeouts.add_metric(["head"], s.head_timeouts)
        timeouts.add_metric(["body"], s.body_timeouts)
        yield timeouts
        yield CounterMetricFamily(
            "thrifty_idle_connections_closed", "Keep-alive connections closed when idle.", value=s.idle_closes
        )
        yield CounterMetricFamily(
            "thrifty_write_timeouts", "Connections aborted: the client read no response.", value=s.write_timeouts
        )
