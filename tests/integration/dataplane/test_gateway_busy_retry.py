"""A replica whose model cache is busy answers 503 + X-Thrifty-Retry-Elsewhere; the gateway tries another."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from dataplane_helpers import RunningGateway, api_config

from thrifty.dataplane.http_messages import Request, Response, error_response
from thrifty.dataplane.http_server import HttpServer


class BusyApp:
    def __init__(self) -> None:
        self.seen = 0

    def body_limit(self, request: Request) -> int:
        return 1 << 20

    async def handle(self, request: Request) -> Response:
        self.seen += 1
        return error_response(
            503, "model_cache_busy", "every model in memory is in use", None,
            [(b"retry-after", b"1"), (b"x-thrifty-retry-elsewhere", b"1")],
        )  # fmt: skip


@pytest.fixture
async def busy() -> AsyncIterator[tuple[BusyApp, HttpServer]]:
    app = BusyApp()
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    yield app, server
    await server.stop(0.5)


async def test_busy_replica_is_skipped_for_another(
    gateway: RunningGateway, start_replica: object, client: httpx.AsyncClient, busy: tuple[BusyApp, HttpServer]
) -> None:
    app, server = busy
    live = await start_replica(api_config("Echo"))  # type: ignore[operator]
    busy_route = {"id": "busy", "host": "127.0.0.1", "port": server.port, "draining": False}
    gateway.set_routes(test_api={"replicas": [busy_route, live]})
    for i in range(10):
        resp = await client.post(f"{gateway.url}/test-api", json={"i": i})
        assert resp.status_code == 200 and resp.json()["payload"] == {"i": i}
    assert app.seen > 0  # it was tried, and each of those requests went on to the live replica

    gateway.set_routes(test_api={"replicas": [busy_route]})
    resp = await client.post(f"{gateway.url}/test-api", json={})
    assert resp.status_code == 503 and resp.headers["retry-after"]
    assert "model cache is busy" in resp.json()["message"]
    assert "x-thrifty-retry-elsewhere" not in resp.headers
