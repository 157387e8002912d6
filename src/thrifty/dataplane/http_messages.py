"""Requests and responses of the lean HTTP/1.1 core, and their wire encoding.

Header names are lower-cased bytes; values are bytes as received. Responses are encoded into one buffer
so that each is one ``write`` (one syscall) on the transport.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any, Protocol

import httptools
import orjson

Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
OCTETS = b"application/octet-stream"

_STATUS_LINES: dict[int, bytes] = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} Unknown\r\n".encode("ascii")
    return line


class Request:
    """One parsed request. ``body`` is complete when the application sees the request."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(self, method: bytes, path: bytes, query: bytes, headers: dict[bytes, bytes]) -> None:
        self.method = method
        self.path = path
        self.query = query  # without the '?'; b"" when absent
        self.headers = headers  # lower-cased names; repeated headers joined with ", "
        self.body = b""
        self.keep_alive = True


class Response:
    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes | None = JSON,
        headers: Headers | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type  # None: the headers carry it (or there is none)
        self.headers = headers
        self.close = close  # close the connection after this response


class ChunkSource(Protocol):
    """The body of a ``StreamResponse``: chunks as they are produced.

    ``__anext__`` returns the next chunk (bytes; an empty one is skipped) or raises ``StopAsyncIteration`` at
    the end; any other exception cuts the stream (the connection is aborted: no terminal chunk, so the client
    sees an incomplete response). The server awaits ``__anext__`` only once the previous chunk has been
    taken by the transport (back-pressure), cancels it when the client disconnects, and calls ``aclose()``
    exactly once whatever happened, including when it never asked for a chunk."""

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


async def drain(chunks: ChunkSource) -> None:
    """Read a stream to its end, dropping what it gives, then close it."""
    try:
        while True:
            await chunks.__anext__()
    except StopAsyncIteration:
        pass
    finally:
        await chunks.aclose()


class StreamResponse(Response):
    """A response sent with chunked transfer encoding, one chunk per item of ``chunks`` as it comes."""

    __slots__ = ("chunks",)

    def __init__(
        self, status: int, chunks: ChunkSource, content_type: bytes | None = TEXT, headers: Headers | None = None
    ) -> None:
        super().__init__(status, b"", content_type, headers)
        self.chunks = chunks


def json_response(status: int, data: Any, headers: Headers | None = None, close: bool = False) -> Response:
    return Response(status, orjson.dumps(data), JSON, headers, close)


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: bytes | str | None = None,
    headers: Headers | None = None,
    close: bool = False,
) -> Response:
    """The JSON error body every data-plane component answers with: {"error", "message", "request_id"}."""
    body: dict[str, str] = {"error": code, "message": message}
    if request_id is not None:
        body["request_id"] = request_id.decode("latin-1") if isinstance(request_id, bytes) else request_id
    return Response(status, orjson.dumps(body), JSON, headers, close)


class DateHeader:
    """The Date header line, formatted at most once per second (RFC 9110 asks origin servers for it)."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            self._line = b"date: " + stamp.encode("ascii") + b"\r\n"
        return self._line


def encode_response(resp: Response, date_line: bytes, keep_alive: bool) -> bytes:
    parts = [status_line(resp.status), date_line]
    if resp.content_type is not None:
        parts += (b"content-type: ", resp.content_type, b"\r\n")
    if resp.headers:
        for name, value in resp.headers:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(resp.body))
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    parts.append(resp.body)
    return b"".join(parts)


def encode_stream_head(resp: Response, date_line: bytes, keep_alive: bool) -> bytes:
    """The head of a streamed response: ``Transfer-Encoding: chunked`` instead of a Content-Length."""
    parts = [status_line(resp.status), date_line]
    if resp.content_type is not None:
        parts += (b"content-type: ", resp.content_type, b"\r\n")
    if resp.headers:
        for name, value in resp.headers:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
    return b"".join(parts)


def encode_chunk(chunk: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


LAST_CHUNK = b"0\r\n\r\n"


class RequestIds:
    """The id of each request: the client's ``X-Request-Id``, or a new one made of ``prefix`` and a counter."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix
        self._counter = 0

    def of(self, request: Request) -> bytes:
        rid = request.headers.get(b"x-request-id")
        if rid is None:
            self._counter += 1
            rid = self._prefix + b"%x" % self._counter
        return rid


def request_target(url: bytes) -> tuple[bytes, bytes] | None:
    """(path, query) of a request target: origin-form (``/p?q``) or absolute-form (``http://host/p?q``, as
    proxies send it); None for any other form (authority-form, ``*``, garbage)."""
    if url[:1] == b"/":
        path, _, query = url.partition(b"?")
        return path, query
    scheme, sep, _ = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return None
    if not parsed.host:
        return None
    return parsed.path or b"/", parsed.query or b""
