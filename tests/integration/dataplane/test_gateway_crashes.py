"""Replicas that die under load: the gateway retries what they cut off before answering, bounded for a
poison request, and holds requests while a lost replica is replaced. Real replica processes, killed for real."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dataplane_helpers import ReplicaFactory, RunningGateway, api_config, eventually, eventually_async
from test_processes import Proc, ready_replica, spawn_replica

CLIENTS = 12


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    """Replica processes started by a test, killed at its end."""
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.returncode is None:
            p.proc.kill()
            await p.proc.wait()


async def start_replicas(tmp: Path, procs: list[Proc], client: httpx.AsyncClient, n: int) -> list[dict[str, object]]:
    """n Echo replica processes, ready; returns their routing-table rows."""
    api = api_config("Echo", max_concurrency=8)
    new = [await spawn_replica(tmp, api, f"r{len(procs) + i}") for i in range(n)]
    procs.extend(new)
    rows: list[dict[str, object]] = []
    for i, p in enumerate(new):
        port = await ready_replica(p, client)
        rows.append({"id": f"r{len(procs) - n + i}", "host": "127.0.0.1", "port": port, "draining": False})
    return rows


async def replica_in_flight(client: httpx.AsyncClient, port: object) -> int:
    return int((await client.get(f"http://127.0.0.1:{port}/_thrifty/stats")).json()["in_flight"])


async def test_replica_killed_under_load_fails_no_request(
    tmp_path: Path, gateway: RunningGateway, client: httpx.AsyncClient, procs: list[Proc]
) -> None:
    rows = await start_replicas(tmp_path, procs, client, 2)
    gateway.set_routes(test_api={"replicas": rows})
    victim, survivor = procs
    killed = asyncio.Event()
    statuses: list[int] = []

    async def client_loop(i: int) -> None:
        n = 0
        while not killed.is_set() or n < 8:  # keeps going for 8 requests after the kill
            resp = await client.post(f"{gateway.url}/test-api", json={"sleep": 0.05})
            statuses.append(resp.status_code)
            n = n + 1 if killed.is_set() else 0

    loops = [asyncio.create_task(client_loop(i)) for i in range(CLIENTS)]
    # Kill the victim while it has requests in flight (the routing spreads the load over both replicas).
    await eventually_async(lambda: _busy(client, rows[0]["port"], 2), timeout_s=10)
    victim.proc.send_signal(signal.SIGKILL)
    assert await victim.proc.wait() == -signal.SIGKILL
    killed.set()
    await asyncio.wait_for(asyncio.gather(*loops), 30)

    failures = [s for s in statuses if s != 200]
    assert failures == [] and len(statuses) >= CLIENTS * 8
    stats = _api_stats(gateway, "test-api")
    assert stats["retries"] >= 2  # at least the requests cut off in flight went to the survivor
    assert stats["requests"]["2xx"] == len(statuses)
    assert survivor.proc.returncode is None


def _api_stats(gateway: RunningGateway, api: str) -> dict[str, Any]:
    apis = gateway.app.stats_json()["apis"]
    assert isinstance(apis, dict)
    stats = apis[api]
    assert isinstance(stats, dict)
    return stats


async def _busy(client: httpx.AsyncClient, port: object, n: int) -> bool:
    return await replica_in_flight(client, port) >= n


async def test_poison_request_kills_at_most_two_replicas_then_502(
    tmp_path: Path, gateway: RunningGateway, client: httpx.AsyncClient, procs: list[Proc]
) -> None:
    rows = await start_replicas(tmp_path, procs, client, 3)
    gateway.set_routes(test_api={"replicas": rows})
    pending = asyncio.create_task(client.post(f"{gateway.url}/test-api", json={"exit": 1}))  # crashes any replica
    # The first replica it reached and the one it was retried on (1 + RESET_RETRIES) exit; the third never saw it.
    await eventually(lambda: sum(p.proc.returncode is not None for p in procs) == 2, timeout_s=10)
    assert [p.proc.returncode for p in procs].count(1) == 2
    # At the bound the request waits, sent nowhere, for the operator's verdict: its next table drops the two
    # as crashes (not listed as lost with their node), and the request gets 502.
    assert not pending.done()
    gateway.set_routes(
        test_api={"replicas": [r for r, p in zip(rows, procs, strict=True) if p.proc.returncode is None]}
    )
    resp = await asyncio.wait_for(pending, 10)
    assert resp.status_code == 502 and resp.json()["error"] == "upstream_failed"
    assert [p.proc.returncode for p in procs].count(1) == 2
    assert _api_stats(gateway, "test-api")["retries"] == 1
    ok = await client.post(f"{gateway.url}/test-api", json={"a": 1})  # the last replica still serves
    assert ok.status_code == 200 and ok.json() == {"payload": {"a": 1}, "type": "dict"}


async def test_request_cut_off_by_the_only_replica_waits_for_its_replacement(
    tmp_path: Path, gateway: RunningGateway, client: httpx.AsyncClient, procs: list[Proc]
) -> None:
    rows = await start_replicas(tmp_path, procs, client, 2)
    first, spare = rows
    gateway.set_routes(test_api={"replicas": [first]})
    pending = asyncio.create_task(client.post(f"{gateway.url}/test-api", json={"sleep": 2}))
    await eventually_async(lambda: _busy(client, first["port"], 1))
    procs[0].proc.send_signal(signal.SIGKILL)
    await procs[0].proc.wait()
    # The request was cut off and has nowhere to go: it waits (in flight at the gateway), not 502.
    route = gateway.app.routes[b"test-api"]
    await eventually(lambda: route.lost_s is not None)
    assert not pending.done() and route.stats.in_flight == 1
    gateway.set_routes(test_api={"replicas": []})  # the operator saw the exit: the dead replica leaves
    gateway.set_routes(test_api={"replicas": [spare]})  # its replacement is ready
    resp = await asyncio.wait_for(pending, 10)
    assert resp.status_code == 200 and resp.json() == {"slept": 2}


async def test_requests_wait_for_a_replacement_when_every_replica_is_dead(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = {"id": "dead", "host": "127.0.0.1", "port": dead_port, "draining": False}
    gateway.set_routes(test_api={"replicas": [dead]})
    pending = [asyncio.create_task(client.post(f"{gateway.url}/test-api", json=i)) for i in range(5)]
    route = gateway.app.routes[b"test-api"]
    await eventually(lambda: route.stats.in_flight == 5 and route.lost_s is not None)
    live = await start_replica(api_config("Echo"), "replacement")
    gateway.set_routes(test_api={"replicas": [live]})
    results = await asyncio.wait_for(asyncio.gather(*pending), 10)
    assert [r.status_code for r in results] == [200] * 5
    assert [r.json()["payload"] for r in results] == list(range(5))


async def test_a_dead_replica_with_no_replacement_gets_503_at_the_timeout(
    gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = {"id": "dead", "host": "127.0.0.1", "port": dead_port, "draining": False}
    gateway.set_routes(test_api={"replicas": [dead], "request_timeout_s": 0.2})
    resp = await client.post(f"{gateway.url}/test-api", json={})
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert resp.json()["error"] == "no_replica_available"


async def test_a_draining_table_is_answered_at_once_even_after_a_loss(
    gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = {"id": "dead", "host": "127.0.0.1", "port": dead_port, "draining": False}
    gateway.set_routes(test_api={"replicas": [dead], "request_timeout_s": 0.2})
    await client.post(f"{gateway.url}/test-api", json={})  # the loss is recorded
    # The platform stops: every replica draining. A 30 s timeout: waiting would fail the client's 10 s one.
    gateway.set_routes(test_api={"replicas": [{**dead, "draining": True}], "request_timeout_s": 30})
    assert gateway.app.routes[b"test-api"].lost_s is not None
    resp = await client.post(f"{gateway.url}/test-api", json={})
    assert resp.status_code == 503 and resp.json()["error"] == "no_replica_available"


async def _resetting_replica() -> tuple[asyncio.Server, int]:
    """A replica whose node is being taken away: it reads a request and closes the connection unanswered."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


