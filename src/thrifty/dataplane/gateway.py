"""The gateway's public HTTP application: routes ``POST /<api>[/...]`` to a replica of that API.

- Replica choice: ``policy.routing.choose_replica`` (power of two choices on requests in flight); for a
  multi-model API, ``policy.model_routing`` through ``gateway_models`` (replicas that hold the model first,
  under a load bound, else rendezvous hashing), unless ``model_routing`` is off (a benchmark baseline).
- Retries, on another replica, exactly when the request cannot have been processed, the replica said so, or
  the replica was cut off before answering: the connection was refused (the replica is also ejected for a
  moment), the replica answered 503 with ``X-Thrifty-Draining`` (or ``X-Thrifty-Retry-Elsewhere``), or the
  connection closed or reset before a single response byte (a replica killed under load, a dying node). A
  prediction is read-only, so running it again elsewhere is safe; a response that had started is never
  retried (502). Resets from replicas that are not draining are bounded: a request is retried after at most
  ``reset_retries`` of them (default 1), so a poison request, one that crashes every replica it reaches,
  kills at most ``1 + reset_retries`` replicas and then gets 502.
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
- Streamed responses (a generator predictor's, chunked: ``replica_streaming``): forwarded chunk by chunk as
  they arrive (``upstream.UpstreamStream``, with back-pressure across both hops), counted in flight for the
  replica and the API until the stream ends, each gap bounded by the API's ``stream_idle_timeout``; a stream
  that has started is never retried (a cut-off replica cuts the client's stream).
- Also ``GET /<api>`` (status; its ``endpoint`` is built from the configured ``public_url``, never from the
  request's Host header), ``GET /healthz``, ``GET /metrics`` (Prometheus text).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from thrifty.dataplane import gateway_v2
from thrifty.dataplane.api_key_hashes import key_matches
from thrifty.dataplane.cold_start import ColdStartHold
from thrifty.dataplane.gateway_models import ModelMetricsCollector, choose_for_model, model_request_key, models_json
from thrifty.dataplane.gateway_routes import (
    DEFAULT_MAX_PAYLOAD,
    ApiRoute,
    ReplicaState,
    RoutesDoc,
    build_routes,
    removed_endpoints,
)
from thrifty.dataplane.gateway_splitters import ShadowSender, SplitterRoute, build_splitters
from thrifty.dataplane.gateway_stats import GatewayCollector, SplitterCollector
from thrifty.dataplane.http_messages import (
    Headers,
    Request,
    RequestIds,
    Response,
    StreamResponse,
    error_response,
    json_response,
)
from thrifty.dataplane.platform_secret import HEADER as SECRET_HEADER
from thrifty.dataplane.platform_secret import header_line
from thrifty.dataplane.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResetError,
    UpstreamResponse,
    UpstreamTimeoutError,
)
from thrifty.policy.routing import RandomSource, choose_replica

# Hop-by-hop headers (RFC 9110 7.6.1) plus those the gateway sets itself on the next hop.
_HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
        b"upgrade", b"proxy-authorization", b"proxy-authenticate", b"content-length", b"host", b"expect",
    }
)  # fmt: skip
_RESPONSE_DROP = _HOP_BY_HOP | {
    b"x-thrifty-draining",
    b"x-thrifty-retry-elsewhere",
    b"date",
}  # the gateway writes its own Date
_log = logging.getLogger("thrifty.gateway")
_RETRY_AFTER: Headers = [(b"retry-after", b"1")]
_EJECT_S = 1.0  # how long a replica that refused a connection is skipped
RESET_RETRIES = 1  # retries of a request after replicas reset it before answering (poison bound)
_OK = json_response(200, {"status": "ok"})


class GatewayApp:
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
        self._pool = pool
        # Sent to replicas on every request (platform_secret); a client's own copy of the header is dropped.
        self._secret_line = header_line(replica_secret) if replica_secret else b""
        self._metrics_keys = metrics_key_hashes  # empty: /metrics is open, as Prometheus expects
        self._reset_retries = reset_retries
        self.public_url = public_url.rstrip("/")  # e.g. http://host:port: the endpoint shown for each API
        self.boot_id = os.urandom(8).hex()  # a new one per process: the operator sees counters restart
        self.routes_pushed = False  # until the operator's first push, an unknown API may just be unsaved yet
        self.model_routing = model_routing
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._clock = clock
        self._margin_s = timeout_margin_s
        self.routes: dict[bytes, ApiRoute] = {}
        self.splitters: dict[bytes, SplitterRoute] = {}
        self.shadow = ShadowSender(self._forward, clock)
        self._cold = ColdStartHold()
        self._request_ids = RequestIds(b"gw" + os.urandom(4).hex().encode("ascii") + b"-")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(lambda: list(self.routes.values())))
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
                    return _unauthorized(self._request_id(request))  # its description is behind its keys
                return self._api_status(request, route)
            return error_response(
                405, "method_not_allowed", "predict with POST", self._request_id(request), [(b"allow", b"POST")]
            )
        if method == b"GET" and path == b"/healthz":
            return _OK
        if method == b"GET" and path == b"/metrics":
            if self._metrics_keys and not _bearer_matches(request, self._metrics_keys):
                return _unauthorized(self._request_id(request))
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
                self._request_id(request), _RETRY_AFTER,
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
                _RETRY_AFTER,
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
        return _bearer_matches(request, route.key_hashes)

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

    def _head_rest(self, request: Request, route: ApiRoute, rid: bytes) -> bytes:
        """The forwarded request's head after the Host line, and the blank line."""
        parts: list[bytes] = []
        strip_auth = bool(route.key_hashes)  # the key is the gateway's business, not the predictor's
        connection = request.headers.get(b"connection")
        listed = {t.strip().lower() for t in connection.split(b",")} if connection else ()
        for name, value in request.headers.items():
            if (
                name in _HOP_BY_HOP
                or name in listed
                or (strip_auth and name == b"authorization")
                or name == SECRET_HEADER
            ):
                continue
            parts += (name, b": ", value, b"\r\n")
        if b"x-request-id" not in request.headers:
            parts += (b"x-request-id: ", rid, b"\r\n")
        parts.append(self._secret_line)
        parts.append(b"content-length: %d\r\n\r\n" % len(request.body))
        return b"".join(parts)

    async def _proxy(self, request: Request, route: ApiRoute, fwd_path: bytes, rid: bytes, start: float) -> Response:
        target = fwd_path + b"?" + request.query if request.query else fwd_path
        line = request.method + b" " + target + b" HTTP/1.1\r\nhost: "
        rest = self._head_rest(request, route, rid)
        body = request.body
        deadline = start + route.timeout_s + self._margin_s
        replicas = route.replicas
        current = route
        model = model_request_key(fwd_path) if route.multi_model and self.model_routing else None
        tried: list[ReplicaState] = []
        tried_idx: set[int] = set()
        cut: tuple[ReplicaState, ...] = ()  # replicas that reset this request before answering (not draining)
        now = start
        why = "no replica is ready"
        again = False
        busy = False  # a replica said its model cache is busy: alive, so no crash to wait out
        while True:
            if again:
                # A retry routes on the table as it is now: a push may have added replicas or marked some
                # draining since the first attempt.
                current = self.routes.get(route.name_bytes, route)
                replicas = current.replicas
                tried_idx = {i for i, r in enumerate(replicas) if r in tried}
            if model is None:
                idx = choose_replica(replicas, self._rng, now, tried_idx)
            else:
                idx = choose_for_model(current, model[0], model[1], now, tried_idx)
            if idx is None:
                if busy or not await self._wait_for_replica(current, deadline - now):
                    break
                tried = list(cut)  # a replica that refused a connection may take it now; one that reset it, never
                now = self._clock()
                again = True
                continue
            rep = replicas[idx]
            remaining = deadline - now
            if remaining <= 0:
                return error_response(504, "timeout", "no response within the API's request timeout", rid)
            rep.in_flight += 1
            try:
                up = await self._pool.request(
                    rep.host, rep.port, b"".join((line, rep.authority, b"\r\n", rest, body)), remaining,
                    current.stream_idle_timeout_s + self._margin_s,
                )  # fmt: skip
            except UpstreamConnectError:
                current.lost_s = self._clock()
                rep.ejected_until = current.lost_s + _EJECT_S
                why = f"replica {rep.id} refused the connection"  # the address stays out of client answers
            except UpstreamResetError as exc:
                why = f"replica {rep.id}: {exc.message}"
                if not rep.draining:
                    current.lost_s = self._clock()
                    cut = (*cut, rep)
                    if len(cut) > self._reset_retries:
                        return _upstream_failed(rid, f"{why} (after {len(cut)} replicas did; not retried again)")
            except UpstreamTimeoutError:
                return error_response(504, "timeout", "no response within the API's request timeout", rid)
            except UpstreamError as exc:
                return _upstream_failed(rid, f"replica {rep.id}: {exc.message}")
            else:
                if up.stream is not None:
                    return self._relay_stream(up, rep, route)
                if up.status != 503:
                    return _relay(up)
                if _has_header(up, b"x-thrifty-draining"):
                    rep.seen_draining = rep.draining = True
                    why = f"replica {rep.id} is draining"
                elif _has_header(up, b"x-thrifty-retry-elsewhere"):
                    why = f"replica {rep.id}: its model cache is busy"
                    busy = True
                else:
                    return _relay(up)
            finally:
                rep.in_flight -= 1
            tried.append(rep)
            route.stats.retries += 1
            now = self._clock()
            again = True
        if cut:  # cut off, and no other replica took it: the crash may well have been this request's doing
            return _upstream_failed(rid, f"{why}; no other replica could take the request")
        return error_response(
            503, "no_replica_available", f"no replica of {route.name!r} can take the request ({why})", rid, _RETRY_AFTER
        )

    def _relay_stream(self, up: UpstreamResponse, rep: ReplicaState, route: ApiRoute) -> Response:
        """A streamed response, forwarded chunk by chunk as it arrives. The request stays in flight, for the
        replica and for the API (the autoscaler's signal), until the stream is closed; its latency is recorded
        at its head (time to first chunk). It has started: whatever happens next is never retried."""
        stream = up.stream
        if stream is None:
            return _relay(up)
        stats = route.stats
        rep.in_flight += 1  # taken over from _proxy, which gives its own back on return
        stats.enter(self._clock())
        clock = self._clock

        def ended() -> None:
            rep.in_flight -= 1
            stats.leave(clock())

        stream.on_close = ended
        headers = [(n, v) for n, v in up.headers if n not in _RESPONSE_DROP]
        return StreamResponse(up.status, stream, None, headers)

    async def _wait_for_replica(self, route: ApiRoute, remaining_s: float) -> bool:
        """No replica can take a request now: if the API recently lost a replica (a crash), wait a moment for
        one (its replacement, an ejection running out), within the request's deadline. False: answer now.

        An API that lost nothing (never had a ready replica, every replica busy) is answered at once."""
        lost_s = route.lost_s
        if remaining_s <= 0 or lost_s is None or self.routes.get(route.name_bytes) is None:
            return False
        if self._clock() - lost_s > route.cold_start_timeout_s:  # no replacement in a replica's start time
            return False
        if route.replicas and all(r.draining for r in route.replicas):
            return False  # a deliberate drain (the platform is stopping): say so at once
        if self._cold.held(route.name_bytes) >= route.max_cold_queue:
            return False
        # Woken by a table with a ready replica; else retried when an ejection (_EJECT_S) may have run out.
        await self._cold.wait_ready(route.name_bytes, min(remaining_s, _EJECT_S))
        return True


def _upstream_failed(rid: bytes, why: str) -> Response:
    """The 502: what went wrong (replica, connection details) goes to the log, not to the client."""
    _log.warning("request_id=%s upstream failed: %s", rid.decode("latin-1"), why)
    return error_response(502, "upstream_failed", "the replica failed while handling the request", rid)


def _bearer_matches(request: Request, key_hashes: tuple[str, ...]) -> bool:
    auth = request.headers.get(b"authorization")
    if auth is None or auth[:7].lower() != b"bearer ":
        return False
    return key_matches(auth[7:], key_hashes)  # salted hashes, constant time over all of them


def _unauthorized(rid: bytes) -> Response:
    return error_response(401, "unauthorized", "missing or wrong API key", rid, [(b"www-authenticate", b"Bearer")])


def _api_name(path: bytes) -> bytes:
    slash = path.find(b"/", 1)
    return path[1:] if slash < 0 else path[1:slash]


def _has_header(up: UpstreamResponse, name: bytes) -> bool:
    return any(n == name for n, _ in up.headers)


def _relay(up: UpstreamResponse) -> Response:
    headers = [(n, v) for n, v in up.headers if n not in _RESPONSE_DROP]
    return Response(up.status, up.body, None, headers)
