"""The gateway's client to replicas: pooled keep-alive connections on asyncio transports + llhttp.

A general-purpose client (aiohttp, httpx) costs several hundred microseconds per request; this one does
only what a proxy hop needs: write a prepared request head and body on an idle pooled connection (or a
new one), parse the response with httptools, put the connection back.

Errors say what a retry may assume:

- ``UpstreamConnectError``: no connection was made (refused, unreachable, connect timed out); the replica
  never saw the request, so another replica may take it.
- ``UpstreamResetError``: the connection closed or reset before a single response byte; the replica may or
  may not have started on the request (it may have crashed on it). The gateway retries it elsewhere, a
  bounded number of times (``gateway_proxy.RESET_RETRIES``).
- ``UpstreamBadResponseError``: the connection closed mid-response or the response was malformed (a response
  that had started: never retried).
- ``UpstreamTimeoutError``: no complete response within the time allowed.

Streamed responses: a response with ``Transfer-Encoding: chunked`` (what a replica sends for a generator
predict) is handed over as soon as its head is in, with ``stream`` set: an ``UpstreamStream``, the
``ChunkSource`` of the gateway's own streamed response, giving the body's bytes as they arrive. It holds at
most ``STREAM_HIGH_BYTES`` (then it stops reading the replica until the client has taken them: back-pressure
across the hop), bounds each wait for more bytes by the request's ``idle_timeout_s`` (``UpstreamTimeoutError``),
and turns a connection closed mid-body into ``UpstreamBadResponseError``: both cut the client's stream. The
connection goes back to the pool when the stream ends cleanly, and is aborted when it is closed early (the
client went away: the replica sees the disconnect and cancels its generator). Responses with a
Content-Length take the buffered path, unchanged.

Idle connections older than ``max_idle_s`` are not reused: the replica closes idle connections only after
a much longer keep-alive timeout, so the gateway never writes on a connection the replica is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import ClassVar

import httptools

from thrifty.dataplane.deadlines import Deadlines
from thrifty.dataplane.http_messages import Headers
from thrifty.errors import ThriftyError


class UpstreamError(ThriftyError):
    code: ClassVar[str] = "upstream_failed"


class UpstreamConnectError(UpstreamError):
    code = "upstream_unreachable"


class UpstreamResetError(UpstreamError):
    code = "upstream_reset"


class UpstreamBadResponseError(UpstreamError):
    code = "upstream_bad_response"


class UpstreamTimeoutError(UpstreamError):
    code = "upstream_timeout"


STREAM_HIGH_BYTES = 64 * 1024  # a stream buffers at most about this much before it stops reading the replica
STREAM_LOW_BYTES = 16 * 1024  # and reads again once it is down to this


class UpstreamResponse:
    __slots__ = ("body", "headers", "status", "stream")

    def __init__(self, status: int, headers: Headers, body: bytes, stream: UpstreamStream | None = None) -> None:
        self.status = status
        self.headers = headers  # names lower-cased
        self.body = body
        self.stream = stream  # a chunked response: its body as it arrives (``body`` stays empty)


class UpstreamStream:
    """The body of a chunked response, as it arrives (a ``http_messages.ChunkSource``)."""

    __slots__ = ("_buffered", "_closed", "_conn", "_done", "_error", "_idle_s", "_paused", "_pool", "_waiter", "chunks",
                 "on_close")  # fmt: skip

    def __init__(self, pool: UpstreamPool, conn: _Conn, idle_s: float) -> None:
        self._pool = pool
        self._conn = conn
        self._idle_s = idle_s
        self.chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.on_close: Callable[[], None] | None = None  # called once, when the stream is closed

    # -- fed by the connection ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.chunks.append(data)
        self._buffered += len(data)
        if self._buffered > STREAM_HIGH_BYTES and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def end(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _idle_expired(self) -> None:
        self.fail(UpstreamTimeoutError("the replica sent nothing within the stream's idle timeout"))
        self._conn.abort()

    # -- read by the gateway's HTTP core -------------------------------------------------------------------
    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> bytes:
        chunks = self.chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                raise StopAsyncIteration
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            deadlines = self._pool.deadlines(loop)
            deadlines.add(self, loop.time() + self._idle_s, self._idle_expired)
            try:
                await self._waiter
            finally:
                self._waiter = None
                deadlines.discard(self)
        data = chunks.popleft() if len(chunks) == 1 else b"".join([chunks.popleft() for _ in range(len(chunks))])
        self._buffered -= len(data)
        if self._paused and self._buffered <= STREAM_LOW_BYTES:
            self._paused = False
            if self._conn.transport is not None and not self._conn.closed:
                self._conn.transport.resume_reading()
        return data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        if not self._done or self._error is not None:
            conn.abort()  # cut short: the replica sees the disconnect and stops its generator
        self.chunks.clear()
        self._pool.stream_closed(conn)
        if self.on_close is not None:
            self.on_close()


class _Conn(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._got_bytes = False
        self._status = 0
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._chunked = False
        self._idle_s = 0.0
        self.stream: UpstreamStream | None = None
        self.reusable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self.stream is not None:
            self.stream.fail(UpstreamBadResponseError("the replica closed the connection mid-stream"))
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self._got_bytes:
            waiter.set_exception(UpstreamResetError("the replica closed the connection before responding"))
        elif self._headers_done and self._status and not self._has_framing():
            # No Content-Length and not chunked: the body ends with the connection.
            waiter.set_result(UpstreamResponse(self._status, self._headers, b"".join(self._body)))
        else:
            waiter.set_exception(UpstreamBadResponseError("the replica closed the connection mid-response"))

    def _has_framing(self) -> bool:
        return any(n in (b"content-length", b"transfer-encoding") for n, _ in self._headers)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.abort()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.stream is not None:
                self.stream.fail(UpstreamBadResponseError(f"malformed response from the replica: {exc}"))
            elif not self._waiter.done():
                self._waiter.set_exception(UpstreamBadResponseError(f"malformed response from the replica: {exc}"))
            self.abort()

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._headers_done = False
        self._chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"transfer-encoding":
            self._chunked = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = status = self._parser.get_status_code()
        self._headers_done = True
        if self._chunked and status >= 200:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self.stream = stream = UpstreamStream(self._pool, self, self._idle_s)
                waiter.set_result(UpstreamResponse(status, self._headers, b"", stream))

    def on_body(self, body: bytes) -> None:
        stream = self.stream
        if stream is not None:
            stream.feed(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if self._status < 200:  # 1xx interim response: the real one follows
            return
        self.reusable = self._parser.should_keep_alive()
        if self.stream is not None:
            self.stream.end()
            return
        body = self._body
        resp = UpstreamResponse(self._status, self._headers, body[0] if len(body) == 1 else b"".join(body))
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def start(self, loop: asyncio.AbstractEventLoop, data: bytes, idle_s: float) -> asyncio.Future[UpstreamResponse]:
        self._waiter = waiter = loop.create_future()
        self._idle_s = idle_s
        self._got_bytes = False
        self.reusable = False
        if self.transport is None:
            waiter.set_exception(UpstreamResetError("connection not open"))
        else:
            self.transport.write(data)
        return waiter

    def finish(self) -> None:
        self._waiter = None
        self.stream = None

    def expire(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamTimeoutError("no response from the replica in time"))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    def __init__(
        self, *, max_idle_per_host: int = 512, max_idle_s: float = 30.0, connect_timeout_s: float = 3.0
    ) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._max_idle = max_idle_per_host
        self._max_idle_s = max_idle_s
        self._connect_timeout_s = connect_timeout_s
        self._closed = False
        self._deadlines: Deadlines | None = None

    def deadlines(self, loop: asyncio.AbstractEventLoop) -> Deadlines:
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = Deadlines(loop.time)
        return deadlines

    async def request(
        self, host: str, port: int, data: bytes, timeout_s: float, idle_timeout_s: float = 60.0
    ) -> UpstreamResponse:
        """Send ``data`` (a complete request: head and body) and return the complete response, or for a
        chunked one its head and ``stream`` (whose waits for more bytes are bounded by ``idle_timeout_s``):
        the caller must ``aclose()`` that stream."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = Deadlines(loop.time)
        key = (host, port)
        conn = self._take_idle(key, now)
        if conn is None:
            conn = await self._connect(loop, key, min(timeout_s, self._connect_timeout_s))
        self._busy.add(conn)
        waiter = conn.start(loop, data, idle_timeout_s)
        deadlines.add(conn, now + timeout_s, conn.expire)
        try:
            resp = await waiter
        finally:
            deadlines.discard(conn)
            if conn.stream is None:
                conn.finish()
                self._busy.discard(conn)
        if resp.stream is not None:
            return resp  # the connection stays busy until the stream is closed (stream_closed)
        if conn.reusable and not conn.closed and not self._closed:
            self._put_idle(conn, loop.time())
        else:
            conn.abort()
        return resp

    def stream_closed(self, conn: _Conn) -> None:
        """A streamed response is over: its connection goes back to the pool if it ended cleanly."""
        conn.finish()
        self._busy.discard(conn)
        if conn.reusable and not conn.closed and not self._closed:
            self._put_idle(conn, asyncio.get_running_loop().time())
        else:
            conn.abort()

    def _take_idle(self, key: tuple[str, int], now: float) -> _Conn | None:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if not conn.closed and now - conn.idle_since < self._max_idle_s:
                return conn
            conn.abort()
        if stack is not None and not stack:
            del self._idle[key]
        return None

    def _put_idle(self, conn: _Conn, now: float) -> None:
        stack = self._idle.setdefault(conn.key, [])
        if len(stack) >= self._max_idle:
            conn.abort()
            return
        conn.idle_since = now
        stack.append(conn)

    async def _connect(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int], timeout_s: float) -> _Conn:
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(self, key), key[0], key[1]), timeout_s
            )
        except TimeoutError as exc:
            raise UpstreamConnectError(f"connecting to {key[0]}:{key[1]} timed out") from exc
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc.strerror or exc}") from exc
        return conn

    def forget(self, conn: _Conn) -> None:
        stack = self._idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)
        if stack is not None and not stack:
            del self._idle[conn.key]  # replicas come and go: no empty entry per address ever seen

    def close_host(self, host: str, port: int) -> None:
        """Close the idle connections to a replica that left the routing table."""
        for conn in self._idle.pop((host, port), []):
            conn.abort()

    def close(self) -> None:
        self._closed = True
        if self._deadlines is not None:
            self._deadlines.close()
        for stack in self._idle.values():
            for conn in stack:
                conn.abort()
        self._idle.clear()
        for conn in list(self._busy):
            with contextlib.suppress(Exception):
                conn.abort()
