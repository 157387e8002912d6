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
- resource caps (``HttpServer`` arguments; each counted in ``HttpServer.stats``): at most
  ``max_connections`` open client connections (beyond, a new connection gets 503 and is closed);
  ``head_timeout_s`` to receive a request head and ``body_timeout_s`` to receive its body (408, close);
  ``keep_alive_timeout_s`` of idleness between requests (closed quietly); ``keep_alive_timeout_s`` for a
  client that reads none of a response it is sent (aborted);
- a lifecycle: ``start()`` binds (port 0 allowed) and reports the real port; ``stop(grace_s)`` stops
  accepting, closes idle connections, lets in-flight requests finish and closes what is left at the end.

Timeouts cost nothing per request: each connection keeps one deadline (a float, in the loop's monotonic
clock as last read by the server) and one periodic sweep per server enforces them all.

The application is an object with ``body_limit(request)`` (called once the headers are in; it may
return a response instead, to refuse the request before its body is read) and
``async handle(request) -> Response``.

Streamed responses (``StreamResponse``: a ``ChunkSource`` instead of a body) are sent with chunked transfer
encoding, each chunk written as the source produces it. The next chunk is asked for only once the
transport has taken the previous one (below its write buffer's high-water mark), so a slow reader slows the
producer and a stream holds at most that buffer and one chunk. A client that disconnects mid-stream cancels
the pending ``__anext__``; a source that raises cuts the stream (abort: no terminal chunk); ``aclose()`` is
called once in every case. A stream has no deadline of its own here (its source bounds the gaps between
chunks); a client that reads nothing for ``keep_alive_timeout_s`` is aborted as for any response.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httptools

from thrifty.dataplane.http_messages import (
    LAST_CHUNK,
    DateHeader,
    Request,
    Response,
    StreamResponse,
    encode_chunk,
    encode_response,
    encode_stream_head,
    error_response,
    request_target,
)

_log = logging.getLogger("thrifty.http")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024
MAX_CONNECTIONS = 10_000
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
KEEP_ALIVE_TIMEOUT_S = 75.0

# Once this many connections have closed since the peak (and at least half of them), the freed memory is
# handed back to the OS (glibc keeps freed small blocks otherwise, and the RSS stays at its peak).
RELEASE_AFTER_CLOSES = 1000

_NEVER = float("inf")
# What a connection's deadline means when it passes.
_IDLE, _HEAD, _BODY, _WRITE = 0, 1, 2, 3
_NO_HEADERS: dict[bytes, bytes] = {}  # placeholder between requests; never written to


class HttpApp(Protocol):
    def body_limit(self, request: Request) -> int | Response:
        """Largest body accepted for this request (its headers are known, its body is not), or a response
        that refuses the request now (sent, then the connection is closed)."""
        ...

    async def handle(self, request: Request) -> Response: ...


class HttpServerStats:
    """Plain counters, read at scrape time (e.g. by the gateway's Prometheus collector)."""

    __slots__ = ("body_timeouts", "connections_refused", "head_timeouts", "idle_closes", "open_connections",
                 "write_timeouts")  # fmt: skip

    def __init__(self) -> None:
        self.open_connections = 0  # gauge
        self.connections_refused = 0  # over max_connections: answered 503
        self.head_timeouts = 0  # 408: the request head did not arrive in time
        self.body_timeouts = 0  # 408: the request body did not arrive in time
        self.idle_closes = 0  # keep-alive connections closed after keep_alive_timeout_s of idleness
        self.write_timeouts = 0  # clients that read nothing of their response for keep_alive_timeout_s


class _StopParsing(Exception):
    """Raised from a parser callback to stop reading this connection (a reply is already queued)."""


class HttpServer:
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
        self.app = app
        self.host = host
        self._requested_port = port
        self.port = 0
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.max_pipelined = max_pipelined
        self._backlog = backlog
        # Deadlines are checked this often, so each timeout is enforced within a quarter of itself (<= 1 s).
        self._sweep_s = min(1.0, max(0.01, min(keep_alive_timeout_s, head_timeout_s, body_timeout_s) / 4))
        # Deadlines of what starts now, as of the last sweep: one attribute read per request, no clock call.
        self.idle_deadline = self.head_deadline = self.body_deadline = 0.0
        self.date = DateHeader()
        self.stats = HttpServerStats()
        self.connections: set[_Connection] = set()
        self._peak_connections = 0
        self._release_memory = _memory_releaser()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None

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
        self._sweeper = loop.call_later(self._sweep_s, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer per server instead of one per request or per connection.
        now = loop.time()
        self._set_deadlines(now)
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.expire()
        open_now = len(self.connections)
        if self._peak_connections - open_now >= max(RELEASE_AFTER_CLOSES, open_now):
            self._peak_connections = open_now
            self.connections = set(self.connections)  # a set never shrinks its table by itself
            self._release_memory()
        self._sweeper = loop.call_later(self._sweep_s, self._sweep, loop)

    def _set_deadlines(self, now: float) -> None:
        self.idle_deadline = now + self.keep_alive_timeout_s
        self.head_deadline = now + self.head_timeout_s
        self.body_deadline = now + self.body_timeout_s

    def connection_opened(self, conn: _Connection) -> bool:
        """Admit ``conn`` unless the server is at ``max_connections``."""
        if len(self.connections) >= self.max_connections:
            self.stats.connections_refused += 1
            return False
        self.connections.add(conn)
        self.stats.open_connections += 1
        if len(self.connections) > self._peak_connections:
            self._peak_connections = len(self.connections)
        return True

    def connection_closed(self, conn: _Connection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
            self.stats.open_connections -= 1
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
    # Slots and lazily made members keep an idle connection to a few hundred bytes beyond the parser.
    __slots__ = (
        "_app", "_body", "_body_len", "_closing", "_dead", "_drain", "_head_bytes", "_headers", "_ignore_input",
        "_limit", "_loop", "_parser", "_parsing", "_pending", "_phase", "_read_paused", "_request", "_server",
        "_streaming", "_task", "_transport", "_url", "_write_paused", "deadline",
    )  # fmt: skip

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
        self._phase = _IDLE

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

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

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
        self._phase = _HEAD

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
        self._phase = _BODY
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
        self.deadline = _NEVER
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
        self.deadline = _NEVER
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
                if resp.__class__ is StreamResponse:
                    if not await self._send_stream(resp, keep):  # type: ignore[arg-type]
                        return
                    transport = self._transport
                    if transport is None:
                        return
                else:
                    if self._dead:
                        return
                    if self._write_paused:
                        await self._wait_writable()
                        if self._dead:
                            return
                    transport = self._transport
                    if transport is None:
                        return
                    transport.write(encode_response(resp, self._server.date.line(), keep))
                    if not keep:
                        transport.close()
                        return
                pending = self._pending
                if not pending:
                    if not self._parsing:
                        self.deadline = self._server.idle_deadline
                        self._phase = _IDLE
                    return
                item = pending.popleft()
                if self._read_paused and not self._ignore_input and len(pending) < 4:
                    self._read_paused = False
                    transport.resume_reading()
        except Exception:
            _log.exception("connection failed")
            self.abort()
        finally:
            self._task = None

    async def _send_stream(self, resp: StreamResponse, keep: bool) -> bool:
        """Send ``resp`` chunk by chunk as its source produces them; True when the connection goes on."""
        chunks = resp.chunks
        try:
            if self._write_paused and not self._dead:
                await self._wait_writable()
            transport = self._transport
            if self._dead or transport is None:
                return False
            self._streaming = True
            # The head goes out with the first chunk: one write (one TCP segment) for the time to first byte.
            head = encode_stream_head(resp, self._server.date.line(), keep)
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                if self._dead:
                    return False
                if chunk:
                    if head:
                        transport.write(head + encode_chunk(chunk))
                        head = b""
                    else:
                        transport.write(encode_chunk(chunk))
                    if self._write_paused:
                        await self._wait_writable()  # back-pressure: the next chunk waits for this one
                        if self._dead:
                            return False
            self._streaming = False
            transport.write(head + LAST_CHUNK)
            if not keep:
                transport.close()
            return keep
        except asyncio.CancelledError:
            if not self._dead:
                raise  # not the client going away (the loop is stopping): let it through
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return False
        except Exception:
            # The source failed mid-stream (it logs why): cut the stream so the client sees it incomplete.
            self.abort()
            return False
        finally:
            self._streaming = False
            try:
                await chunks.aclose()
            except Exception:
                _log.exception("closing a response stream failed")

    async def _wait_writable(self) -> None:
        # A client that reads nothing of what it is sent must not hold the connection (and its buffers).
        deadline, phase = self.deadline, self._phase
        self.deadline = self._server.idle_deadline
        self._phase = _WRITE
        self._drain = self._loop.create_future()
        await self._drain
        self._drain = None
        if self._phase == _WRITE:  # else the next request has begun and set its own deadline
            self.deadline, self._phase = deadline, phase

    # -- lifecycle (called by the server) --------------------------------------------------------------
    def expire(self) -> None:
        """The deadline has passed: close, answer 408 or abort, depending on what was awaited."""
        phase = self._phase
        self.deadline = _NEVER
        stats = self._server.stats
        if phase == _IDLE:
            stats.idle_closes += 1
            if self._transport is not None:
                self._transport.close()
        elif phase == _WRITE:
            stats.write_timeouts += 1
            self.abort()
        elif self._read_paused:
            # Waiting on earlier pipelined answers, not on the client: count from when reading resumes.
            self.deadline = self._server.idle_deadline
        elif phase == _HEAD:
            stats.head_timeouts += 1
            self._reject(error_response(408, "request_timeout", "the request head did not arrive in time"))
        else:
            stats.body_timeouts += 1
            self._reject(error_response(408, "request_timeout", "the request body did not arrive in time"))

    def shutdown(self) -> None:
        self._closing = True
        if self._task is None and not self._parsing and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


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


def _memory_releaser() -> Callable[[], object]:
    """``malloc_trim(0)`` where the C library has it (glibc), else nothing."""
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(name).malloc_trim if name else None
        if trim is not None:
            return lambda: trim(0)
    return lambda: None


def _too_large(limit: int) -> Response:
    return error_response(413, "payload_too_large", f"request body larger than {limit} bytes")
