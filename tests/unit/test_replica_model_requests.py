"""Multi-model requests on a replica, in process without sockets: ReplicaApp + ModelServing + PredictScheduler
over a fake model source, calling ``app.handle`` directly. Pins, deadlines, draining, failure memory."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.http_messages import Request, Response
from thrifty.dataplane.predictor_loading import LoadedPredictor
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.replica_models import ModelServing, model_predictor
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.models import model_cache_from_config
from thrifty.models.fake_source import FakeModelSource


class GatedPredictor:
    """predict / predict_batch block on ``gate`` (a threading.Event) when the payload asks for it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.load_gate: threading.Event | None = None  # when set, load_model waits for it
        self.loading = threading.Event()

    def load_model(self, path: str) -> str:
        self.loading.set()
        if self.load_gate is not None:
            self.load_gate.wait(30)
        return Path(path).parent.name

    def predict(self, payload: Any, model: Any) -> Any:
        if payload.get("wait"):
            self.entered.set()
            self.gate.wait(30)
        return {"model": model}

    def predict_batch(self, payloads: list[Any], models: list[Any]) -> list[Any]:
        if any(p.get("wait") for p in payloads):
            self.entered.set()
            self.gate.wait(30)
        return [{"model": m} for m in models]


@dataclass
class Replica:
    app: ReplicaApp
    models: ModelServing
    source: FakeModelSource
    predictor: Any

    def in_use(self, name: str) -> int:
        return sum(h["in_use"] for h in self.models.cache.snapshot()["held"] if h["model"] == name)

    async def post(self, path: bytes, body: bytes = b"{}") -> Response:
        request = Request(b"POST", path, b"", {b"content-type": b"application/json"})
        request.body = body
        return await self.app.handle(request)


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """build(predictor, serving={...}, models={...}, source=None) -> a ready in-process Replica."""
    runners: list[ThreadRunner] = []
    servings: list[ModelServing] = []

    async def go(
        predictor: Any,
        serving: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        source: FakeModelSource | None = None,
        batched: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> Replica:
        api = ApiConfig.model_validate(
            {
                "name": "mm",
                "predictor": {"path": "p.py", "class": "P"},
                "serving": {"max_concurrency": 2, **(serving or {})},
                "models": {"source": str(tmp_path / "unused"), "cache_size": 2, **(models or {})},
            }
        )
        if source is None:
            source = FakeModelSource()
            for name in ("a", "b"):
                source.put(name, 1, {"w": name.encode()})
        if api.models is None:
            raise AssertionError("no models section")
        cache = model_cache_from_config(
            api.models, predictor, str(tmp_path / f"cache{len(servings)}"), clock=_monotonic, source=source
        )
        serving_ = ModelServing(api, cache)
        servings.append(serving_)
        await serving_.start()
        runner = ThreadRunner(api.serving.max_concurrency)
        runner.start(asyncio.get_running_loop())
        runners.append(runner)
        loaded = LoadedPredictor(
            predictor, predictor.predict, False, predictor.predict_batch if batched else None, False
        )
        app = ReplicaApp(api, "r1")
        scheduler = PredictScheduler(model_predictor(loaded), api.serving, runner, clock=clock or _monotonic)
        app.set_scheduler(scheduler, serving_)
        return Replica(app, serving_, source, predictor)

    yield go
    for serving_ in servings:
        await serving_.close()
    for runner in runners:
        runner.stop()


def _monotonic() -> float:
    return asyncio.get_running_loop().time()


async def until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("batched", [False, True])
async def test_a_predict_that_overran_its_timeout_keeps_its_model_pinned_until_it_returns(
    build: Callable[..., Any], batched: bool
) -> None:
    predictor = GatedPredictor()
    serving: dict[str, Any] = {"request_timeout": 0.2}
    if batched:
        serving["batching"] = {"max_batch_size": 4, "batch_interval": 0.01}
    r = await build(predictor, serving=serving, models={"cache_size": 1}, batched=batched)
    try:
        resp = await r.post(b"/a", b'{"wait": true}')
        assert resp.status == 504
        assert predictor.entered.is_set()
        # predict still runs with model a: it must stay pinned, so that b cannot evict it
        assert r.in_use("a") == 1
        assert r.models.held() == ["a/1"]
    finally:
        predictor.gate.set()
    await until(lambda: r.in_use("a") == 0)
    assert (await r.post(b"/b")).status == 200
    assert r.models.held() == ["b/1"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("batched", [False, True])
async def test_the_wait_for_a_load_counts_against_request_timeout(build: Callable[..., Any], batched: bool) -> None:
    predictor = GatedPredictor()
    predictor.load_gate = threading.Event()
    clock = FakeClock()
    serving: dict[str, Any] = {"request_timeout": 10}
    if batched:
        serving["batching"] = {"max_batch_size": 4, "batch_interval": 0.01}
    r = await build(predictor, serving=serving, batched=batched, clock=clock)
    pending = asyncio.create_task(r.post(b"/a"))
    await until(predictor.loading.is_set)
    clock.now += 10.5  # the load took (on the scheduler's clock) longer than request_timeout
    predictor.load_gate.set()
    resp = await pending
    assert resp.status == 504
    assert b"request_timeout" in resp.body


async def test_a_drain_waits_for_requests_waiting_for_a_load_and_serves_them(build: Callable[..., Any]) -> None:
    predictor = GatedPredictor()
    predictor.load_gate = threading.Event()
    r = await build(predictor)
    pending = asyncio.create_task(r.post(b"/a"))
    await until(predictor.loading.is_set)
    r.app.begin_drain()
    drained = asyncio.create_task(r.app.wait_drained())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not drained.done()
    assert (await r.post(b"/b")).status == 503  # a new request is turned away
    predictor.load_gate.set()
    resp = await pending
    assert resp.status == 200, resp.body
    await drained
