"""A predictor with only predict_batch: valid and served with serving.batching, refused without it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from dataplane_helpers import PREDICTORS, ReplicaFactory, api_config

from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.errors import PredictorLoadError


def batching(size: int, interval_s: float) -> dict[str, Any]:
    return {"batching": {"max_batch_size": size, "batch_interval": interval_s}}


async def test_batch_only_predictor_serves_with_batching(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("BatchOnly", path="batch_only.py", **batching(4, 30.0)))
    results = await asyncio.gather(*(client.post(r.url + "/", json=i) for i in range(4)))
    assert [x.status_code for x in results] == [200] * 4
    assert sorted(x.json()["doubled"] for x in results) == [0, 2, 4, 6]
    assert r.instance.calls == [4]


async def test_async_batch_only_predictor_serves_a_lone_request(
    start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("AsyncBatchOnly", path="batch_only.py", **batching(8, 0.01)))
    resp = await client.post(r.url + "/", json=21)
    assert resp.status_code == 200 and resp.json() == {"doubled": 42}
    assert r.instance.calls == [1]


def test_batch_only_predictor_loads_without_predict() -> None:
    loaded = load_predictor(api_config("BatchOnly", path="batch_only.py", **batching(2, 0.01)), PREDICTORS)
    assert loaded.predict is None and loaded.predict_batch is not None


def test_batch_only_without_batching_is_refused_with_what_to_do() -> None:
    with pytest.raises(PredictorLoadError) as err:
        load_predictor(api_config("BatchOnly", path="batch_only.py"), PREDICTORS)
    message = err.value.message
    assert "BatchOnly has no predict(self, payload) method" in message
    assert "add predict" in message and "serving.batching" in message
    assert err.value.details["where"] == "batch_only.py:9 in BatchOnly"


def test_a_class_with_neither_method_is_refused() -> None:
    with pytest.raises(PredictorLoadError, match=r"add predict, or set serving\.batching"):
        load_predictor(api_config("Nothing", path="batch_only.py"), PREDICTORS)
    with pytest.raises(PredictorLoadError, match="no predict_batch"):
        load_predictor(api_config("Nothing", path="batch_only.py", **batching(2, 0.01)), PREDICTORS)


def test_scheduler_refuses_a_batch_only_predictor_without_batching() -> None:
    loaded = load_predictor(api_config("BatchOnly", path="batch_only.py", **batching(2, 0.01)), PREDICTORS)
    with pytest.raises(ValueError, match=r"needs serving\.batching"):
        PredictScheduler(loaded, api_config("BatchOnly", path="batch_only.py").serving, None)
