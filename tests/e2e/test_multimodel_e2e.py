"""Multi-model APIs on the real local platform: model paths through the gateway, pinned versions, a new
version going live without a restart, eviction under load, bad names, a broken model, a model source on a
real S3-compatible server (moto), and the translator example deployed as is."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_helpers import wait_until

pytestmark = pytest.mark.e2e


def put_model(source: Path, name: str, version: int, **extra: Any) -> None:
    folder = source / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"name": name, "version": version, **extra}))


def write_config(folder: Path, name: str, source: str, env: dict[str, str] | None = None, **models: Any) -> Path:
    config = {
        "apis": [
            {
                "name": name,
                "predictor": {"path": "predictor.py", "class": "Models", "env": env or {}},
                "serving": {"max_concurrency": 4, "request_timeout": 20},
                "autoscaling": {"min_replicas": 2, "max_replicas": 2},
                "models": {"source": source, **models},
            }
        ]
    }
    (folder / "thrifty.yaml").write_text(json.dumps(config))  # JSON is YAML
    return folder


def raw_post(url: str, target: str) -> tuple[int, dict[str, Any]]:
    """A request whose path goes out exactly as written (HTTP clients resolve '..' before sending)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def model_metric(gateway: str, metric: str, api: str) -> float:
    text = httpx.get(gateway + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric + "{") and f'api="{api}"' in line
    )


