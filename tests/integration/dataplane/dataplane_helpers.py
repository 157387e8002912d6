"""Helpers for the data-plane integration tests: API configs and in-process replica / gateway handles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.gateway_routes import RoutesDoc
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.predictor_loading import LoadedPredictor
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.dataplane.upstream import UpstreamPool

PREDICTORS = Path(__file__).parent / "predictors"


def api_config(cls: str, path: str = "basic.py", name: str = "test-api", **serving: Any) -> ApiConfig:
    return ApiConfig.model_validate(
        {
            "name": name,
            "predictor": {"path": path, "class": cls, "config": serving.pop("config", {})},
            "serving": serving,
        }
    )


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds (state that no event announces, e.g. a replica's queue length)."""
    for _ in range(int(timeout_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """``eventually`` for a check that must await (e.g. another process's stats endpoint)."""
    for _ in range(int(timeout_s / 0.005)):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


class LoopbackServer:
    """A test handle on a server bound to 127.0.0.1 (port 0): its real port and URL."""

    server: HttpServer

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


class RunningReplica(LoopbackServer):
    def __init__(self, app: ReplicaApp, server: HttpServer, predictor: LoadedPredictor, runner: ThreadRunner) -> None:
        self.app = app
        self.server = server
        self.predictor = predictor
        self.runner = runner

    @property
    def instance(self) -> Any:
        return self.predictor.instance

    async def drain_and_stop(self, grace_s: float = 5.0) -> None:
        self.app.begin_drain()
        await self.app.wait_drained()
        await self.server.stop(grace_s)

    async def stop(self) -> None:
        await self.server.stop(0.5)
        self.runner.stop()


ReplicaFactory = Callable[..., Awaitable[RunningReplica]]


class RunningGateway(LoopbackServer):
    def __init__(self, app: GatewayApp, server: HttpServer, pool: UpstreamPool) -> None:
        self.app = app
        self.server = server
        self.pool = pool

    def set_routes(self, **apis: dict[str, Any]) -> None:
        """set_routes(name={"replicas": [...], ...}) — replicas given as RunningReplica or dicts."""
        doc: dict[str, Any] = {}
        for name, api in apis.items():
            api = dict(api)
            api["replicas"] = [
                {"id": r.app.replica_id, "host": "127.0.0.1", "port": r.port, "draining": False}
                if isinstance(r, RunningReplica)
                else r
                for r in api.get("replicas", [])
            ]
            doc[name.replace("_", "-")] = api
        self.app.set_routes(RoutesDoc.model_validate({"apis": doc}))

    def api_stats(self, api: str) -> dict[str, Any]:
        """One API's figures in ``stats_json()`` (typed ``object`` there: the JSON document is nested)."""
        apis = cast("dict[str, dict[str, Any]]", self.app.stats_json()["apis"])
        return apis[api]