@pytest.mark.parametrize("verdict", ["lost_with_node", "crash"])
async def test_two_replicas_cut_off_by_their_node_going_away_are_no_poison(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient, verdict: str
) -> None:
    """A hard spot kill takes a node and every replica on it: a request reset by two of them waits for the
    operator's verdict instead of 502. Lost with their node: retried on the replacement (200). Gone as crashes:
    the poison bound holds (502), and the replacement never sees the request."""
    servers = [await _resetting_replica() for _ in range(2)]
    try:
        rows = [{"id": f"n{i}", "host": "127.0.0.1", "port": port, "draining": False} for i, (_, port) in
                enumerate(servers)]  # fmt: skip
        gateway.set_routes(test_api={"replicas": rows})
        pending = asyncio.create_task(client.post(f"{gateway.url}/test-api", json={"a": 1}))
        route = gateway.app.routes[b"test-api"]
        await eventually(lambda: route.stats.retries == 1 and route.stats.in_flight == 1)
        assert not pending.done()  # both reset it: at the poison bound, waiting for the verdict
        live = await start_replica(api_config("Echo"), "replacement")
        lost = ["n0", "n1"] if verdict == "lost_with_node" else []
        gateway.set_routes(test_api={"replicas": [live], "lost_with_node": lost})
        resp = await asyncio.wait_for(pending, 10)
        if verdict == "lost_with_node":
            assert resp.status_code == 200 and resp.json() == {"payload": {"a": 1}, "type": "dict"}
        else:
            assert resp.status_code == 502 and resp.json()["error"] == "upstream_failed"
            assert live.app.stats()["requests"] == {"2xx": 0, "4xx": 0, "5xx": 0}
    finally:
        for server, _ in servers:
            server.close()
