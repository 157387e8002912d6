"""The gateway in front of multi-model replicas (all in process): held-model reports, model-aware choice,
bounded load, the routing switch, model figures in stats and /metrics."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dataplane_helpers import RunningGateway, eventually
from model_helpers import ModelReplica, model_api, put_model

from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.gateway_models import ModelPoller
from thrifty.dataplane.gateway_routes import RoutesDoc
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.upstream import UpstreamPool
from thrifty.policy.model_routing import rendezvous_order

IDS = ["mm-r1", "mm-r2", "mm-r3"]


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[list[ModelReplica]]:
    source = tmp_path / "models"
    for name in ("en-fr", "en-de", "fr-en", "de-en"):
        put_model(source, name, 1)
    put_model(source, "en-fr", 2)
    started = []
    for rid in IDS:
        api = model_api(source, config={"tag": rid}, serving={"max_concurrency": 1})
        started.append(await ModelReplica.start(api, rid, tmp_path / "cache" / rid))
    yield started
    for r in started:
        await r.stop()


def routes(reps: list[ModelReplica], **extra: Any) -> RoutesDoc:
    entries = [{"id": r.id, "host": "127.0.0.1", "port": r.port} for r in reps]
    return RoutesDoc.model_validate({"apis": {"mm": {"replicas": entries, "multi_model": True, **extra}}})


@pytest.fixture
def poller(gateway: RunningGateway) -> ModelPoller:
    return ModelPoller(gateway.pool, lambda: list(gateway.app.routes.values()))


def first_choice(model: bytes, ids: list[str] = IDS) -> str:
    return ids[rendezvous_order(model, ids)[0]]


async def tags(client: httpx.AsyncClient, url: str, n: int, payload: Any = None) -> list[str]:
    return [(await client.post(url, json=payload or {})).json()["tag"] for _ in range(n)]


async def test_a_cold_model_goes_to_its_rendezvous_replica_and_the_holder_is_reported(
    replicas: list[ModelReplica], gateway: RunningGateway, poller: ModelPoller, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(routes(replicas))
    for model in ("en-fr", "fr-en", "de-en"):
        assert set(await tags(client, f"{gateway.url}/mm/{model}", 4)) == {first_choice(model.encode())}
    assert sum(len(r.instance.loads) for r in replicas) == 3  # one load per model, on one replica each
    await poller.poll_once()
    models = gateway.api_stats("mm")["models"]
    assert models["en-fr"]["replicas"] == {first_choice(b"en-fr"): [2]}
    assert models["en-fr"]["versions"] == [1, 2]
    assert models["en-fr"]["hits"] == 3 and models["en-fr"]["misses"] == 1 and models["en-fr"]["loads"] == 1
    assert set(models) == {"en-fr", "fr-en", "de-en"}
    status = (await client.get(f"{gateway.url}/mm")).json()
    assert status["models"] == {"de-en": [1], "en-fr": [1, 2], "fr-en": [1]} and status["replicas_ready"] == 3


async def test_a_replica_that_holds_the_model_is_preferred(
    replicas: list[ModelReplica], gateway: RunningGateway, poller: ModelPoller, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(routes(replicas))
    holder = next(r for r in replicas if r.id != first_choice(b"en-de"))
    assert (await client.post(holder.url + "/en-de", json={})).status_code == 200  # loaded there directly
    await poller.poll_once()
    assert set(await tags(client, f"{gateway.url}/mm/en-de", 5)) == {holder.id}
    # a pinned version the holder lacks is not "held": it goes by rendezvous
    assert set(await tags(client, f"{gateway.url}/mm/en-fr/1", 2)) == {first_choice(b"en-fr")}


async def test_an_overloaded_holder_spreads_the_model_to_the_next_replica(
    replicas: list[ModelReplica], gateway: RunningGateway, poller: ModelPoller, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(routes(replicas))
    order = [IDS[i] for i in rendezvous_order(b"fr-en", IDS)]
    assert set(await tags(client, f"{gateway.url}/mm/fr-en", 1)) == {order[0]}
    await poller.poll_once()
    states = {s.id: s for s in gateway.app.routes[b"mm"].replicas}
    assert [s.slots for s in states.values()] == [1, 1, 1]  # reported by the replicas (max_concurrency)
    waiting: list[asyncio.Task[httpx.Response]] = []
    for expected_in_flight in (1, 2, 3):  # held requests: in flight at the gateway until the gates open
        waiting.append(asyncio.create_task(client.post(f"{gateway.url}/mm/fr-en", json={"wait": True})))
        await eventually(lambda n=expected_in_flight: sum(s.in_flight for s in states.values()) == n)  # type: ignore[misc]
    # 1st and 2nd on the holder; with 2 in flight it is above 1.25 x mean (2/3) + 1, so the 3rd goes on
    assert states[order[0]].in_flight == 2 and states[order[1]].in_flight == 1
    for r in replicas:
        r.instance_gate_open()
    results = [(await t).json()["tag"] for t in waiting]
    assert results == [order[0], order[0], order[1]]
    await poller.poll_once()
    held_by = gateway.api_stats("mm")["models"]["fr-en"]["replicas"]
    assert set(held_by) == {order[0], order[1]}  # a popular model spreads


async def test_with_model_routing_off_requests_spread_like_any_other(
    replicas: list[ModelReplica], client: httpx.AsyncClient
) -> None:
    pool = UpstreamPool()
    app = GatewayApp(pool, rng=random.Random(7), model_routing=False)
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    try:
        app.set_routes(routes(replicas))
        seen = await tags(client, f"http://127.0.0.1:{server.port}/mm/en-fr", 20)
        assert len(set(seen)) > 1
        assert sum(r.instance.loads.count("en-fr/2") for r in replicas) == len(set(seen))
    finally:
        await server.stop(0.5)
        pool.close()


async def test_model_figures_in_metrics(
    replicas: list[ModelReplica], gateway: RunningGateway, poller: ModelPoller, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(routes(replicas))
    for _ in range(3):
        await client.post(f"{gateway.url}/mm/en-fr", json={})
    await poller.poll_once()
    text = (await client.get(gateway.url + "/metrics")).text
    rid = first_choice(b"en-fr")
    labels = f'api="mm",model="en-fr",replica="{rid}"'
    assert f"thrifty_model_hits_total{{{labels}}} 2.0" in text
    assert f"thrifty_model_misses_total{{{labels}}} 1.0" in text
    assert f"thrifty_model_load_seconds_count{{{labels}}} 1.0" in text
    assert f"thrifty_model_load_seconds_sum{{{labels}}}" in text
    assert f'thrifty_model_evictions_total{{{labels},tier="memory"}} 0.0' in text
    assert f"thrifty_model_memory_bytes{{{labels}}}" in text and f"thrifty_model_disk_bytes{{{labels}}}" in text
    assert f'thrifty_models_held{{api="mm",replica="{rid}"}} 1.0' in text


async def test_paths_that_name_no_model_reach_a_replica_that_explains(
    replicas: list[ModelReplica], gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(routes(replicas))
    resp = await client.post(f"{gateway.url}/mm", json={})
    assert resp.status_code == 400 and resp.json()["error"] == "model_required"
    resp = await client.post(f"{gateway.url}/mm/%2e%2e", json={})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_model_name"
    resp = await client.post(f"{gateway.url}/mm/a/b/c", json={})
    assert resp.status_code == 400
    resp = await client.post(f"{gateway.url}/mm/nope", json={})
    assert resp.status_code == 404 and "'nope' not found" in resp.json()["message"]


async def test_poller_survives_unreachable_and_skips_draining_replicas(
    replicas: list[ModelReplica], gateway: RunningGateway, poller: ModelPoller, client: httpx.AsyncClient
) -> None:
    doc = routes(replicas).model_dump()
    doc["apis"]["mm"]["replicas"].append({"id": "gone", "host": "127.0.0.1", "port": 1, "draining": False})
    doc["apis"]["mm"]["replicas"][0]["draining"] = True
    doc["apis"]["plain"] = {"replicas": []}
    gateway.app.set_routes(RoutesDoc.model_validate(doc))
    await client.post(replicas[0].url + "/en-fr", json={})
    await poller.poll_once()
    states = {s.id: s for s in gateway.app.routes[b"mm"].replicas}
    assert states["gone"].held_refs == () and states[replicas[0].id].held_refs == ()  # draining: not asked
    assert "models" not in gateway.api_stats("plain")
    poller.start()  # the loop form runs and stops cleanly
    await poller.stop()


class _Hang:
    """A replica that never answers: its stats poll only ends at the poll timeout. ``asked`` is set once a
    request (a poll) has reached it."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    def body_limit(self, request: object) -> int:
        return 1 << 16

    async def handle(self, request: object) -> Any:
        self.asked.set()
        await asyncio.Event().wait()  # never set: hang until the poller gives up on (cancels) this request


