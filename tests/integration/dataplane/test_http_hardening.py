"""The HTTP core at the internet edge: request targets, CONNECT/upgrades/HTTP/0.9 refused with one response,
and the resource caps (connections, head/body/idle time), each visible in ``HttpServer.stats``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from dataplane_helpers import ReplicaFactory, RunningGateway, api_config, eventually
from prometheus_client.parser import text_string_to_metric_families
from test_http_core import EchoApp, exchange

from thrifty.dataplane.gateway_main import parse_args
from thrifty.dataplane.gateway_stats import HttpServerCollector
from thrifty.dataplane.http_server import (
    BODY_TIMEOUT_S,
    HEAD_TIMEOUT_S,
    KEEP_ALIVE_TIMEOUT_S,
    MAX_CONNECTIONS,
    HttpServer,
)

EchoServers = Callable[..., Awaitable[HttpServer]]


@pytest.fixture
async def echo_server() -> AsyncIterator[EchoServers]:
    """echo_server(**caps) -> a started HttpServer around EchoApp (its ``app`` attribute)."""
    started: list[tuple[HttpServer, EchoApp]] = []

    async def start(**caps: float) -> HttpServer:
        app = EchoApp()
        srv = HttpServer(app, host="127.0.0.1", port=0, **caps)  # type: ignore[arg-type]
        await srv.start()
        started.append((srv, app))
        return srv

    yield start
    for srv, app in started:
        app.release.set()
        await srv.stop(0.5)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)


# -- request targets and refused requests -------------------------------------------------------------------
async def test_absolute_form_target_is_routed_by_its_path(echo_server: EchoServers) -> None:
    srv = await echo_server()
    req = b"POST http://example.com:8080/api/x?q=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi"
    parsed, closed = await exchange(srv.port, req, 1)
    assert parsed.responses[0][0] == 200
    assert parsed.responses[0][2] == b"POST /api/x hi"
    assert not closed


async def test_absolute_form_through_the_gateway_reaches_the_api(
    gateway: RunningGateway, start_replica: ReplicaFactory
) -> None:
    replica = await start_replica(api_config("Echo"))
    gateway.set_routes(test_api={"replicas": [replica]})
    body = b'{"i": 1}'
    req = (
        b"POST http://127.0.0.1:%d/test-api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (gateway.port, len(body), body)
    )
    parsed, _ = await exchange(gateway.port, req, 1)
    assert parsed.responses[0][0] == 200
    assert b'"payload"' in parsed.responses[0][2]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET ftp://example.com/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["connect", "websocket", "h2c", "http09", "http2-line", "asterisk", "ftp-url"],
)
async def test_refused_requests_get_exactly_one_response_and_a_close(
    echo_server: EchoServers, request_bytes: bytes, status: int
) -> None:
    srv = await echo_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(request_bytes)
    data = await read_to_end(reader)  # the server closes: everything it sent is here
    writer.close()
    assert data.startswith(b"HTTP/1.1 %d " % status)
    assert data.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in data


# -- caps ---------------------------------------------------------------------------------------------------
async def test_connections_over_the_cap_get_503_and_the_others_keep_being_served(
    echo_server: EchoServers,
) -> None:
    srv = await echo_server(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]
    await eventually(lambda: srv.stats.open_connections == 2)
    over_reader, over_writer = await asyncio.open_connection("127.0.0.1", srv.port)
    data = await read_to_end(over_reader)
    over_writer.close()
    assert data.startswith(b"HTTP/1.1 503 ") and b"connection: close" in data
    assert srv.stats.connections_refused == 1
    for reader, writer in held:  # those it had keep being served
        writer.write(b"POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
    held[0][1].close()
    await eventually(lambda: srv.stats.open_connections == 1)
    parsed, _ = await exchange(srv.port, b"POST /again HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 1)
    assert parsed.responses[0][0] == 200  # room again
    held[1][1].close()


async def test_a_head_not_received_in_time_gets_408_and_a_close(echo_server: EchoServers) -> None:
    srv = await echo_server(head_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /half HTTP/1.1\r\nHost: x\r\nContent-Le")
    data = await read_to_end(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ") and data.count(b"HTTP/1.1 ") == 1
    assert srv.stats.head_timeouts == 1 and srv.stats.body_timeouts == 0


async def test_a_body_not_received_in_time_gets_408_and_a_close(echo_server: EchoServers) -> None:
    srv = await echo_server(body_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /half HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    data = await read_to_end(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ") and data.count(b"HTTP/1.1 ") == 1
    assert srv.stats.body_timeouts == 1 and srv.stats.head_timeouts == 0


async def test_an_idle_keep_alive_connection_is_closed_quietly(echo_server: EchoServers) -> None:
    srv = await echo_server(keep_alive_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    await asyncio.wait_for(reader.readexactly(len(b"POST /a ")), 5)  # the body
    assert await read_to_end(reader) == b""  # closed, with nothing more said
    writer.close()
    assert srv.stats.idle_closes == 1
    await eventually(lambda: srv.stats.open_connections == 0)


async def test_a_request_being_handled_is_not_timed_out(echo_server: EchoServers) -> None:
    srv = await echo_server(head_timeout_s=0.1, body_timeout_s=0.1, keep_alive_timeout_s=0.1)
    app = srv.app
    assert isinstance(app, EchoApp)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await asyncio.wait_for(app.entered.wait(), 5)
    # Another connection's half-sent head times out: the sweep has run past every deadline since /slow began.
    other_reader, other_writer = await asyncio.open_connection("127.0.0.1", srv.port)
    other_writer.write(b"GET /x HTTP/1.1\r\n")
    assert (await read_to_end(other_reader)).startswith(b"HTTP/1.1 408 ")
    other_writer.close()
    app.release.set()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert srv.stats.head_timeouts == 1


async def test_gateway_metrics_export_the_connection_figures(
    gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    gateway.app.registry.register(HttpServerCollector(gateway.server.stats))
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)  # one more open connection
    await eventually(lambda: gateway.server.stats.open_connections >= 1)
    resp = await client.get(gateway.url + "/metrics")
    writer.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    assert samples[("thrifty_open_connections", ())] >= 2  # ours and the client's
    assert samples[("thrifty_connections_refused_total", ())] == 0
    assert samples[("thrifty_request_timeouts_total", (("part", "head"),))] == 0
    assert samples[("thrifty_request_timeouts_total", (("part", "body"),))] == 0
    assert ("thrifty_idle_connections_closed_total", ()) in samples
    assert ("thrifty_write_timeouts_total", ()) in samples
    del reader


def test_gateway_caps_come_from_flags_then_environment_then_defaults(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--port-file", "p", "--token-file", "t"]
    args = parse_args(base)
    assert (args.max_connections, args.head_timeout_s, args.body_timeout_s, args.keep_alive_timeout_s) == (
        MAX_CONNECTIONS,
        HEAD_TIMEOUT_S,
        BODY_TIMEOUT_S,
        KEEP_ALIVE_TIMEOUT_S,
    )
    monkeypatch.setenv("THRIFTY_MAX_CONNECTIONS", "123")
    monkeypatch.setenv("THRIFTY_HEAD_TIMEOUT_S", "2.5")
    args = parse_args(base)
    assert args.max_connections == 123 and args.head_timeout_s == 2.5
    assert parse_args([*base, "--max-connections", "7"]).max_connections == 7
    monkeypatch.setenv("THRIFTY_BODY_TIMEOUT_S", "-1")
    with pytest.raises(SystemExit):
        parse_args(base)
    assert "THRIFTY_BODY_TIMEOUT_S" in capsys.readouterr().err
