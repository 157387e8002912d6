"""Replicas answer the gateway only (the platform secret); the gateway keeps API descriptions behind their
keys and /metrics behind the metrics key; a predictor's exception never reaches the client; a replica
process hides the variables API keys come from. Real servers on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from dataplane_helpers import PREDICTORS, RunningGateway, RunningReplica, api_config, eventually

from thrifty.dataplane.api_key_hashes import hash_key, new_salt
from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.gateway_models import ModelPoller
from thrifty.dataplane.gateway_routes import RoutesDoc
from thrifty.dataplane.http_messages import Request, Response, json_response
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.platform_secret import HIDE_ENV, ensure_secret
from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.dataplane.upstream import UpstreamPool

SECRET = b"the-platform-secret-0123456789abcdef"
KEY = "api-key-0123456789-abcdef"
METRICS_KEY = "metrics-key-0123456789"


@pytest.fixture
async def replica() -> AsyncIterator[RunningReplica]:
    api = api_config("Echo", max_payload=1024)
    predictor = load_predictor(api, PREDICTORS)
    runner = ThreadRunner(api.serving.max_concurrency)
    runner.start(asyncio.get_running_loop())
    app = ReplicaApp(api, "r1", secret=SECRET)
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    app.set_scheduler(PredictScheduler(predictor, api.serving, runner))
    rep = RunningReplica(app, server, predictor, runner)
    yield rep
    await rep.stop()


async def start_gateway(secret: bytes | None, **kwargs: object) -> RunningGateway:
    pool = UpstreamPool()
    app = GatewayApp(pool, rng=random.Random(7), replica_secret=secret, **kwargs)  # type: ignore[arg-type]
    server = HttpServer(app, host="127.0.0.1", port=0)
    await server.start()
    return RunningGateway(app, server, pool)


async def stop_gateway(gw: RunningGateway) -> None:
    await gw.server.stop(0.5)
    gw.pool.close()


async def test_a_replica_refuses_requests_without_the_secret(replica: RunningReplica) -> None:
    async with httpx.AsyncClient(timeout=10.0) as client:
        resp = await client.post(replica.url + "/", json={"a": 1})
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
        wrong = {"x-thrifty-secret": SECRET.decode()[:-1] + "X"}
        assert (await client.post(replica.url + "/", json={"a": 1}, headers=wrong)).status_code == 401
        for path in ("/_thrifty/stats", "/readyz", "/nope"):
            assert (await client.get(replica.url + path)).status_code == 401, path
        # Refused on its headers: a body far over max_payload gets 401, not 413 (it is never read).
        big = await client.post(replica.url + "/", content=b"x" * 100_000)
        assert big.status_code == 401
        assert (await client.get(replica.url + "/healthz")).status_code == 200  # probes stay open
        ok = await client.post(replica.url + "/", json={"a": 1}, headers={"x-thrifty-secret": SECRET.decode()})
        assert ok.status_code == 200 and ok.json()["payload"] == {"a": 1}


async def test_through_the_gateway_requests_carry_the_secret(replica: RunningReplica) -> None:
    with_secret, without = await start_gateway(SECRET), await start_gateway(None)
    try:
        for gw in (with_secret, without):
            gw.set_routes(test_api={"replicas": [replica]})
        async with httpx.AsyncClient(timeout=10.0) as client:
            # A client cannot smuggle a secret of its own through: the gateway drops the header.
            headers = {"x-thrifty-secret": "guess"}
            resp = await client.post(with_secret.url + "/test-api", json={"a": 1}, headers=headers)
            assert resp.status_code == 200 and resp.json()["payload"] == {"a": 1}
            refused = await client.post(without.url + "/test-api", json={"a": 1}, headers={"x-thrifty-secret": "g"})
            assert refused.status_code == 401
    finally:
        await stop_gateway(with_secret)
        await stop_gateway(without)


async def test_predictor_exception_text_never_reaches_the_client_through_the_gateway(replica: RunningReplica) -> None:
    gw = await start_gateway(SECRET)
    try:
        gw.set_routes(test_api={"replicas": [replica]})
        async with httpx.AsyncClient(timeout=10.0) as client:
            resp = await client.post(
                gw.url + "/test-api", json={"raise": "/secret/path/data.csv row 7"}, headers={"x-request-id": "r-9"}
            )
        assert resp.status_code == 500
        body = resp.json()
        assert body["error"] == "predictor_error" and body["request_id"] == "r-9"
        assert "/secret/path" not in resp.text and "ValueError" not in resp.text
    finally:
        await stop_gateway(gw)


async def test_api_description_behind_the_api_keys_and_metrics_behind_the_metrics_key(
    replica: RunningReplica,
) -> None:
    gw = await start_gateway(SECRET, metrics_key_hashes=(hash_key(METRICS_KEY, new_salt()),))
    open_gw = await start_gateway(SECRET)
    try:
        keys = [hash_key(KEY, new_salt())]
        gw.set_routes(test_api={"replicas": [replica], "api_keys_sha256": keys}, open_api={"replicas": [replica]})
        open_gw.set_routes(test_api={"replicas": [replica], "api_keys_sha256": keys})
        bearer = {"authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=10.0) as client:
            assert (await client.get(gw.url + "/test-api")).status_code == 401
            assert (await client.get(gw.url + "/test-api", headers={"authorization": "Bearer nope"})).status_code == 401
            described = await client.get(gw.url + "/test-api", headers=bearer)
            assert described.status_code == 200 and described.json()["replicas_ready"] == 1
            assert (await client.get(gw.url + "/open-api")).status_code == 200  # no keys: open
            assert (await client.post(gw.url + "/test-api", json=1)).status_code == 401
            assert (await client.post(gw.url + "/test-api", json=1, headers=bearer)).json()["payload"] == 1

            assert (await client.get(gw.url + "/metrics")).status_code == 401
            assert (await client.get(gw.url + "/metrics", headers=bearer)).status_code == 401  # an API key is not it
            metrics = await client.get(gw.url + "/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"})
            assert metrics.status_code == 200 and "thrifty_requests_total" in metrics.text
            assert (await client.get(open_gw.url + "/metrics")).status_code == 200  # default: open
    finally:
        await stop_gateway(gw)
        await stop_gateway(open_gw)


class StatsStub:
    """A replica's /_thrifty/stats that records the headers it was asked with."""

    def __init__(self) -> None:
        self.seen: list[dict[bytes, bytes]] = []

    def body_limit(self, request: Request) -> int:
        return 0

    async def handle(self, request: Request) -> Response:
        self.seen.append(dict(request.headers))
        return json_response(200, {"models": ["m/1"], "model_stats": {}})


