"""Server-side batching in the replica: one predict_batch call per batch; a lone request still fires."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from dataplane_helpers import PREDICTORS, ReplicaFactory, api_config

from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.errors import PredictorLoadError


def batching(size: int, interval_s: float, **serving: Any) -> dict[str, Any]:
    return {"batching": {"max_batch_size": size, "batch_interval": interval_s}, **serving}


async def test_concurrent_requests_make_one_batch(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    # A long interval: the batch can only fire because it is full.
    r = await start_replica(api_config("Batcher", **batching(4, 30.0)))
    results = await asyncio.gather(*(client.post(r.url + "/", json=i) for i in range(4)))
    assert r.instance.calls == [4]
    assert sorted(x.json()["batched"] for x in results) == [0, 1, 2, 3]
    assert all(x.json()["batch_size"] == 4 for x in results)


async def test_lone_request_fires_after_the_interval(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("Batcher", **batching(8, 0.02)))
    resp = await client.post(r.url + "/", json="alone")
    assert resp.json() == {"batched": "alone", "batch_size": 1}
    assert r.instance.calls == [1]


async def test_async_predict_batch(start_replica: ReplicaFactory, client: httpx.AsyncClient) -> None:
    r = await start_replica(api_config("AsyncBatcher", **batching(3, 30.0)))
    results = await asyncio.gather(*(client.post(r.url + "/", json=i) for i in range(3)))
    assert r.instance.calls == [3]
    assert all(x.status_code == 200 for x in results)


async def test_wrong_result_length_fails_the_whole_batch(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Batcher", config={"wrong_length": True}, **batching(2, 30.0)))
    results = await asyncio.gather(*(client.post(r.url + "/", json=i) for i in range(2)))
    assert [x.status_code for x in results] == [500, 500]
    # The reason ("2 payloads") is in the replica log; the client gets the code and the request id.
    assert all(x.json()["error"] == "predictor_error" and "payloads" not in x.text for x in results)
    assert r.app.stats()["requests"]["5xx"] == 2


def test_batching_without_predict_batch_is_a_load_error() -> None:
    with pytest.raises(PredictorLoadError, match="predict_batch"):
        load_predictor(api_config("NoBatch", **batching(2, 0.01)), PREDICTORS)
