"""A lean HTTP/1.1 server: one ``asyncio.Protocol`` per connection, llhttp (httptools) for parsing.

Why not uvicorn/ASGI: on this data plane every microsecond per request is paid twice (gateway and
replica), and an ASGI layer costs about as much as the whole rest of the request path. This core keeps
what the data plane needs and nothing more:

- keep-alive, pipelining (requests on one connection are answered in order, one at a time; reading pauses
  when too many wait), ``Connection: close``, ``Expect: 100-continue``;
- request targets in origin-form (``/p?q``) or absolute-form (``http://host/p?q``, as proxies send them):
  every application sees ``request.path`` as the path alone;
- bodies with Content-Length or chunked; a body over the application's limit gets 413 and the connection
  is closed without reading the rest; malformed requests (HTTP/0.9 request lines included) get 400,
  ``CONNECT`` gets 405, protocol upgrades (``Upgrade:``) get 400, other HTTP versions get 505: each is
  exactly one response, then the connection is closed;
- resource caps (``HttpServer`` arguments; each counted in ``HttpServer.stats``) and the timeout sweep that
  enforces them: ``http_limits``;
- responses, streamed ones (chunked) included, written with back-pressure: ``http_writer``;
- a lifecycle: ``start()`` binds (port 0 allowed) and reports the real port; ``stop(grace_s)`` stops
  accepting, closes idle connections, lets in-flight requests finish and closes what is left at the end.

This module owns the server's lifecycle and the connection protocol: parsing, dispatching requests to the
application in order, refusing bad ones, and what a connection does when its deadline passes.

The application is an object with ``body_limit(request)`` (called once the headers are in; it may
return a response instead, to refuse the request before its body is read) and
``async handle(request) -> Response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

import httptools

from thrifty.dataplane.http_limits import (
    BODY,
    BODY_TIMEOUT_S,
    HEAD,
    HEAD_TIMEOUT_S,
    IDLE,
    KEEP_ALIVE_TIMEOUT_S,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    NEVER,
    WRITE,
    ConnectionLimits,
)
from thrifty.dataplane.http_messages import (
    DateHeader,
    Request,
    Response,
    encode_response,
    error_response,
    request_target,
)
from thrifty.dataplane.http_writer import ResponseWriter

__all__ = [
    "BODY_TIMEOUT_S",
    "HEAD_TIMEOUT_S",
    "KEEP_ALIVE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "HttpApp",
    "HttpServer",
]

_log = logging.getLogger("thrifty.http")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_HEADERS: dict[bytes, bytes] = {}  # placeholder between requests; never written to


class HttpApp(Protocol):
    def body_limit(self, request: Request) -> int | Response:
        """Largest body accepted for this request (its headers are known, its body is not), or a response
        that refuses the request now (sent, then the connection is closed)."""
        ...

    async def handle(self, request: Request) -> Response: ...


class _StopParsing(Exception):
    """Raised from a parser callback to stop reading this connection (a reply is already queued)."""


class HttpServer(ConnectionLimits):
    def __init__(
        self,
        app: HttpApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive_timeout_s: float = KEEP_ALIVE_TIMEOUT_S,
        head_timeout_s: float = HEAD_TIMEOUT_S,
        body_timeout_s: float = BODY_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        max_pipelined: int = 32,
        backlog: int = 2048,
    ) -> None:
        super().__init__(
            keep_alive_timeout_s=keep_alive_timeout_s,
            head_timeout_s=head_timeout_s,
            body_timeout_s=body_timeout_s,
            max_connections=max_connections,
        )
        self.app = app
        self.host = host
        self._requested_port = port
        self.port = 0
        self.max_pipelined = max_pipelined
        self._backlog = backlog
        self.date = DateHeader()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        self._set_deadlines(loop.time())
        self._server = await loop.create_server(
            lambda: _Connection(self, loop),
            self.host,
            self._requested_port,
            backlog=self._backlog,
            reuse_address=True,
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self._start_sweep(loop)

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace_s``), then close everything."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections and self._all_closed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for conn in list(self.connections):
            conn.abort()
        self._stop_sweep()


class _Connection(ResponseWriter):
    # Slots (here and in ResponseWriter) and lazily made members keep an idle connection to a few hundred
    # bytes beyond the parser.
    __slots__ = ("_body", "_body_len", "_head_bytes", "_headers", "_limit", "_parser", "_request", "_url")

    def __init__(self, server: HttpServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._app = server.app
        self._loop = loop
        self._parser: httptools.HttpRequestParser | None = None  # made on the first byte received
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers = _NO_HEADERS
        self._head_bytes = 0
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._body_len = 0
        self._limit = 0
        self._parsing = False
        self._pending: deque[Request | Response] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # close once the work in hand is answered
        self._ignore_input = False
        self._dead = False
        self._read_paused = False
        self._write_paused = False
        self._streaming = False  # a streamed response is being sent: a disconnect cancels its source
        self._drain: asyncio.Future[None] | None = None
        self.deadline = server.idle_deadline
        self._phase = IDLE

    # -- transport callbacks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if not self._server.connection_opened(self):
            self._dead = True
            self._ignore_input = True
            resp = error_response(503, "overloaded", "too many open connections, retry later")
            transport.write(encode_response(resp, self._server.date.line(), False))  # type: ignore[attr-defined]
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._server.connection_closed(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._streaming and self._task is not None:
            self._task.cancel()  # the client went away: stop producing its stream now
        # The parser holds this protocol's bound methods and the transport holds the protocol: break both
        # cycles, so that a closed connection is freed at once rather than by a later cyclic GC pass.
        self._parser = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._ignore_input:
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except _StopParsing:
            pass
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _StopParsing):
                _log.error("http callback failed", exc_info=exc.__context__)
                self._reject(error_response(500, "internal", "internal server error"))
        except httptools.HttpParserUpgrade:
            # on_headers_complete refuses upgrades and CONNECT before dispatching, so this is never reached
            # with a request in hand; read nothing more all the same.
            self._reject(error_response(400, "bad_request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._reject(error_response(400, "bad_request", f"malformed HTTP request: {exc}"))

    # -- parser callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._parsing = True
        self._url = b""
        self._headers = {}
        self._head_bytes = 0
        self._body_len = 0
        self.deadline = self._server.head_deadline
        self._phase = HEAD

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._reject(error_response(431, "headers_too_large", "request line or headers too large"))
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._reject(error_response(431, "headers_too_large", "request line or headers too large"))
            raise _StopParsing
        name = name.lower()
        old = self._headers.get(name)
        self._headers[name] = value if old is None else old + b", " + value

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser is None:  # never: callbacks run inside feed_data
            return
        headers = self._headers
        method = parser.get_method()
        url = self._url
        self._url = b""
        keep_alive = parser.should_keep_alive()
        if url[:1] == b"/" and keep_alive and method != b"CONNECT" and b"upgrade" not in headers:
            path, _, query = url.partition(b"?")  # the usual request: no further checks
        else:
            checked = _target_or_refusal(method, url, parser.get_http_version(), headers)
            if isinstance(checked, Response):
                self._reject(checked)
                raise _StopParsing
            path, query = checked
        req = Request(method, path, query, headers)
        req.keep_alive = keep_alive
        self._request = req
        limit = self._app.body_limit(req)
        if isinstance(limit, Response):  # refused on its headers alone: the body is never read
            self._reject(limit)
            raise _StopParsing
        self._limit = limit
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._reject(_too_large(limit))
            raise _StopParsing
        self.deadline = self._server.body_deadline
        self._phase = BODY
        expect = headers.get(b"expect")
        if (
            expect is not None
            and expect.lower() == b"100-continue"
            and self._task is None
            and self._transport is not None
        ):
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self._limit:
            self._reject(_too_large(self._limit))
            raise _StopParsing
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._request
        if req is None:
            return
        self._request = None
        self._parsing = False
        self._headers = _NO_HEADERS
        self.deadline = NEVER
        body = self._body
        if body:
            req.body = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
        self._dispatch(req)

    # -- serving ---------------------------------------------------------------------------------------
    def _dispatch(self, item: Request | Response) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._serve(item))
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        pending.append(item)
        if len(pending) >= self._server.max_pipelined and not self._read_paused:
            self._read_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _reject(self, resp: Response) -> None:
        """Answer ``resp`` after what is already in hand, then close; read nothing more."""
        resp.close = True
        self._ignore_input = True
        self._parsing = False
        self._request = None
        self._headers = _NO_HEADERS
        self._body.clear()
        self.deadline = NEVER
        if self._transport is not None and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()
        self._dispatch(resp)

    # -- lifecycle (called by the server) --------------------------------------------------------------
    def expire(self) -> None:
        """The deadline has passed: close, answer 408 or abort, depending on what was awaited."""
        phase = self._phase
        self.deadline = NEVER
        stats = self._server.stats
        if phase == IDLE:
            stats.idle_closes += 1
            if self._transport is not None:
                self._transport.close()
        elif phase == WRITE:
            stats.write_timeouts += 1
            self.abort()
        elif self._read_paused:
            # Waiting on earlier pipelined answers, not on the client: count from when reading resumes.
            self.deadline = self._server.idle_deadline
        elif phase == HEAD:
            stats.head_timeouts += 1
            self._reject(error_response(408, "request_timeout", "the request head did not arrive in time"))
        else:
            stats.body_timeouts += 1
            self._reject(error_response(408, "request_timeout", "the request body did not arrive in time"))

    def shutdown(self) -> None:
        self._closing = True
        if self._task is None and not self._parsing and self._transport is not None:
            self._transport.close()


def _target_or_refusal(
    method: bytes, url: bytes, version: str, headers: dict[bytes, bytes]
) -> tuple[bytes, bytes] | Response:
    """(path, query) of a request that is not the usual keep-alive origin-form one, or the answer refusing it."""
    if method == b"CONNECT":
        return error_response(405, "method_not_allowed", "CONNECT is not supported")
    target = request_target(url)
    if target is None:
        return error_response(400, "bad_request", "the request target must be a path or an http(s) URL")
    # llhttp also parses request lines without a version (HTTP/0.9) and with HTTP/2 or later.
    if version == "0.9":
        return error_response(400, "bad_request", "the request line has no HTTP version")
    if version not in ("1.1", "1.0"):
        return error_response(505, "http_version_not_supported", "only HTTP/1.0 and 1.1 are served")
    if b"upgrade" in headers:
        return error_response(400, "bad_request", "protocol upgrades are not supported")
    return target


def _too_large(limit: int) -> Response:
    return error_response(413, "payload_too_large", f"request body larger than {limit} bytes")