async def test_model_polls_carry_the_secret() -> None:
    stub = StatsStub()
    server = HttpServer(stub, host="127.0.0.1", port=0)
    await server.start()
    gw = await start_gateway(SECRET)
    try:
        doc = {
            "apis": {"mm": {"replicas": [{"id": "s1", "host": "127.0.0.1", "port": server.port}], "multi_model": True}}
        }
        gw.app.set_routes(RoutesDoc.model_validate(doc))
        await ModelPoller(gw.pool, lambda: list(gw.app.routes.values()), secret=SECRET).poll_once()
        assert stub.seen and stub.seen[-1].get(b"x-thrifty-secret") == SECRET
    finally:
        await stop_gateway(gw)
        await server.stop(0.5)


ENV_PREDICTOR = """\
import os


class Predictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {name: os.environ.get(name) for name in payload}
"""


async def test_a_replica_process_hides_key_variables_and_takes_its_secret_from_a_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "predictor.py").write_text(ENV_PREDICTOR)
    api = api_config("Predictor", path="predictor.py")
    spec, port_file, status_file, log = (tmp_path / n for n in ("spec.json", "port", "status.json", "log"))
    spec.write_bytes(orjson.dumps(api.model_dump(mode="json", by_alias=True)))
    secret_file = tmp_path / "replica_secret"
    secret = ensure_secret(secret_file)
    env = {"PATH": "/usr/bin:/bin", "IRIS_KEY": "the-api-key", "THRIFTY_METRICS_KEY": "mk", "KEEP": "yes"}
    env[HIDE_ENV] = "IRIS_KEY,THRIFTY_METRICS_KEY"
    args = [
        "-m", "thrifty.dataplane.replica_main", "--spec", str(spec), "--project-dir", str(project),
        "--replica-id", "r1", "--port", "0", "--port-file", str(port_file), "--status-file", str(status_file),
        "--grace-s", "5", "--secret-file", str(secret_file),
    ]  # fmt: skip
    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "VIRTUAL_ENV")})
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=out, stderr=out, env=env)
    try:
        await eventually(lambda: status_file.exists() or proc.returncode is not None, timeout_s=30)
        status = orjson.loads(status_file.read_bytes())
        assert status.get("ready") is True, (status, log.read_text())
        url = f"http://127.0.0.1:{status['port']}/"
        names = ["IRIS_KEY", "THRIFTY_METRICS_KEY", HIDE_ENV, "KEEP"]
        async with httpx.AsyncClient(timeout=10.0) as client:
            assert (await client.post(url, json=names)).status_code == 401
            resp = await client.post(url, json=names, headers={"x-thrifty-secret": secret.decode()})
        assert resp.json() == {"IRIS_KEY": None, "THRIFTY_METRICS_KEY": None, HIDE_ENV: None, "KEEP": "yes"}
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_a_502_names_no_replica_address_or_connection_detail() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the whole head, then a close before any response byte
        writer.close()

    crasher = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = crasher.sockets[0].getsockname()[1]
    gw = await start_gateway(SECRET)
    try:
        replicas = [{"id": "replica-7f3a", "host": "127.0.0.1", "port": port}]
        gw.set_routes(test_api={"replicas": replicas, "request_timeout_s": 1.0})
        async with httpx.AsyncClient(timeout=10.0) as client:
            resp = await client.post(gw.url + "/test-api", json={}, headers={"x-request-id": "r-502"})
        assert resp.status_code == 502 and resp.json()["error"] == "upstream_failed"
        assert resp.json()["request_id"] == "r-502"
        for leak in (str(port), "127.0.0.1", "replica-7f3a", "connection"):
            assert leak not in resp.text, leak
    finally:
        await stop_gateway(gw)
        crasher.close()
        await crasher.wait_closed()
