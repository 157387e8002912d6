"""A lean HTTP/1.1 server: one ``asyncio.Protocol`` per connection, llhttp (httptools) for parsing.

Why not uvicorn/ASGI: on this data plane every microsecond per request is paid twice (gateway and
replica), and an ASGI layer costs about as much as the whole rest of the request path. This core keeps
what the data plane needs and nothing more:

- keep-alive, pipelining (requests on one connection are answered in order, one at a time; reading pauses
  when too many wait), ``Connection: close``, ``Expect: 100-continue``;
- bodies with Content-Length or chunked; a body over the application's limit gets 413 and the connection
  is closed without reading the rest; malformed requests get 400;
- a lifecycle: ``start()`` binds (port 0 allowed) and reports the real port; ``stop(grace_s)`` stops
  accepting, closes idle connections, lets in-flight requests finish and closes what is left at the end;
- idle connections (and requests stuck half-received) are closed after ``keep_alive_timeout_s``.

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

from thrifty.dataplane.http_messages import DateHeader, Request, Response, encode_response, error_response

_log = logging.getLogger("thrifty.http")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024


class HttpApp(Protocol):
    def body_limit(self, request: Request) -> int | Response:
        """Largest body accepted for this request (its headers are known, its body is not), or a response
        that refuses the request now (sent, then the connection is closed)."""
        ...

    async def handle(self, request: Request) -> Response: ...


class _StopParsing(Exception):
    """Raised from a parser callback to stop reading this connection (a reply is already queued)."""


class HttpServer:
    def __init__(
        self,
        app: HttpApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_alive_timeout_s: float = 75.0,
        max_pipelined: int = 32,
        backlog: int = 2048,
    ) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self.port = 0
        self.keep_alive_ticks = max(1, int(keep_alive_timeout_s))
        self.max_pipelined = max_pipelined
        self._backlog = backlog
        self.date = DateHeader()
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        self._server = await loop.create_server(
            lambda: _Connection(self, loop),
            self.host,
            self._requested_port,
            backlog=self._backlog,
            reuse_address=True,
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self._sweeper = loop.call_later(1.0, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer per server instead of one per request: idle time is counted in whole seconds.
        for conn in list(self.connections):
            conn.tick()
        self._sweeper = loop.call_later(1.0, self._sweep, loop)

    def connection_closed(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections and self._all_closed is not None:
            self._all_closed.set()

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._app = server.app
        self._loop = loop
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._head_bytes = 0
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._body_len = 0
        self._limit = 0
        self._parsing = False
        self._pending: deque[Request | Response] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # close once the work in hand is answered
        self._ignore_input = False
        self._dead = False
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._idle_ticks = 0

    # -- transport callbacks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._server.connection_closed(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._ignore_input:
            return
        try:
            self._parser.feed_data(data)
        except _StopParsing:
            pass
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _StopParsing):
                _log.error("http callback failed", exc_info=exc.__context__)
                self._reject(error_response(500, "internal", "internal server error"))
        except httptools.HttpParserUpgrade:
            self._reject(error_response(400, "bad_request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._reject(error_response(400, "bad_request", f"malformed HTTP request: {exc}"))

    # -- parser callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._parsing = True
        self._url = b""
        self._headers = {}
        self._head_bytes = 0
        self._body = []
        self._body_len = 0

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
        path, _, query = self._url.partition(b"?")
        req = Request(self._parser.get_method(), path, query, self._headers)
        req.keep_alive = self._parser.should_keep_alive()
        self._request = req
        limit = self._app.body_limit(req)
        if isinstance(limit, Response):  # refused on its headers alone: the body is never read
            self._reject(limit)
            raise _StopParsing
        self._limit = limit
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self._reject(_too_large(limit))
            raise _StopParsing
        expect = self._headers.get(b"expect")
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
        self._idle_ticks = 0
        body = self._body
        if body:
            req.body = body[0] if len(body) == 1 else b"".join(body)
        self._dispatch(req)

    # -- serving ---------------------------------------------------------------------------------------
    def _dispatch(self, item: Request | Response) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._serve(item))
            return
        self._pending.append(item)
        if len(self._pending) >= self._server.max_pipelined and not self._read_paused:
            self._read_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _reject(self, resp: Response) -> None:
        """Answer ``resp`` after what is already in hand, then close; read nothing more."""
        resp.close = True
        self._ignore_input = True
        self._parsing = False
        self._request = None
        if self._transport is not None and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()
        self._dispatch(resp)

    async def _serve(self, item: Request | Response) -> None:
        try:
            while True:
                if isinstance(item, Request):
                    try:
                        resp = await self._app.handle(item)
                    except Exception:
                        _log.exception("request handler failed")
                        resp = error_response(500, "internal", "internal server error")
                    keep = item.keep_alive and not resp.close
                else:
                    resp, keep = item, False
                if keep and self._closing and not self._pending:
                    keep = self._parsing
                if self._dead:
                    return
                if self._write_paused:
                    self._drain = self._loop.create_future()
                    await self._drain
                    self._drain = None
                    if self._dead:
                        return
                transport = self._transport
                if transport is None:
                    return
                transport.write(encode_response(resp, self._server.date.line(), keep))
                self._idle_ticks = 0
                if not keep:
                    transport.close()
                    return
                if not self._pending:
                    return
                item = self._pending.popleft()
                if self._read_paused and not self._ignore_input and len(self._pending) < 4:
                    self._read_paused = False
                    transport.resume_reading()
        except Exception:
            _log.exception("connection failed")
            self.abort()
        finally:
            self._task = None

    # -- lifecycle (called by the server) --------------------------------------------------------------
    def tick(self) -> None:
        if self._task is not None:
            return
        self._idle_ticks += 1
        if self._idle_ticks >= self._server.keep_alive_ticks and self._transport is not None:
            self._transport.close()

    def shutdown(self) -> None:
        self._closing = True
        if self._task is None and not self._parsing and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _too_large(limit: int) -> Response:
    return error_response(413, "payload_too_large", f"request body larger than {limit} bytes")
