"""The gateway in process, in front of in-process replicas: routing, retries, limits, keys, metrics, admin."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from dataplane_helpers import ReplicaFactory, RunningGateway, api_config
from prometheus_client.parser import text_string_to_metric_families

from thrifty.dataplane.gateway_admin import AdminApp
from thrifty.dataplane.http_server import HttpServer

KEY = "k" * 24


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Resetter:
    """A 'replica' that reads a request, waits for ``release``, then closes without a byte of response."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0

    async def on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.received.set()
        await self.release.wait()
        writer.close()


@pytest.fixture
async def resetter() -> AsyncIterator[Resetter]:
    r = Resetter()
    server = await asyncio.start_server(r.on_conn, "127.0.0.1", 0)
    r.port = int(server.sockets[0].getsockname()[1])
    yield r
    r.release.set()
    server.close()


async def test_routes_strips_prefix_and_reports_status(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a = await start_replica(api_config("Echo"), "a")
    b = await start_replica(api_config("Echo"), "b")
    gateway.set_routes(test_api={"replicas": [a, b]})
    for i in range(10):
        resp = await client.post(gateway.url + "/test-api", json={"i": i})
        assert resp.status_code == 200 and resp.json() == {"payload": {"i": i}, "type": "dict"}
        assert resp.headers["x-request-id"].startswith("gw")
    assert a.app.stats()["requests"]["2xx"] + b.app.stats()["requests"]["2xx"] == 10
    resp = await client.post(gateway.url + "/test-api/some-model/2?x=1", json={})
    assert resp.status_code == 404 and "multi-model" in resp.json()["message"]
    resp = await client.post(gateway.url + "/test-api", json=1, headers={"X-Request-Id": "mine"})
    assert resp.headers["x-request-id"] == "mine"
    status = (await client.get(gateway.url + "/test-api")).json()
    assert status["name"] == "test-api" and status["replicas_ready"] == 2
    assert status["endpoint"].endswith("/test-api")
    assert (await client.get(gateway.url + "/healthz")).status_code == 200


async def test_unknown_api_and_api_without_replicas(gateway: RunningGateway, client: httpx.AsyncClient) -> None:
    gateway.set_routes(empty={"replicas": []})
    resp = await client.post(gateway.url + "/nope", json={})
    assert resp.status_code == 404 and resp.json()["error"] == "api_not_found" and resp.json()["request_id"]
    resp = await client.post(gateway.url + "/empty", json={})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert resp.json()["error"] == "no_replica_available" and "request_id" in resp.json()


async def test_refused_connection_is_retried_on_another_replica(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    live = await start_replica(api_config("Echo"), "live")
    dead = {"id": "dead", "host": "127.0.0.1", "port": closed_port(), "draining": False}
    gateway.set_routes(test_api={"replicas": [dead, live]})
    results = await asyncio.gather(*(client.post(gateway.url + "/test-api", json=i) for i in range(20)))
    assert [r.status_code for r in results] == [200] * 20
    stats = gateway.api_stats("test-api")
    assert stats["retries"] >= 1
    assert stats["requests"]["2xx"] == 20


async def test_draining_replica_is_retried_elsewhere(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    leaving = await start_replica(api_config("Echo"), "leaving")
    staying = await start_replica(api_config("Echo"), "staying")
    leaving.app.begin_drain()  # the replica drains before the gateway's table says so
    gateway.set_routes(test_api={"replicas": [leaving, staying]})
    results = [await client.post(gateway.url + "/test-api", json=i) for i in range(10)]
    assert [r.status_code for r in results] == [200] * 10
    assert staying.app.stats()["requests"]["2xx"] == 10
    assert gateway.api_stats("test-api")["retries"] >= 1


async def test_reset_before_response(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient, resetter: Resetter
) -> None:
    crashing = {"id": "crashing", "host": "127.0.0.1", "port": resetter.port, "draining": False}
    # A replica that is not draining and drops the request may have crashed on it: retried on another replica
    # (test_gateway_crashes.py); with none, the request waits for one within its timeout, then gets 502.
    gateway.set_routes(test_api={"replicas": [crashing], "request_timeout_s": 0.5})
    resetter.release.set()
    resp = await client.post(gateway.url + "/test-api", json={})
    assert resp.status_code == 502 and resp.json()["error"] == "upstream_failed"
    # A replica drained while the request was in flight, then cut off: retried on the current table.
    resetter.release.clear()
    resetter.received.clear()
    pending = asyncio.create_task(client.post(gateway.url + "/test-api", json={}))
    await asyncio.wait_for(resetter.received.wait(), 5)
    live = await start_replica(api_config("Echo"), "live")
    gateway.set_routes(test_api={"replicas": [{**crashing, "draining": True}, live]})
    resetter.release.set()
    resp = await pending
    assert resp.status_code == 200
    assert live.app.stats()["requests"]["2xx"] == 1


async def test_api_keys(gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("Echo"))
    gateway.set_routes(test_api={"replicas": [r], "api_keys_sha256": [hashlib.sha256(KEY.encode()).hexdigest()]})
    assert (await client.post(gateway.url + "/test-api", json=1)).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 24}
    assert (await client.post(gateway.url + "/test-api", json=1, headers=wrong)).status_code == 401
    right = {"Authorization": f"Bearer {KEY}"}
    assert (await client.post(gateway.url + "/test-api", json=1, headers=right)).status_code == 200


async def test_payload_limit_and_timeout(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Echo", request_timeout=30))
    gateway.set_routes(test_api={"replicas": [r], "max_payload": 100, "request_timeout_s": 0.1})
    resp = await client.post(gateway.url + "/test-api", content=b"x" * 200)
    assert resp.status_code == 413
    assert r.app.stats()["requests"] == {"2xx": 0, "4xx": 0, "5xx": 0}  # never forwarded
    resp = await client.post(gateway.url + "/test-api", json={"sleep": 1.5})
    assert resp.status_code == 504 and resp.json()["error"] == "timeout"


async def test_metrics_text_parses(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Echo"))
    gateway.set_routes(test_api={"replicas": [r]})
    for _ in range(3):
        await client.post(gateway.url + "/test-api", json=1)
    await client.post(gateway.url + "/test-api", json={"raise": "x"})
    text = (await client.get(gateway.url + "/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("thrifty_requests_total", (("api", "test-api"), ("code_class", "2xx")))] == 3
    assert samples[("thrifty_requests_total", (("api", "test-api"), ("code_class", "5xx")))] == 1
    assert samples[("thrifty_request_duration_seconds_count", (("api", "test-api"),))] == 4
    assert samples[("thrifty_replicas_ready", (("api", "test-api"),))] == 1
    assert samples[("thrifty_in_flight", (("api", "test-api"),))] == 0
    assert ("thrifty_retries_total", (("api", "test-api"),)) in samples


async def test_admin_api(gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("Echo"), "r9")
    admin = HttpServer(AdminApp(gateway.app, "s3cret"), host="127.0.0.1", port=0)
    await admin.start()
    try:
        url = f"http://127.0.0.1:{admin.port}/_thrifty"
        assert (await client.get(url + "/stats")).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        table = {"apis": {"echo": {"replicas": [{"id": "r9", "host": "127.0.0.1", "port": r.port, "draining": False}]}}}
        assert (
            await client.put(url + "/routes", json=table, headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        assert (await client.put(url + "/routes", json={"apis": {"x": {"bogus": 1}}}, headers=auth)).status_code == 400
        assert (await client.put(url + "/routes", json=table, headers=auth)).status_code == 200
        assert (await client.post(gateway.url + "/echo", json=5)).status_code == 200
        stats = (await client.get(url + "/stats", headers=auth)).json()["apis"]["echo"]
        assert stats["requests"] == {"2xx": 1, "4xx": 0, "5xx": 0}
        assert stats["latency"]["count"] == 1 and sum(stats["latency"]["counts"]) == 1
        assert len(stats["latency"]["counts"]) == len(stats["latency"]["bounds_s"]) + 1
        assert stats["replicas"] == {"r9": {"in_flight": 0}} and stats["in_flight"] == 0
        # One request, alone: in flight for exactly its latency (both read from the gateway's clock).
        assert stats["in_flight_seconds"] == stats["latency"]["sum_s"] > 0
        routes = (await client.get(url + "/routes", headers=auth)).json()
        assert routes["apis"]["echo"]["replicas"][0]["port"] == r.port
    finally:
        await admin.stop(0.5)
