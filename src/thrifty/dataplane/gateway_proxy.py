"""The gateway's proxy to replicas: the forwarded request's head, the replica choice, retries, stream relay.

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
  kills at most ``1 + reset_retries`` replicas and then gets 502. A reset from a replica the platform lost
  with its node (a hard spot kill: every replica of the node resets at once) is no sign of poison: at the
  bound the request waits, sent nowhere, for the operator's verdict in the next tables (the replica listed in
  ``lost_with_node`` or draining: not counted, retried; the replica gone from the table without that: a
  crash, 502), within its own deadline.
- No replica can take the request and the API recently lost one (a crash): the request waits a moment for
  its replacement (``ColdStartHold.wait_ready``), within its own timeout; then 503 + Retry-After. A table
  whose replicas are all draining (a deliberate stop) gets 503 + Retry-After at once.
- Hop-by-hop headers are dropped both ways; every forwarded request carries the platform secret
  (``platform_secret``) and an ``X-Request-Id``.
- Streamed responses (a generator predictor's, chunked: ``replica_streaming``): forwarded chunk by chunk as
  they arrive (``upstream.UpstreamStream``, with back-pressure across both hops), counted in flight for the
  replica and the API until the stream ends, each gap bounded by the API's ``stream_idle_timeout``; a stream
  that has started is never retried (a cut-off replica cuts the client's stream).

``ReplicaProxy`` is the base of ``gateway.GatewayApp``: it owns the routing table and what forwarding needs
(the upstream pool, the clock, the random source, the cold-start hold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from thrifty.dataplane.cold_start import ColdStartHold
from thrifty.dataplane.gateway_models import choose_for_model, model_request_key
from thrifty.dataplane.gateway_routes import ApiRoute, ReplicaState
from thrifty.dataplane.http_messages import Headers, Request, Response, StreamResponse, error_response
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
RETRY_AFTER: Headers = [(b"retry-after", b"1")]
_EJECT_S = 1.0  # how long a replica that refused a connection is skipped
RESET_RETRIES = 1  # retries of a request after replicas reset it before answering (poison bound)


class ReplicaProxy:
    def __init__(
        self,
        pool: UpstreamPool,
        *,
        rng: RandomSource,
        clock: Callable[[], float],
        timeout_margin_s: float,
        model_routing: bool,
        reset_retries: int,
        replica_secret: bytes | None,
    ) -> None:
        self._pool = pool
        # Sent to replicas on every request (platform_secret); a client's own copy of the header is dropped.
        self._secret_line = header_line(replica_secret) if replica_secret else b""
        self._reset_retries = reset_retries
        self.model_routing = model_routing
        self._rng = rng
        self._clock = clock
        self._margin_s = timeout_margin_s
        self.routes: dict[bytes, ApiRoute] = {}
        self._cold = ColdStartHold()

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
        if model is not None and route.recent_models is not None:
            route.recent_models.seen(model[0], start)
        tried: list[ReplicaState] = []
        tried_idx: set[int] = set()
        cut: tuple[ReplicaState, ...] = ()  # replicas that reset this request before answering (not draining)
        now = start
        why = "no replica is ready"
        again = False
        suspect = False  # the last attempt was reset by a replica not known to be draining or lost with its node
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
                    suspect = len(cut) > self._reset_retries
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
            if suspect:
                suspect = False
                if not await self._lost_with_node(route.name_bytes, cut, deadline):
                    return _upstream_failed(rid, f"{why} (after {len(cut)} replicas did; not retried again)")
            tried.append(rep)
            route.stats.retries += 1
            now = self._clock()
            again = True
        last = self.routes.get(route.name_bytes, route)
        if any(not _forgiven(r, last) for r in cut):  # cut off, no other replica took it: maybe its doing
            return _upstream_failed(rid, f"{why}; no other replica could take the request")
        return error_response(
            503, "no_replica_available", f"no replica of {route.name!r} can take the request ({why})", rid, RETRY_AFTER
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

    async def _lost_with_node(self, name: bytes, cut: tuple[ReplicaState, ...], deadline: float) -> bool:
        """More replicas reset the request than the poison bound allows: wait (the request sent nowhere) for
        the operator's verdict on them, within the request's deadline. True: enough of them were lost with
        their node (``lost_with_node``, or marked draining) to retry it; False (502): more than the bound
        crashed (left the table without being listed as lost with their node), the API is gone, or time ran
        out."""
        while True:
            current = self.routes.get(name)
            if current is None:
                return False
            suspects = [r for r in cut if not _forgiven(r, current)]
            if len(suspects) <= self._reset_retries:
                return True
            listed = {r.id for r in current.replicas}
            if sum(1 for r in suspects if r.id not in listed) > self._reset_retries:
                return False
            remaining = deadline - self._clock()
            if remaining <= 0 or not await self._cold.wait_table(remaining):
                return False

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


def _forgiven(rep: ReplicaState, route: ApiRoute) -> bool:
    """A reset from this replica is no sign of a poison request: it drains, or went away with its node."""
    return rep.draining or rep.id in route.lost_with_node


def _upstream_failed(rid: bytes, why: str) -> Response:
    """The 502: what went wrong (replica, connection details) goes to the log, not to the client."""
    _log.warning("request_id=%s upstream failed: %s", rid.decode("latin-1"), why)
    return error_response(502, "upstream_failed", "the replica failed while handling the request", rid)


def _has_header(up: UpstreamResponse, name: bytes) -> bool:
    return any(n == name for n, _ in up.headers)


def _relay(up: UpstreamResponse) -> Response:
    headers = [(n, v) for n, v in up.headers if n not in _RESPONSE_DROP]
    return Response(up.status, up.body, None, headers)
