"""The gateway's hold for APIs scaled to zero: requests wait for the first ready replica, bounded."""

from __future__ import annotations

import asyncio

import httpx
from dataplane_helpers import RunningGateway, api_config, eventually

from thrifty.dataplane.gateway_routes import RoutesDoc


def cold(gateway: RunningGateway, replicas: list[object], **extra: object) -> None:
    gateway.set_routes(sleepy={"replicas": replicas, "hold_when_empty": True, **extra})


async def test_held_requests_are_forwarded_when_a_replica_is_ready(
    gateway: RunningGateway, start_replica: object, client: httpx.AsyncClient
) -> None:
    cold(gateway, [])
    url = f"{gateway.url}/sleepy"
    pending = [asyncio.create_task(client.post(url, json={"n": i})) for i in range(3)]
    route = gateway.app.routes[b"sleepy"]
    await eventually(lambda: route.stats.in_flight == 3)  # held requests count as in flight: the autoscaler sees them
    replica = await start_replica(api_config("Echo"))  # type: ignore[operator]
    cold(gateway, [replica])
    resps = await asyncio.gather(*pending)
    assert [r.status_code for r in resps] == [200, 200, 200]
    assert [r.json()["payload"] for r in resps] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_hold_is_bounded_in_time_and_count(gateway: RunningGateway, client: httpx.AsyncClient) -> None:
    cold(gateway, [], cold_start_timeout_s=0.2, max_cold_queue=2)
    url = f"{gateway.url}/sleepy"
    first = [asyncio.create_task(client.post(url, json={})) for _ in range(2)]
    await eventually(lambda: gateway.app.routes[b"sleepy"].stats.in_flight == 2)
    over = await client.post(url, json={})
    assert over.status_code == 503 and over.json()["error"] == "cold_start_queue_full"
    assert over.headers["retry-after"]
    timed_out = await asyncio.gather(*first)
    assert {r.status_code for r in timed_out} == {503}
    assert timed_out[0].json()["error"] == "cold_start_timeout"


async def test_without_hold_an_empty_api_answers_503_at_once(
    gateway: RunningGateway, client: httpx.AsyncClient
) -> None:
    gateway.app.set_routes(RoutesDoc.model_validate({"apis": {"plain": {"replicas": []}}}))
    resp = await client.post(f"{gateway.url}/plain", json={})
    assert resp.status_code == 503 and resp.headers["retry-after"]


async def test_deleting_a_held_api_answers_404(gateway: RunningGateway, client: httpx.AsyncClient) -> None:
    cold(gateway, [])
    pending = asyncio.create_task(client.post(f"{gateway.url}/sleepy", json={}))
    await eventually(lambda: gateway.app.routes[b"sleepy"].stats.in_flight == 1)
    gateway.app.set_routes(RoutesDoc.model_validate({"apis": {}}))
    assert (await pending).status_code == 404
