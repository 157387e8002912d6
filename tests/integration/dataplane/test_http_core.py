"""The lean HTTP/1.1 core (thrifty.dataplane.http_server) against raw sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httptools
import pytest

from thrifty.dataplane.http_messages import Request, Response
from thrifty.dataplane.http_server import HttpServer


class EchoApp:
    """Echoes method, path and body; /slow waits for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    def body_limit(self, request: Request) -> int:
        return 100

    async def handle(self, request: Request) -> Response:
        if request.path == b"/slow":
            self.entered.set()
            await self.release.wait()
        return Response(200, request.method + b" " + request.path + b" " + request.body, b"text/plain")


class Parsed:
    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.responses.append((self.parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""


async def exchange(port: int, data: bytes, responses: int) -> tuple[Parsed, bool]:
    """Send ``data``; read until ``responses`` responses arrived; report whether the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    parsed = Parsed()
    closed = False
    try:
        async with asyncio.timeout(5):
            while len(parsed.responses) < responses:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                parsed.parser.feed_data(chunk)
            if not closed:
                try:
                    async with asyncio.timeout(0.2):
                        closed = await reader.read(1) == b""
                except TimeoutError:
                    closed = False
    finally:
        writer.close()
    return parsed, closed


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, EchoApp]]:
    app = EchoApp()
    srv = HttpServer(app, host="127.0.0.1", port=0)
    await srv.start()
    yield srv, app
    app.release.set()
    await srv.stop(0.5)


async def test_port_zero_reports_real_port(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    assert srv.port > 0


async def test_keep_alive_and_pipelining_answer_in_order(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    reqs = b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % (i, i) for i in range(5))
    parsed, closed = await exchange(srv.port, reqs, 5)
    assert [body for _, _, body in parsed.responses] == [b"POST /%d %d" % (i, i) for i in range(5)]
    assert not closed


async def test_chunked_body(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    req = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    parsed, _ = await exchange(srv.port, req, 1)
    assert parsed.responses[0][2] == b"POST /c abcde"


async def test_content_length_over_limit_is_413_and_closes_without_reading(
    server: tuple[HttpServer, EchoApp],
) -> None:
    srv, _ = server
    req = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
    parsed, closed = await exchange(srv.port, req, 1)
    assert parsed.responses[0][0] == 413
    assert closed


async def test_chunked_over_limit_is_413(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    chunk = b"64\r\n" + b"y" * 100 + b"\r\n"
    req = b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
    parsed, closed = await exchange(srv.port, req, 1)
    assert parsed.responses[0][0] == 413
    assert closed


async def test_malformed_request_is_400_and_closes(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    parsed, closed = await exchange(srv.port, b"NOT HTTP AT ALL\r\n\r\n", 1)
    assert parsed.responses[0][0] == 400
    assert closed


async def test_connection_close_is_honoured(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    req = b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    parsed, closed = await exchange(srv.port, req, 1)
    assert parsed.responses[0][1][b"connection"] == b"close"
    assert closed


async def test_expect_100_continue(server: tuple[HttpServer, EchoApp]) -> None:
    srv, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"ok")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_stop_waits_for_in_flight_and_closes_idle(server: tuple[HttpServer, EchoApp]) -> None:
    srv, app = server
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", srv.port)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await asyncio.wait_for(app.entered.wait(), 5)
    stopping = asyncio.create_task(srv.stop(5.0))
    assert await asyncio.wait_for(idle_reader.read(1), 5) == b""  # the idle connection is closed at once
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", srv.port)  # no longer accepting
    assert not stopping.done()
    app.release.set()
    data = await asyncio.wait_for(reader.read(), 5)  # the in-flight request is answered, then closed
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data
    await asyncio.wait_for(stopping, 5)
    writer.close()
    idle_writer.close()