async def test_a_replica_that_does_not_answer_delays_no_other_replicas_report(
    replicas: list[ModelReplica], gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    hanging = _Hang()
    hang = HttpServer(hanging, host="127.0.0.1", port=0)
    await hang.start()
    try:
        doc = routes(replicas[:1])
        entries = [*doc.model_dump()["apis"]["mm"]["replicas"], {"id": "hang", "host": "127.0.0.1", "port": hang.port}]
        gateway.app.set_routes(RoutesDoc.model_validate({"apis": {"mm": {"replicas": entries, "multi_model": True}}}))
        poller = ModelPoller(gateway.pool, lambda: list(gateway.app.routes.values()), interval_s=0.05, timeout_s=60.0)
        poller.start()
        try:
            await asyncio.wait_for(hanging.asked.wait(), timeout=5.0)  # its poll is now stuck (60 s timeout)
            await client.post(f"{gateway.url}/mm/en-de", json={})
            live = gateway.app.routes[b"mm"].replicas[0]
            await eventually(lambda: b"en-de" in live.held, timeout_s=3.0)
        finally:
            await poller.stop()
    finally:
        await hang.stop(0.1)


async def test_keep_warm_counts_the_models_asked_for_within_the_window(
    replicas: list[ModelReplica], gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(routes(replicas, keep_warm_s=600))
    assert gateway.api_stats("mm")["models_recent"] == 0
    for model in ("en-fr", "fr-en", "en-fr/2", "en-fr", "nope!"):  # a bad name is no model; versions are one
        await client.post(f"{gateway.url}/mm/{model}", json={})
    assert gateway.api_stats("mm")["models_recent"] == 2
    metrics = (await client.get(f"{gateway.url}/metrics")).text
    assert 'thrifty_models_recent{api="mm"} 2.0' in metrics
    recent = gateway.app.routes[b"mm"].recent_models
    gateway.app.set_routes(routes(replicas[:2], keep_warm_s=600))  # a new table keeps the count
    assert gateway.app.routes[b"mm"].recent_models is recent
    assert gateway.api_stats("mm")["models_recent"] == 2
    gateway.app.set_routes(routes(replicas))  # keep_warm off: not counted, not reported
    assert "models_recent" not in gateway.api_stats("mm")
