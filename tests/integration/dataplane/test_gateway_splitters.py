"""Splitters at the gateway, in process, in front of in-process replicas: weighted shares, stickiness, the
backend header, shadow copies that never hold the client up, and weight changes under load with 0 failures."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from typing import Any

import httpx
from dataplane_helpers import ReplicaFactory, RunningGateway, RunningReplica, api_config, eventually

from thrifty.dataplane.gateway_routes import RoutesDoc


def named(name: str) -> Any:
    return api_config("Named", "splitting.py", name=name, config={"name": name})


def api_doc(replica: RunningReplica, **extra: Any) -> dict[str, Any]:
    entry = {"id": replica.app.replica_id, "host": "127.0.0.1", "port": replica.port, "draining": False}
    return {"replicas": [entry], **extra}


def push(gateway: RunningGateway, apis: dict[str, dict[str, Any]], splitters: dict[str, Any]) -> None:
    gateway.app.set_routes(RoutesDoc.model_validate({"apis": apis, "splitters": splitters}))


async def two_backends(start_replica: ReplicaFactory) -> tuple[RunningReplica, RunningReplica]:
    return await start_replica(named("a"), "a1"), await start_replica(named("b"), "b1")


def splitter_stats(gateway: RunningGateway, name: str) -> dict[str, Any]:
    splitters: Any = gateway.app.stats_json()["splitters"]
    return splitters[name]  # type: ignore[no-any-return]


async def test_weighted_shares_are_exact_and_the_backend_is_named(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a, b = await two_backends(start_replica)
    push(
        gateway,
        {"a": api_doc(a), "b": api_doc(b)},
        {"s": {"backends": [{"api": "a", "weight": 3}, {"api": "b", "weight": 1}]}},
    )
    served: Counter[str] = Counter()
    for _ in range(400):
        resp = await client.post(gateway.url + "/s", json={})
        assert resp.status_code == 200
        backend = resp.headers["x-thrifty-backend"]
        assert resp.json() == {"served_by": backend}
        served[backend] += 1
    assert served == {"a": 300, "b": 100}  # smooth round robin: exact over every 4 requests
    stats = splitter_stats(gateway, "s")["backends"]
    assert stats["a"]["requests"]["2xx"] == 300 and stats["b"]["requests"]["2xx"] == 100
    assert stats["a"]["latency"]["count"] == 300
    # The APIs count these requests too (their autoscaling sees them).
    assert gateway.api_stats("a")["requests"]["2xx"] == 300
    # A plain request to an API is not a splitter's: no backend header.
    plain = await client.post(gateway.url + "/a", json={})
    assert "x-thrifty-backend" not in plain.headers
    assert (await client.get(gateway.url + "/s")).status_code == 405


async def test_sticky_header_keeps_a_user_on_one_backend(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a, b = await two_backends(start_replica)
    split = {"backends": [{"api": "a", "weight": 1}, {"api": "b", "weight": 1}], "sticky_header": "X-User"}
    push(gateway, {"a": api_doc(a), "b": api_doc(b)}, {"s": split})
    seen: dict[str, set[str]] = {}
    for round_ in range(3):
        for user in range(40):
            resp = await client.post(gateway.url + "/s", json={}, headers={"X-User": f"user-{user}"})
            seen.setdefault(f"user-{user}", set()).add(resp.headers["x-thrifty-backend"])
        assert round_ >= 0
    assert all(len(backends) == 1 for backends in seen.values())
    per_backend = Counter(next(iter(v)) for v in seen.values())
    assert set(per_backend) == {"a", "b"}  # 40 users by hash: both backends get some


async def test_splitter_uses_the_backend_api_keys(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a = await start_replica(named("a"), "a1")
    key = "k" * 24
    doc = api_doc(a, api_keys_sha256=[hashlib.sha256(key.encode()).hexdigest()])
    push(gateway, {"a": doc}, {"s": {"backends": [{"api": "a", "weight": 1}]}})
    resp = await client.post(gateway.url + "/s", json={})
    assert resp.status_code == 401 and resp.headers["x-thrifty-backend"] == "a"
    resp = await client.post(gateway.url + "/s", json={}, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200 and resp.json() == {"served_by": "a"}


async def test_broken_shadow_never_fails_the_client_and_is_recorded(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a = await start_replica(named("a"), "a1")
    broken = await start_replica(api_config("Broken", "splitting.py", name="shadow"), "sh1")
    split = {"backends": [{"api": "a", "weight": 1}], "shadow": {"api": "shadow", "percent": 50}}
    push(gateway, {"a": api_doc(a), "shadow": api_doc(broken)}, {"s": split})
    for _ in range(20):
        resp = await client.post(gateway.url + "/s", json={})
        assert resp.status_code == 200 and resp.json() == {"served_by": "a"}

    def shadow_done() -> bool:
        shadow = splitter_stats(gateway, "s")["shadow"].get("shadow")
        return shadow is not None and shadow["requests"]["5xx"] == 10

    await eventually(shadow_done)  # half the requests copied, each answered 500 by the shadow
    assert splitter_stats(gateway, "s")["backends"]["a"]["requests"] == {"2xx": 20, "4xx": 0, "5xx": 0}
    metrics = (await client.get(gateway.url + "/metrics")).text
    assert 'thrifty_shadow_requests_total{api="shadow",code_class="5xx",splitter="s"} 10.0' in metrics
    assert 'thrifty_splitter_requests_total{backend="a",code_class="2xx",splitter="s"} 20.0' in metrics


async def test_stuck_shadow_never_delays_the_client_and_overflow_is_dropped(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a = await start_replica(named("a"), "a1")
    stuck = await start_replica(api_config("Stuck", "splitting.py", name="shadow", max_queue_length=100), "sh1")
    split = {"backends": [{"api": "a", "weight": 1}], "shadow": {"api": "shadow", "percent": 100}}
    push(gateway, {"a": api_doc(a), "shadow": api_doc(stuck)}, {"s": split})
    gateway.app.shadow.max_pending = 3
    try:
        # Every shadow copy hangs until the gate opens: were the client waiting on any, this would never end.
        for _ in range(25):
            resp = await client.post(gateway.url + "/s", json={})
            assert resp.status_code == 200
        assert gateway.app.shadow.pending == 3
        assert splitter_stats(gateway, "s")["shadow_dropped"] == 22
    finally:
        stuck.instance.gate.set()
    await eventually(lambda: gateway.app.shadow.pending == 0)
    shadow = splitter_stats(gateway, "s")["shadow"]["shadow"]
    assert shadow["requests"]["2xx"] == 3


async def test_weight_change_and_backend_swap_under_load_fail_nothing(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    a, b = await two_backends(start_replica)
    c = await start_replica(named("c"), "c1")
    apis = {"a": api_doc(a), "b": api_doc(b), "c": api_doc(c)}
    tables = [
        {"backends": [{"api": "a", "weight": 90}, {"api": "b", "weight": 10}]},
        {"backends": [{"api": "a", "weight": 50}, {"api": "b", "weight": 50}]},
        {"backends": [{"api": "c", "weight": 1}]},  # a swap
        {"backends": [{"api": "a", "weight": 1}, {"api": "c", "weight": 3}]},
    ]
    push(gateway, apis, {"s": tables[0]})
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            statuses[(await client.post(gateway.url + "/s", json={})).status_code] += 1

    workers = [asyncio.create_task(load()) for _ in range(8)]
    for i in range(40):
        push(gateway, apis, {"s": tables[i % len(tables)]})
        before = sum(statuses.values())
        await eventually(lambda before=before: sum(statuses.values()) >= before + 5)  # type: ignore[misc]
    push(gateway, apis, {"s": tables[2]})
    await eventually(lambda: sum(statuses.values()) > 0)
    stop.set()
    await asyncio.gather(*workers)
    assert set(statuses) == {200}
    after = await client.post(gateway.url + "/s", json={})
    assert after.headers["x-thrifty-backend"] == "c"
