"""The gateway's client to replicas: pooled keep-alive connections on asyncio transports + llhttp.

A general-purpose client (aiohttp, httpx) costs several hundred microseconds per request; this one does
only what a proxy hop needs: write a prepared request head and body on an idle pooled connection (or a
new one), parse the response with httptools, put the connection back.

Errors say what a retry may assume:

- ``UpstreamConnectError``: no connection was made (refused, unreachable, connect timed out); the replica
  never saw the request, so another replica may take it.
- ``UpstreamResetError``: the connection closed or reset before a single response byte; the replica may or
  may not have started on the request (it may have crashed on it). The gateway retries it elsewhere, a
  bounded number of times (``gateway.RESET_RETRIES``).
- ``UpstreamBadResponseError``: the connection closed mid-response or the response was malformed (a response
  that had started: never retried).
- ``UpstreamTimeoutError``: no complete response within the time allowed.

Idle connections older than ``max_idle_s`` are not reused: the replica closes idle connections only after
a much longer keep-alive timeout, so the gateway never writes on a connection the replica is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class UpstreamResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers  # names lower-cased
        self.body = body


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
        self.reusable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
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
            if not self._waiter.done():
                self._waiter.set_exception(UpstreamBadResponseError(f"malformed response from the replica: {exc}"))
            self.abort()

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if self._status < 200:  # 1xx interim response: the real one follows
            return
        self.reusable = self._parser.should_keep_alive()
        body = self._body
        resp = UpstreamResponse(self._status, self._headers, body[0] if len(body) == 1 else b"".join(body))
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def start(self, loop: asyncio.AbstractEventLoop, data: bytes) -> asyncio.Future[UpstreamResponse]:
        self._waiter = waiter = loop.create_future()
        self._got_bytes = False
        self.reusable = False
        if self.transport is None:
            waiter.set_exception(UpstreamResetError("connection not open"))
        else:
            self.transport.write(data)
        return waiter

    def finish(self) -> None:
        self._waiter = None

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

    async def request(self, host: str, port: int, data: bytes, timeout_s: float) -> UpstreamResponse:
        """Send ``data`` (a complete request: head and body) and return the complete response."""
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
        waiter = conn.start(loop, data)
        deadlines.add(conn, now + timeout_s, conn.expire)
        try:
            resp = await waiter
        finally:
            deadlines.discard(conn)
            conn.finish()
            self._busy.discard(conn)
        if conn.reusable and not conn.closed and not self._closed:
            self._put_idle(conn, loop.time())
        else:
            conn.abort()
        return resp

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
