"""The replica server in process: payloads, errors, admission, timeouts, stats, drain."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from dataplane_helpers import ReplicaFactory, api_config, eventually

from thrifty.dataplane.replica import PREDICTOR_FAILED


async def test_json_bytes_and_text_payloads_and_results(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Echo"))
    resp = await client.post(r.url + "/", json={"a": [1, 2]}, headers={"X-Request-Id": "req-1"})
    assert resp.status_code == 200
    assert resp.json() == {"payload": {"a": [1, 2]}, "type": "dict"}
    assert resp.headers["x-request-id"] == "req-1"
    # curl -d sends application/x-www-form-urlencoded: a JSON-looking body is still JSON
    resp = await client.post(
        r.url + "/", content=b'{"x": 1}', headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert resp.json()["type"] == "dict"
    octets = {"content-type": "application/octet-stream"}
    resp = await client.post(r.url + "/", content=b"\x00\x01", headers=octets)
    assert resp.json() == {"type": "bytes", "length": 2}
    resp = await client.post(
        r.url + "/", content="héllo".encode(), headers={"content-type": "text/plain; charset=utf-8"}
    )
    assert resp.json() == {"payload": "héllo", "type": "str"}
    resp = await client.post(r.url + "/", json={"bytes": "raw"})
    assert resp.headers["content-type"] == "application/octet-stream" and resp.content == b"raw"
    resp = await client.post(r.url + "/", json={"text": "plain"})
    assert resp.headers["content-type"].startswith("text/plain") and resp.text == "plain"


async def test_async_predictor(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("AsyncEcho"))
    resp = await client.post(r.url + "/", json=[1, 2, 3])
    assert resp.json() == {"payload": [1, 2, 3], "async": True}


async def test_client_errors(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("Echo", max_payload=1000))
    resp = await client.post(r.url + "/", content=b'{"a": ', headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_payload" and "request_id" in resp.json()
    resp = await client.post(r.url + "/", content=b"x" * 1001, headers={"content-type": "application/octet-stream"})
    assert resp.status_code == 413
    resp = await client.get(r.url + "/nope")
    assert resp.status_code == 404
    resp = await client.post(r.url + "/some-model/3", json={})
    assert resp.status_code == 404 and "not a multi-model API" in resp.json()["message"]
    assert (await client.get(r.url + "/")).status_code == 405


async def test_predictor_exception_is_500_with_request_id_and_traceback_only_in_log(
    start_replica: ReplicaFactory, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = await start_replica(api_config("Echo"))
    with caplog.at_level(logging.ERROR, logger="thrifty.replica"):
        resp = await client.post(r.url + "/", json={"raise": "bad input"}, headers={"X-Request-Id": "rid-42"})
    assert resp.status_code == 500
    body = resp.json()
    assert body == {"error": "predictor_error", "message": PREDICTOR_FAILED, "request_id": "rid-42"}
    assert "bad input" not in resp.text and "ValueError" not in resp.text and "Traceback" not in resp.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "request_id=rid-42" in logged and "Traceback" in logged and "basic.py" in logged
    resp = await client.post(r.url + "/", json={"unserialisable": True})
    assert resp.status_code == 500 and resp.json()["message"] == PREDICTOR_FAILED
    # the replica lives on
    assert (await client.post(r.url + "/", json=1)).status_code == 200


@pytest.mark.parametrize("cls", ["Echo", "AsyncEcho"])
async def test_request_timeout_is_504(cls: str, start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config(cls, request_timeout=0.2))
    resp = await client.post(r.url + "/", json={"sleep": 0.6})
    assert resp.status_code == 504
    assert resp.json()["error"] == "timeout"
    if cls == "AsyncEcho":  # the coroutine was cancelled: its slot is free at once
        assert r.app.stats()["executing"] == 0
    else:  # a thread cannot be stopped: its slot stays taken until predict() really returns
        assert r.app.stats()["executing"] == 1
        await eventually(lambda: r.app.stats()["executing"] == 0)
    assert (await client.post(r.url + "/", json=1)).status_code == 200


async def test_admission_queue_full_is_503_with_retry_after(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Gated", max_concurrency=1, max_queue_length=2))
    inst = r.instance
    tasks = [asyncio.create_task(client.post(r.url + "/", json=i)) for i in range(3)]
    await asyncio.to_thread(inst.started.acquire, True, 5)  # the first one is executing
    await eventually(lambda: r.app.stats()["in_flight"] == 3)  # the other two are queued
    stats = r.app.stats()
    assert (stats["executing"], stats["queued"]) == (1, 2)
    rejected = await client.post(r.url + "/", json=99)
    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == "1"
    assert rejected.json()["error"] == "overloaded"
    inst.gate.set()
    results = await asyncio.gather(*tasks)
    assert [x.json() for x in results] == [{"done": i} for i in range(3)]
    assert inst.order == [0, 1, 2]  # FIFO
    stats = r.app.stats()
    assert stats["in_flight"] == 0 and stats["requests"] == {"2xx": 3, "4xx": 0, "5xx": 1}


async def test_health_readiness_and_stats(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("Echo"), replica_id="rep-7")
    assert (await client.get(r.url + "/healthz")).status_code == 200
    assert (await client.get(r.url + "/readyz")).status_code == 200
    stats = (await client.get(r.url + "/_thrifty/stats")).json()
    assert stats == {
        "replica_id": "rep-7",
        "ready": True,
        "draining": False,
        "in_flight": 0,
        "queued": 0,
        "executing": 0,
        "requests": {"2xx": 0, "4xx": 0, "5xx": 0},
    }


async def test_drain_finishes_in_flight_and_refuses_new_work(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Gated", max_concurrency=1, max_queue_length=5))
    inst = r.instance
    first = asyncio.create_task(client.post(r.url + "/", json="in-flight"))
    await asyncio.to_thread(inst.started.acquire, True, 5)
    queued = asyncio.create_task(client.post(r.url + "/", json="queued"))
    await eventually(lambda: r.app.stats()["queued"] == 1)
    draining = asyncio.create_task(r.drain_and_stop())
    refused = await client.post(r.url + "/", json="new")
    assert refused.status_code == 503
    assert refused.headers["x-thrifty-draining"] == "1"
    assert (await client.get(r.url + "/readyz")).status_code == 503
    inst.gate.set()
    assert (await first).json() == {"done": "in-flight"}
    assert (await queued).json() == {"done": "queued"}
    await asyncio.wait_for(draining, 5)
