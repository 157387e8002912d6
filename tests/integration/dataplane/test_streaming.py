"""Streaming predictions end to end in process: client -> gateway -> replica -> generator, on loopback.

Chunk timing is checked with gated generators (each item after the first waits for the test's ``step()``),
never with sleeps; disconnects with the generators' own ``finally`` events, awaited with generous timeouts.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import orjson
import pytest
from dataplane_helpers import ReplicaFactory, RunningGateway, RunningReplica, api_config, eventually

SSE = {"accept": "text/event-stream"}


def streaming(cls: str, **serving: Any) -> Any:
    return api_config(cls, "streaming.py", **serving)


async def through_gateway(gateway: RunningGateway, *replicas: RunningReplica) -> str:
    gateway.set_routes(api={"replicas": list(replicas)})
    return gateway.url + "/api"


async def wait_thread_event(event: threading.Event, timeout_s: float = 5.0) -> None:
    await eventually(event.is_set, timeout_s)


@pytest.mark.parametrize("cls", ["AsyncSteps", "SyncSteps"])
async def test_chunks_arrive_one_by_one_and_the_stream_counts_in_flight(
    cls: str, start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(streaming(cls, max_concurrency=1))
    url = await through_gateway(gateway, replica)
    gen = replica.instance
    async with client.stream("POST", url, json={"n": 3}) as resp:
        assert resp.status_code == 200
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.headers["content-type"].startswith("text/plain")
        chunks = resp.aiter_raw()
        got = [await anext(chunks)]
        # The generator has produced one item and waits: the chunk came before the generator went on.
        assert got == [b"tok0 "] and gen.produced == 1 and not gen.closed.is_set()
        assert gateway.api_stats("api")["in_flight"] == 1
        assert replica.app.stats()["executing"] == 1
        for i in (1, 2):
            gen.step()
            got.append(await anext(chunks))
            assert got[-1] == f"tok{i} ".encode() and gen.produced == i + 1
        assert [c async for c in chunks] == []
    assert gen.closed.is_set() or await asyncio.to_thread(gen.closed.wait, 5)
    await eventually(lambda: gateway.api_stats("api")["in_flight"] == 0)
    await eventually(lambda: replica.app.stats()["executing"] == 0)
    assert gateway.api_stats("api")["requests"]["2xx"] == 1


async def test_sse_framing_and_content_types(
    start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    url = await through_gateway(gateway, await start_replica(streaming("Shapes")))
    items = ["two\nlines", {"x": 1}, b"raw".decode(), "crlf\r\nend"]
    resp = await client.post(url, json={"items": items}, headers=SSE)
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    assert resp.headers["cache-control"] == "no-cache"
    assert resp.content == (b'data: two\ndata: lines\n\ndata: {"x":1}\n\ndata: raw\n\ndata: crlf\ndata: end\n\n')
    # Without SSE: the items as they are, JSON as one line each; the first item sets the content type.
    resp = await client.post(url, json={"items": [{"a": 1}, [2], "text"]})
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert resp.content == b'{"a":1}\n[2]\ntext'
    resp = await client.post(url, json={"items": []})
    assert resp.status_code == 200 and resp.content == b""


async def test_plain_predict_returning_a_generator_streams(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(streaming("ReturnsGenerator"))
    resp = await client.post(replica.url + "/", json={"n": 3})
    assert resp.headers["transfer-encoding"] == "chunked" and resp.text == "0,1,2,"


async def test_disconnect_cancels_an_async_generator_and_frees_its_slot(
    start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(streaming("AsyncSteps", max_concurrency=1, max_queue_length=0))
    url = await through_gateway(gateway, replica)
    gen = replica.instance
    async with client.stream("POST", url, json={"n": 100}) as resp:
        assert await anext(resp.aiter_raw()) == b"tok0 "
    # Leaving the block closes the connection mid-stream: the gateway drops its upstream connection and the
    # replica cancels the generator where it awaits.
    await asyncio.wait_for(gen.closed.wait(), 5)
    assert gen.cancelled and gen.produced == 1
    await eventually(lambda: replica.app.stats()["executing"] == 0)
    await eventually(lambda: gateway.api_stats("api")["in_flight"] == 0)
    # The only slot is free again (no queue: a held slot would be a 503).
    gen.closed.clear()
    async with client.stream("POST", url, json={"n": 2}) as resp:
        assert resp.status_code == 200
        assert await anext(resp.aiter_raw()) == b"tok0 "
        gen.step()


async def test_disconnect_closes_a_sync_generator_and_frees_its_slot(
    start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(streaming("Endless", max_concurrency=1, max_queue_length=0))
    url = await through_gateway(gateway, replica)
    gen = replica.instance
    async with client.stream("POST", url, json={"sync": True, "interval": 0.001}) as resp:
        received = 0
        async for chunk in resp.aiter_raw():
            received += len(chunk)
            if received >= 5:
                break
    await wait_thread_event(gen.sync_closed)  # the generator's finally ran: it was closed
    await eventually(lambda: replica.app.stats()["executing"] == 0)
    async with client.stream("POST", url, json={"sync": True}) as resp:
        assert resp.status_code == 200
        assert await anext(resp.aiter_raw()) == b"x"


async def test_slow_reader_stops_the_generator(start_replica: ReplicaFactory, gateway: RunningGateway) -> None:
    replica = await start_replica(streaming("Firehose"))
    await through_gateway(gateway, replica)
    gen = replica.instance
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"POST /api HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    # The client reads nothing more: once every buffer on the way is full, the generator is not asked again.
    last, still = -1, 0
    for _ in range(2000):
        if gen.produced == last:
            still += 1
            if still >= 40:  # 0.4 s without a new item
                break
        else:
            last, still = gen.produced, 0
        await asyncio.sleep(0.01)
    assert still >= 40, f"the generator never stopped ({gen.produced} chunks of 64 KiB)"
    # What it produced fits in the socket buffers and a few chunks per hop, not an unbounded queue.
    assert gen.produced < 600, gen.produced
    # Reading again lets it go on.
    before, read = gen.produced, 0
    while gen.produced == before and read < 2 * before * 65536:
        read += len(await reader.read(65536))
    assert gen.produced > before
    writer.close()
    await asyncio.wait_for(gen.closed.wait(), 5)


@pytest.mark.parametrize("sync", [False, True])
async def test_mid_stream_error_cuts_a_chunked_stream(
    sync: bool, start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(streaming("FailsMidway"))
    url = await through_gateway(gateway, replica)
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):  # no terminal chunk: the client knows it is incomplete
        async with client.stream("POST", url, json={"sync": sync}) as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_raw():
                got += chunk
    assert got == b"ok0\nok1\n"
    await eventually(lambda: replica.app.stats()["executing"] == 0)
    await eventually(lambda: gateway.api_stats("api")["in_flight"] == 0)


async def test_mid_stream_error_is_an_sse_error_event(
    start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    replica = await start_replica(streaming("FailsMidway"))
    url = await through_gateway(gateway, replica)
    resp = await client.post(url, json={"good": 1}, headers={**SSE, "x-request-id": "req-9"})
    assert resp.status_code == 200
    events = resp.content.split(b"\n\n")
    assert events[0] == b"data: ok0\ndata: "  # the chunk "ok0\n": its trailing newline is an empty data line
    assert events[1].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[1].split(b"data: ", 1)[1])
    assert error["error"] == "predictor_error" and error["request_id"] == "req-9"
    assert "generator broke" not in resp.text  # the details are in the replica's log only
    assert "generator broke" in caplog.text
    # Before the first item, a failure is a plain 500.
    resp = await client.post(url, json={"good": 0})
    assert resp.status_code == 500 and resp.json()["error"] == "predictor_error"


async def test_idle_timeout_and_first_chunk_timeout(
    start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    replica = await start_replica(streaming("Stalls", stream_idle_timeout=0.2, request_timeout=0.5))
    url = await through_gateway(gateway, replica)
    resp = await client.post(url, json={"stall": 30}, headers=SSE)
    assert resp.status_code == 200
    assert resp.content.startswith(b"data: first \n\nevent: error\n")
    assert b"stream_idle_timeout" in resp.content
    got = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", url, json={"stall": 30}) as stream:
            async for chunk in stream.aiter_raw():
                got += chunk
    assert got == b"first "
    # request_timeout bounds the time to the first chunk: 504 before any response byte.
    resp = await client.post(url, json={"first_stall": 30})
    assert resp.status_code == 504 and resp.json()["error"] == "timeout"
    await eventually(lambda: replica.app.stats()["executing"] == 0)


async def test_max_stream_duration_ends_a_stream(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    replica = await start_replica(streaming("Endless", max_stream_duration=0.3))
    resp = await client.post(replica.url + "/", json={"interval": 0.01}, headers=SSE)
    assert resp.content.endswith(b"\n\n") and b"event: error" in resp.content
    assert b"max_stream_duration" in resp.content
    await asyncio.wait_for(replica.instance.async_closed.wait(), 5)


async def test_a_started_stream_is_never_retried(
    start_replica: ReplicaFactory, gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    first = await start_replica(streaming("AsyncSteps"), "r1")
    second = await start_replica(streaming("AsyncSteps"), "r2")
    url = await through_gateway(gateway, first, second)
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", url, json={"n": 3}) as resp:
            chunks = resp.aiter_raw()
            assert await anext(chunks) == b"tok0 "
            serving = first if first.instance.produced else second
            await serving.server.stop(0)  # the replica goes away mid-stream: its connections are cut
            async for _ in chunks:
                pass
    other = second if serving is first else first
    assert other.instance.produced == 0 and other.app.stats()["requests"]["2xx"] == 0
    assert gateway.api_stats("api")["retries"] == 0
    await eventually(lambda: gateway.api_stats("api")["in_flight"] == 0)
