"""The gateway's public HTTP application (``GatewayApp``): routes ``POST /<api>[/...]`` to a replica of that API.

This module owns the routing table's updates, the request dispatch (``handle``) and the per-API checks
around forwarding (``_forward``); the forwarding itself, with replica choice, retries and stream relay, is
``gateway_proxy``'s (the base of ``GatewayApp``), and API-key checks are ``gateway_auth``'s.

- No replica can take the request (all dead, or removed and their replacements not ready yet): the request
  waits, counted in flight, for a routing table with a ready replica (``ColdStartHold.wait_ready``), within
  its own timeout, instead of being refused; then 503 + Retry-After. A table whose replicas are all draining
  (a deliberate stop) gets 503 + Retry-After at once.
- A gateway restarted from its saved table (``gateway_routes.RoutesFile``) answers an API it does not know
  with 503 + Retry-After, not 404, until the operator's first push: the saved table may be a push behind.
- Per-API limits from the routing table: body size (413 before forwarding), request timeout (+ a margin
  over the replica's own, so the replica's 504 normally wins) -> 504, API keys (salted sha256,
  ``api_key_hashes``, compared in constant time) -> 401, also for ``GET /<api>``; ``GET /metrics`` behind
  ``metrics_key_hashes`` when set. Every request to a replica carries the platform secret (``platform_secret``).
- Splitters (``gateway_splitters``): ``POST /<splitter>[/...]`` picks a backend API and then takes exactly the
  path of a request to that API (``_forward``); shadow copies go out fire and forget. The Open Inference
  Protocol (``gateway_v2``): ``/v2/models/<api>/...`` is forwarded, path unchanged, to a V2 API's replicas.
  Both are looked up only after the API table misses, so a plain API request pays nothing for them.
- Also ``GET /<api>`` (status; its ``endpoint`` is built from the configured ``public_url``, never from the
  request's Host header), ``GET /healthz``, ``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from thrifty.dataplane import gateway_v2
from thrifty.dataplane.gateway_auth import bearer_matches, unauthorized
from thrifty.dataplane.gateway_models import ModelMetricsCollector, models_json
from thrifty.dataplane.gateway_proxy import RESET_RETRIES, RETRY_AFTER, ReplicaProxy
from thrifty.dataplane.gateway_routes import (
    DEFAULT_MAX_PAYLOAD,
    ApiRoute,
    RoutesDoc,
    build_routes,
    removed_endpoints,
)
from thrifty.dataplane.gateway_splitters import ShadowSender, SplitterRoute, build_splitters
from thrifty.dataplane.gateway_stats import GatewayCollector, SplitterCollector
from thrifty.dataplane.http_messages import (
    Request,
    RequestIds,
    Response,
    error_response,
    json_response,
)
from thrifty.dataplane.upstream import UpstreamPool
from thrifty.policy.routing import RandomSource

__all__ = ["RESET_RETRIES", "GatewayApp"]

_OK = json_response(200, {"status": "ok"})


class GatewayApp(ReplicaProxy):
    def __init__(
        self,
        pool: UpstreamPool,
        *,
        rng: RandomSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_margin_s: float = 0.5,
        model_routing: bool = True,
        reset_retries: int = RESET_RETRIES,
        public_url: str = "",
        replica_secret: bytes | None = None,
        metrics_key_hashes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            pool,
            rng=rng if rng is not None else random.Random(),
            clock=clock,
            timeout_margin_s=timeout_margin_s,
            model_routing=model_routing,
            reset_retries=reset_retries,
            replica_secret=replica_secret,
        )
        self._metrics_keys = metrics_key_hashes  # empty: /metrics is open, as Prometheus expects
        self.public_url = public_url.rstrip("/")  # e.g. http://host:port: the endpoint shown for each API
        self.boot_id = os.urandom(8).hex()  # a new one per process: the operator sees counters restart
        self.routes_pushed = False  # until the operator's first push, an unknown API may just be unsaved yet
        self.splitters: dict[bytes, SplitterRoute] = {}
        self.shadow = ShadowSender(self._forward, clock)
        self._request_ids = RequestIds(b"gw" + os.urandom(4).hex().encode("ascii") + b"-")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(lambda: list(self.routes.values()), clock))
        self.registry.register(ModelMetricsCollector(lambda: list(self.routes.values())))
        self.registry.register(SplitterCollector(lambda: list(self.splitters.values())))

    # -- routing table --------------------------------------------------------------------------------------
    def set_routes(self, doc: RoutesDoc, *, pushed: bool = True) -> None:
        """Replace the whole table at once (in-flight requests keep the routes they started with).

        ``pushed=False``: the table saved by a previous gateway process, loaded before listening."""
        self.routes_pushed = self.routes_pushed or pushed
        old = self.routes
        self.routes = routes = build_routes(doc, old, self._clock())
        self.splitters = build_splitters(doc, self.splitters, routes)
        for host, port in removed_endpoints(old, self.routes):
            self._pool.close_host(host, port)
        self._cold.routes_changed(self.routes)

    def stats_json(self) -> dict[str, object]:
        now = self._clock()
        apis: dict[str, object] = {}
        for r in self.routes.values():
            apis[r.name] = doc = r.stats.to_json(r, now)
            if r.multi_model:
                doc["models"] = models_json(r)
        splitters = {s.name: s.stats.to_json() for s in self.splitters.values()}
        return {"boot_id": self.boot_id, "apis": apis, "splitters": splitters}

    # -- HTTP ----------------------------------------------------------------------------------------------
    def body_limit(self, request: Request) -> int:
        route = self.routes.get(_api_name(request.path))
        if route is not None:
            return route.max_payload
        name = _api_name(request.path)
        if name == b"v2":
            name = gateway_v2.model_name(request.path) or b""
            route = self.routes.get(name)
            if route is not None:
                return route.max_payload
        split = self.splitters.get(name)
        return split.max_payload if split is not None else DEFAULT_MAX_PAYLOAD

    async def handle(self, request: Request) -> Response:
        path = request.path
        slash = path.find(b"/", 1)
        name = path[1:] if slash < 0 else path[1:slash]
        route = self.routes.get(name)
        method = request.method
        if route is not None:
            if method == b"POST":
                return await self._forward(request, route, b"/" if slash < 0 else path[slash:])
            if method == b"GET" and slash < 0:
                if route.key_hashes and not self._authorized(request, route):
                    return unauthorized(self._request_id(request))  # its description is behind its keys
                return self._api_status(request, route)
            return error_response(
                405, "method_not_allowed", "predict with POST", self._request_id(request), [(b"allow", b"POST")]
            )
        if method == b"GET" and path == b"/healthz":
            return _OK
        if method == b"GET" and path == b"/metrics":
            if self._metrics_keys and not bearer_matches(request, self._metrics_keys):
                return unauthorized(self._request_id(request))
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode("ascii"))
        split = self.splitters.get(name)
        if split is not None:
            if method == b"POST":
                return await self._split(request, split, b"/" if slash < 0 else path[slash:])
            return error_response(
                405, "method_not_allowed", "predict with POST", self._request_id(request), [(b"allow", b"POST")]
            )
        if name == b"v2":
            return await self._v2(request)
        api = name.decode("utf-8", "replace")
        if not self.routes_pushed:
            return error_response(
                503, "gateway_starting", f"the gateway is starting and does not know {api!r} yet",
                self._request_id(request), RETRY_AFTER,
            )  # fmt: skip
        return error_response(404, "api_not_found", f"no API named {api!r} is deployed", self._request_id(request))

    async def _split(self, request: Request, split: SplitterRoute, fwd_path: bytes) -> Response:
        """A splitter's request: choose the backend, copy to the shadow, then the backend API's own path."""
        backend = split.pick(request)
        if split.shadow is not None and split.take_shadow():
            shadow = split.shadow
            self.shadow.send(request, self.routes.get(shadow), fwd_path, split.stats, shadow.decode("utf-8"))
        route = self.routes.get(backend)
        start = self._clock()
        if route is None:  # the table always lists a splitter's backends; kept for a table pushed by hand
            resp = error_response(
                503, "no_replica_available", f"backend {backend.decode()!r} is not routed", self._request_id(request),
                RETRY_AFTER,
            )  # fmt: skip
        else:
            resp = await self._forward(request, route, fwd_path)
        split.stats.backend(route.name if route is not None else backend.decode()).record(
            resp.status, self._clock() - start
        )
        resp.headers = [*(resp.headers or ()), (b"x-thrifty-backend", backend)]
        return resp

    async def _v2(self, request: Request) -> Response:
        """``/v2/...`` (no API is named v2): the server's own answers, else a V2 API or splitter's request."""
        path = request.path
        answer = gateway_v2.server_answer(request.method, path, self.routes_pushed)
        if answer is not None:
            return answer
        name = gateway_v2.model_name(path)
        if name is None:
            return error_response(404, "not_found", "no such V2 endpoint", self._request_id(request))
        route = self.routes.get(name)
        if route is not None and route.v2:
            return await self._forward(request, route, path)
        split = self.splitters.get(name)
        if split is not None and split.v2:
            return await self._split(request, split, path)
        return gateway_v2.not_found(name)

    def _api_status(self, request: Request, route: ApiRoute) -> Response:
        doc: dict[str, object] = {
            "name": route.name,
            "replicas_ready": route.replicas_ready,
            "endpoint": f"{self.public_url}/{route.name}",
        }
        if route.multi_model:  # an API behind keys answers this to its key holders only (handle)
            doc["models"] = {name: m["versions"] for name, m in models_json(route).items()}
        return json_response(200, doc)

    def _request_id(self, request: Request) -> bytes:
        return self._request_ids.of(request)

    def _authorized(self, request: Request, route: ApiRoute) -> bool:
        return bearer_matches(request, route.key_hashes)

    async def _forward(self, request: Request, route: ApiRoute, fwd_path: bytes) -> Response:
        stats = route.stats
        start = self._clock()
        rid = self._request_id(request)
        if route.key_hashes and not self._authorized(request, route):
            resp = error_response(
                401, "unauthorized", "missing or wrong API key", rid, [(b"www-authenticate", b"Bearer")]
            )
            stats.record(resp.status, self._clock() - start)
            return resp
        stats.enter(start)
        try:
            if route.hold_when_empty and not route.replicas_ready:
                held = await self._cold.hold(route, rid)  # scaled to zero: wait for a replica, bounded
                if isinstance(held, Response):
                    resp = held
                else:
                    resp = await self._proxy(request, held, fwd_path, rid, self._clock())
            else:
                resp = await self._proxy(request, route, fwd_path, rid, start)
        finally:
            end = self._clock()
            stats.leave(end)
        stats.record(resp.status, end - start)
        return resp


def _api_name(path: bytes) -> bytes:
    slash = path.find(b"/", 1)
    return path[1:] if slash < 0 else path[1:slash]
