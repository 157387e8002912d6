"""A multi-model replica in process: model paths, versions, errors, preload, polling, eviction, figures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from dataplane_helpers import PREDICTORS, eventually, eventually_async
from model_helpers import ModelReplica, model_api, put_model

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.dataplane.replica_models import open_model_serving
from thrifty.errors import PredictorLoadError

Start = Callable[..., Awaitable[ModelReplica]]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name in ("en-fr", "en-de", "fr-en"):
        put_model(root, name, 1)
    put_model(root, "en-fr", 2)
    return root


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """start(api, replica_id="r1") -> a ready ModelReplica with its cache in tmp_path/cache/<id>."""
    started: list[ModelReplica] = []

    async def go(api: ApiConfig, replica_id: str = "r1") -> ModelReplica:
        replica = await ModelReplica.start(api, replica_id, tmp_path / "cache" / replica_id)
        started.append(replica)
        return replica

    yield go
    for replica in started:
        await replica.stop()


async def raw_post(port: int, target: bytes) -> tuple[int, bytes]:
    """A request with the target exactly as given (HTTP clients normalise '..' away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST " + target + b" HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_predicts_with_the_named_model_latest_or_pinned(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    r = await start(model_api(source))
    resp = await client.post(r.url + "/en-fr", json={"text": "hello"})
    assert resp.status_code == 200
    assert resp.json() == {"model": "en-fr", "version": 2, "tag": "", "payload": {"text": "hello"}}
    assert (await client.post(r.url + "/en-fr/1", json={})).json()["version"] == 1
    assert (await client.post(r.url + "/en-fr/latest", json={})).json()["version"] == 2
    assert (await client.post(r.url + "/en-de/", json={})).json()["model"] == "en-de"  # trailing slash
    assert (await client.post(r.url + "/en-fr", json={})).json()["version"] == 2
    stats = (await client.get(r.url + "/_thrifty/stats")).json()
    assert sorted(stats["models"]) == ["en-de/1", "en-fr/1", "en-fr/2"]
    assert stats["model_stats"]["en-fr"]["hits"] == 2 and stats["model_stats"]["en-fr"]["misses"] == 2
    assert stats["model_stats"]["en-fr"]["versions"] == [1, 2]
    assert stats["requests"]["2xx"] == 5 and stats["in_flight"] == 0 and stats["slots"] == 1
    snapshot = (await client.get(r.url + "/_thrifty/models")).json()
    assert {(h["model"], h["version"]) for h in snapshot["held"]} == {("en-de", 1), ("en-fr", 1), ("en-fr", 2)}
    assert snapshot["memory"]["count"] == 3 and snapshot["config"]["cache_size"] == 4


async def test_async_predictor_and_batching_with_models(start: Start, source: Path, client: httpx.AsyncClient) -> None:
    r = await start(model_api(source, "AsyncModels", name="amm"))
    assert (await client.post(r.url + "/fr-en", json=1)).json() == {"model": "fr-en", "version": 1, "async": True}
    batching = {"max_batch_size": 4, "batch_interval": 0.05}
    b = await start(model_api(source, "BatchModels", name="bmm", serving={"batching": batching}), "r2")
    await client.post(b.url + "/en-de", json=0)  # load both models first, so the batch below forms at once
    await client.post(b.url + "/fr-en", json=0)
    results = await asyncio.gather(*(client.post(b.url + m, json=i) for i, m in enumerate(["/en-de", "/fr-en"] * 2)))
    assert [x.json()["model"] for x in results] == ["en-de", "fr-en"] * 2
    assert [x.json()["payload"] for x in results] == [0, 1, 2, 3]
    assert ["en-de", "fr-en", "en-de", "fr-en"] in b.instance.calls  # one batch mixing two models


@pytest.mark.parametrize(
    ("target", "code"),
    [
        (b"/..", "invalid_model_name"),
        (b"/%2e%2e", "invalid_model_name"),
        (b"/%2E%2E/1", "invalid_model_name"),
        (b"/en-fr/..", "invalid_model_name"),
        (b"/a%2Fb", "invalid_model_name"),
        (b"/.hidden", "invalid_model_name"),
        (b"/caf%C3%A9", "invalid_model_name"),
        (b"/en%20fr", "invalid_model_name"),
        (b"/en-fr/abc", "invalid_model_name"),
        (b"/en-fr/-1", "invalid_model_name"),
        (b"/en-fr/1/extra", "invalid_model_name"),
        (b"/", "model_required"),
    ],
)
async def test_bad_model_paths_are_400(start: Start, source: Path, target: bytes, code: str) -> None:
    r = await start(model_api(source))
    status, body = await raw_post(r.port, target)
    assert status == 400, body
    assert code.encode() in body
    if code == "model_required":
        assert b"POST /<api>/<model>" in body
    assert not (source.parent / "cache" / "r1" / "..").resolve().joinpath("en-fr").exists()


async def test_unknown_model_or_version_is_404_and_broken_model_500_while_others_serve(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    put_model(source, "broken", 1, broken=True)
    r = await start(model_api(source))
    resp = await client.post(r.url + "/no-such-model", json={})
    assert resp.status_code == 404 and resp.json()["error"] == "model_not_found"
    assert "'no-such-model' not found" in resp.json()["message"] and "request_id" in resp.json()
    resp = await client.post(r.url + "/en-fr/7", json={})
    assert resp.status_code == 404 and "no version 7" in resp.json()["message"]
    for _ in range(3):
        resp = await client.post(r.url + "/broken", json={})
        assert resp.status_code == 500 and resp.json()["error"] == "model_load_failed"
        assert "corrupt weights" not in resp.text  # load_model's error goes to the replica log only
        assert (await client.post(r.url + "/en-de", json={})).status_code == 200
    assert r.instance.loads.count("broken/1") == 1  # the failure is remembered, not retried per request
    stats = (await client.get(r.url + "/_thrifty/stats")).json()
    assert stats["model_stats"]["broken"]["load_failures"] == 1
    assert stats["requests"] == {"2xx": 3, "4xx": 2, "5xx": 3}


async def test_payload_errors_come_before_any_load(start: Start, source: Path, client: httpx.AsyncClient) -> None:
    r = await start(model_api(source))
    resp = await client.post(r.url + "/en-fr", content=b'{"a": ', headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_payload"
    assert r.instance.loads == []


async def test_preload_before_ready_and_failures_do_not_stop_the_replica(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    put_model(source, "broken", 1, broken=True)
    r = await start(model_api(source, models={"preload": ["en-fr/1", "fr-en", "broken", "missing"]}))
    assert r.app.ready
    assert sorted(r.models.held()) == ["en-fr/1", "fr-en/1"]
    assert set(r.models.preload_failures) == {"broken", "missing"}
    stats = (await client.get(r.url + "/_thrifty/stats")).json()
    assert stats["model_stats"]["fr-en"]["misses"] == 1
    resp = await client.post(r.url + "/fr-en", json={})
    assert resp.status_code == 200
    assert (await client.get(r.url + "/_thrifty/stats")).json()["model_stats"]["fr-en"]["hits"] == 1


async def test_a_new_version_is_served_after_a_poll_and_the_pinned_old_one_still_works(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    r = await start(model_api(source, models={"poll_interval": 0.05}))
    assert (await client.post(r.url + "/en-de", json={})).json()["version"] == 1
    put_model(source, "en-de", 2)

    async def latest_is_2() -> bool:
        return bool((await client.post(r.url + "/en-de", json={})).json()["version"] == 2)

    await eventually_async(latest_is_2)
    assert (await client.post(r.url + "/en-de/1", json={})).json()["version"] == 1


async def test_eviction_keeps_within_cache_size_and_counts(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    for i in range(6):
        put_model(source, f"m{i}", 1)
    r = await start(model_api(source, models={"cache_size": 2, "disk_cache_size": 3}))
    for _ in range(2):
        for i in range(6):
            assert (await client.post(r.url + f"/m{i}", json={})).status_code == 200
            assert len(r.models.held()) <= 2
    snapshot = (await client.get(r.url + "/_thrifty/models")).json()
    assert snapshot["memory"]["count"] == 2 and snapshot["disk"]["count"] == 3
    assert sum(m["memory_evictions"] for m in snapshot["models"].values()) == 10
    assert sum(m["disk_evictions"] for m in snapshot["models"].values()) == 9
    assert len(list((source.parent / "cache" / "r1").iterdir())) == 3


async def test_waiting_for_a_load_counts_against_the_queue_and_the_timeout(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    put_model(source, "slow", 1, load_s=0.5)
    serving: dict[str, Any] = {"max_concurrency": 1, "max_queue_length": 0, "request_timeout": 0.2}
    r = await start(model_api(source, serving=serving))
    first = asyncio.create_task(client.post(r.url + "/slow", json={}))
    await eventually(lambda: r.models.waiting == 1)
    assert r.app.stats()["in_flight"] == 1
    resp = await client.post(r.url + "/en-fr", json={})  # the one place is taken by the request waiting
    assert resp.status_code == 503 and resp.json()["error"] == "overloaded"
    resp = await first
    assert resp.status_code == 504 and "did not load within request_timeout" in resp.json()["message"]
    assert r.models.waiting == 0

    async def slow_loaded() -> bool:  # the load carries on for the next request
        return (await client.post(r.url + "/slow", json={})).status_code == 200

    await eventually_async(slow_loaded)


async def test_draining_refuses_model_requests_with_the_draining_header(
    start: Start, source: Path, client: httpx.AsyncClient
) -> None:
    r = await start(model_api(source))
    r.app.begin_drain()
    resp = await client.post(r.url + "/en-fr", json={})
    assert resp.status_code == 503 and resp.headers["x-thrifty-draining"] == "1"


async def test_cache_folder_is_private_and_removed_on_close(tmp_path: Path, source: Path) -> None:
    api = model_api(source)
    r = await ModelReplica.start(api, "r1", tmp_path / "cache" / "r1")
    assert (tmp_path / "cache" / "r1").is_dir()
    await r.stop()
    assert not (tmp_path / "cache" / "r1").exists()
    assert list((tmp_path / "cache").iterdir()) == []
    # without a folder from the engine: a temporary one, removed too
    r = await ModelReplica.start(api, "r2", None)
    folder = tmp_path / r.models.snapshot()["cache_dir"]  # absolute: replaces the whole path
    assert folder.is_dir()
    await r.stop()
    assert not folder.exists()


def test_a_predictor_without_load_model_is_a_load_error(source: Path) -> None:
    api = model_api(source, "NoLoader", name="noload")
    with pytest.raises(PredictorLoadError, match="no load_model"):
        open_model_serving(api, load_predictor(api, PREDICTORS), None)
