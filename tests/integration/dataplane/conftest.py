"""Fixtures for the data-plane integration tests: in-process replica and gateway servers on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from dataplane_helpers import PREDICTORS, ReplicaFactory, RunningGateway, RunningReplica

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.dataplane.upstream import UpstreamPool


@pytest.fixture
async def start_replica() -> AsyncIterator[ReplicaFactory]:
    """start_replica(api, replica_id="r1") -> RunningReplica, ready to serve."""
    started: list[RunningReplica] = []

    async def start(api: ApiConfig, replica_id: str = "r1") -> RunningReplica:
        predictor = load_predictor(api, PREDICTORS)
        runner = ThreadRunner(api.serving.max_concurrency)
        runner.start(asyncio.get_running_loop())
        app = ReplicaApp(api, replica_id)
        server = HttpServer(app, host="127.0.0.1", port=0)
        await server.start()
        app.set_scheduler(PredictScheduler(predictor, api.serving, runner), predictor=predictor.instance)
        replica = RunningReplica(app, server, predictor, runner)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    pool = UpstreamPool()
    app = GatewayApp(pool, rng=random.Random(7))
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    yield RunningGateway(app, server, pool)
    await server.stop(0.5)
    pool.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as c:
        yield c