def test_models_versions_rollout_eviction_and_errors(platform: Any, project: Any, tmp_path: Path) -> None:
    source = tmp_path / "repo"
    for i in range(12):
        put_model(source, f"m{i}", 1)
    put_model(source, "m0", 2)
    put_model(source, "broken", 1, broken=True)
    folder = write_config(
        project("multimodel"), "mm", str(source), cache_size=3, disk_cache_size=5, poll_interval=0.5, preload=["m1"]
    )
    platform.cli("deploy", str(folder))
    url = f"{platform.gateway}/mm"
    with httpx.Client(timeout=30) as http:
        # several models, latest and pinned versions
        for i in (1, 2, 3):
            body = http.post(f"{url}/m{i}", json={"x": i}).json()
            assert body["model"] == f"m{i}" and body["version"] == 1 and body["payload"] == {"x": i}
        assert http.post(f"{url}/m0", json={}).json()["version"] == 2
        assert http.post(f"{url}/m0/1", json={}).json()["version"] == 1

        # bad input
        resp = http.post(f"{url}/no-such-model", json={})
        assert resp.status_code == 404 and "'no-such-model' not found" in resp.json()["message"]
        assert http.post(f"{url}/m0/9", json={}).status_code == 404
        for target in ("/mm/..", "/mm/%2e%2e", "/mm/%2E%2E/1", "/mm/m0/abc", "/mm/a%2Fb"):
            status, body = raw_post(platform.gateway, target)
            assert status == 400 and body["error"] == "invalid_model_name", (target, body)
        resp = http.post(url, json={})
        assert resp.status_code == 400 and "/<api>/<model>" in resp.json()["message"]

        # a broken model fails alone
        for _ in range(2):
            resp = http.post(f"{url}/broken", json={})
            assert resp.status_code == 500 and resp.json()["error"] == "model_load_failed"
            assert "corrupt weights" not in resp.text  # the reason is in the replica log, not the response
            assert http.post(f"{url}/m2", json={}).status_code == 200
        assert "corrupt weights" in platform.cli("logs", "mm").stdout

        # a new version goes live within poll_interval, without a restart; the pinned old one still works
        replicas_before = {r["id"] for r in platform.json("get", "mm")["replica_list"]}
        put_model(source, "m1", 2)
        wait_until(lambda: http.post(f"{url}/m1", json={}).json()["version"] == 2, 20, "m1 version 2 served")
        assert http.post(f"{url}/m1/1", json={}).json()["version"] == 1
        assert {r["id"] for r in platform.json("get", "mm")["replica_list"]} == replicas_before

        # eviction under load: 12 models over 2 replicas that hold 3 each; every request succeeds
        targets = [f"{url}/m{i % 12}" for i in range(240)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            resps = list(pool.map(lambda t: http.post(t, json={}), targets))
        assert [r.status_code for r in resps] == [200] * len(targets), {r.status_code: r.text for r in resps}
        assert [r.json()["model"] for r in resps] == [t.rsplit("/", 1)[1] for t in targets]

    def lookups() -> float:  # the gateway's copy of the replicas' counters is up to a second old
        return sum(model_metric(platform.gateway, f"thrifty_model_{m}_total", "mm") for m in ("hits", "misses"))

    wait_until(lambda: lookups() >= len(targets) + 10, 20, "the gateway's model figures to include the load")
    assert model_metric(platform.gateway, "thrifty_model_evictions_total", "mm") > 0
    assert model_metric(platform.gateway, "thrifty_model_misses_total", "mm") >= 12
    assert model_metric(platform.gateway, "thrifty_model_hits_total", "mm") > 0
    assert model_metric(platform.gateway, "thrifty_model_load_failures_total", "mm") >= 1

    detail = platform.json("get", "mm")
    models = {m["name"]: m for m in detail["models"]}
    assert models["m1"]["versions"] == [1, 2]
    held = [m for m in models.values() if m["versions_held"]]
    assert held and all(set(m["replicas"]) <= replicas_before for m in held)
    assert sum(len(m["replicas"]) for m in held) <= 2 * 3  # no replica holds more than cache_size
    table = platform.cli("get", "mm").stdout
    assert "MODEL" in table and "IN MEMORY" in table and "m1" in table
    platform.cli("delete", "mm")


@pytest.fixture
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_models_from_an_s3_compatible_server(
    platform: Any, project: Any, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="thrifty-e2e")

    def put(name: str, version: int) -> None:
        body = json.dumps({"name": name, "version": version}).encode()
        s3.put_object(Bucket="thrifty-e2e", Key=f"translators/{name}/{version}/model.json", Body=body)

    for name in ("en-fr", "en-de", "fr-en"):
        put(name, 1)
    env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": s3_server}
    folder = write_config(
        project("multimodel"), "mm-s3", "s3://thrifty-e2e/translators/", env, cache_size=2, poll_interval=0.5
    )
    platform.cli("deploy", str(folder))
    url = f"{platform.gateway}/mm-s3"
    with httpx.Client(timeout=30) as http:
        for name in ("en-fr", "en-de", "fr-en", "en-fr"):
            body = http.post(f"{url}/{name}", json={}).json()
            assert (body["model"], body["version"]) == (name, 1), body
        assert http.post(f"{url}/de-en", json={}).status_code == 404
        put("en-de", 2)
        wait_until(lambda: http.post(f"{url}/en-de", json={}).json()["version"] == 2, 20, "en-de v2 from S3")
        assert http.post(f"{url}/en-de/1", json={}).json()["version"] == 1
    platform.cli("delete", "mm-s3")


def test_translator_example_deploys_as_is(platform: Any, project: Any) -> None:
    folder = project("translator")
    assert not (folder / "models").exists()
    platform.cli("deploy", str(folder))
    out = platform.cli("predict", "translator", "-m", "en-fr", "-v", "1", "--data", '{"text": "Hello, World!"}')
    there = json.loads(out.stdout)
    assert there["model"] == "en-fr" and there["version"] == 1 and there["translation"] != "Hello, World!"
    back = json.loads(
        platform.cli("predict", "translator", "-m", "fr-en", "--data", json.dumps(there["translation"])).stdout
    )
    assert back["translation"] == "Hello, World!"
    with httpx.Client(timeout=30) as http:
        pairs = ["de-en", "es-it", "it-sv", "nl-pt", "sv-fr", "pt-de", "fr-es", "en-nl", "it-de", "de-sv"]
        for pair in pairs:
            resp = http.post(f"{platform.gateway}/translator/{pair}", json={"text": "abc"})
            assert resp.status_code == 200 and resp.json()["model"] == pair
    platform.cli("delete", "translator")
    assert os.environ.get("THRIFTY_HOME") != str(platform.home)  # the test never touched the user's platform
