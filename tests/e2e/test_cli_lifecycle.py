"""The whole user path: up, deploy, predict (CLI and plain HTTP), get, logs, events, refresh, delete, down."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from e2e_helpers import wait_until

pytestmark = pytest.mark.e2e

SAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_deploy_predict_get_logs_delete(platform: Any, project: Any) -> None:
    iris = project("iris")
    out = platform.cli("deploy", str(iris))
    assert "iris: live" in out.stdout and "iris-batch: live" in out.stdout
    assert "replicas ready" in out.stderr  # progress while waiting

    pred = orjson.loads(platform.cli("predict", "iris", str(iris / "sample.json")).stdout)
    assert pred["label"] == "setosa"
    pred = orjson.loads(platform.cli("predict", "iris-batch", "-d", orjson.dumps(SAMPLE).decode()).stdout)
    assert pred["label"] == "setosa"

    # Plain HTTP through the gateway, concurrently: the batching API answers every request correctly.
    with httpx.Client(base_url=platform.gateway, timeout=10) as http:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            resps = list(pool.map(lambda _: http.post("/iris-batch", json=SAMPLE), range(32)))
        assert {r.status_code for r in resps} == {200}
        assert all(r.json()["label"] == "setosa" for r in resps)
        assert resps[0].headers.get("x-request-id")
        bad = http.post("/iris", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]
        assert http.post("/no-such-api", json={}).status_code == 404
        metrics = http.get("/metrics").text
        assert 'thrifty_requests_total{api="iris-batch"' in metrics

    table = platform.cli("get").stdout
    header = table.splitlines()[0]
    for column in ("API", "STATUS", "REPLICAS", "IN-FLIGHT", "REQ/S", "P50", "P99", "2XX", "4XX", "5XX", "LAST UPDATE"):
        assert column in header
    assert any(line.startswith("iris ") and "live" in line and "1/1" in line for line in table.splitlines())

    # The operator samples the gateway's counters periodically: wait for the sample that includes all 33
    # successful iris-batch requests (the CLI predict plus the 32 over plain HTTP), then check it is exact.
    def iris_batch_requests() -> Any:
        apis = platform.json("get")
        assert isinstance(apis, list)
        counts = {a["name"]: a for a in apis}["iris-batch"]["requests"]
        return counts if counts["2xx"] >= 33 else None

    assert wait_until(iris_batch_requests, 30, "the iris-batch request counts") == {"2xx": 33, "4xx": 0, "5xx": 0}

    detail = platform.cli("get", "iris").stdout
    assert f"{platform.gateway}/iris" in detail and "REPLICA" in detail
    one = platform.json("get", "iris")
    assert isinstance(one, dict) and one["replica_list"][0]["state"] == "ready"

    logs = platform.cli("logs", "iris").stdout
    assert "ready" in logs and "[iris-" in logs
    json_lines = [orjson.loads(line) for line in platform.cli("logs", "iris", "-o", "json").stdout.splitlines()]
    assert json_lines and json_lines[0]["replica"].startswith("iris-")

    events = platform.json("events", "iris")
    assert isinstance(events, list) and any(e["kind"] == "deploy" for e in events)

    # Redeploying the same folder changes nothing.
    again = orjson.loads(platform.cli("deploy", str(iris), "-o", "json").stdout)
    assert {a["name"]: a["status"] for a in again["apis"]} == {"iris": "live", "iris-batch": "live"}

    old_rev = one["revision"]
    platform.cli("refresh", "iris")
    platform.cli("deploy", str(iris))  # waits until live again
    assert platform.json("get", "iris")["revision"] != old_rev  # type: ignore[index]

    platform.cli("delete", "iris")
    platform.cli("delete", "iris-batch")
    missing = platform.cli("get", "iris", check=False)
    assert missing.returncode == 3 and "no API named 'iris'" in missing.stderr


def test_bad_config_is_rejected_and_changes_nothing(platform: Any, project: Any) -> None:
    echo = project("echo")
    platform.cli("deploy", str(echo))
    before = platform.json("get", "echo")
    (echo / "thrifty.yaml").write_text(
        "apis:\n  - name: echo\n    predictor: {path: predictor.py, class: EchoPredictor}\n"
        "    serving:\n      max_concurrency: 0\n      timeout: 5s\n"
    )
    out = platform.cli("deploy", str(echo), check=False)
    assert out.returncode == 2
    assert "thrifty.yaml:5: apis[0].serving.max_concurrency = 0" in out.stderr
    assert "apis[0].serving.timeout" in out.stderr and "unknown field" in out.stderr
    val = platform.cli("validate", str(echo), check=False)
    assert val.returncode == 2 and "max_concurrency" in val.stderr
    after = platform.json("get", "echo")
    assert after["revision"] == before["revision"]  # type: ignore[index]
    assert after["replica_list"] == before["replica_list"]  # type: ignore[index]
    with httpx.Client(base_url=platform.gateway, timeout=10) as http:
        assert http.post("/echo", json={"still": "up"}).json() == {"still": "up"}
    platform.cli("delete", "echo")


def test_predictor_init_failure_fails_the_deploy_with_the_reason(platform: Any, project: Any) -> None:
    out = platform.cli("deploy", str(project("broken-init")), "--timeout", "60", check=False)
    assert out.returncode == 8, out.stderr
    assert "FileNotFoundError: cannot open model weights missing.bin" in out.stderr
    assert "predictor.py:4" in out.stderr
    detail = platform.json("get", "broken")
    assert detail["status"] == "error"  # type: ignore[index]
    platform.cli("delete", "broken")


def test_crashing_predictor_is_restarted_and_others_succeed(platform: Any, project: Any) -> None:
    crashy = project("crashy")
    platform.cli("deploy", str(crashy))
    with httpx.Client(base_url=platform.gateway, timeout=20) as http:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            slow = [pool.submit(http.post, "/crashy", json={"x": i, "sleep": 0.3}) for i in range(8)]
            dead = http.post("/crashy", json={"die": True})
            results = [f.result() for f in slow]
        # The replica died holding the request: the connection reset before any response, and a POST that may
        # have run is not retried elsewhere (a 503 would mean no replica was ready, which deploy rules out).
        assert dead.status_code == 502 and dead.json()["error"] == "upstream_failed", dead.text
        # Requests on the surviving replica (or retried there) succeed; at most the ones that shared the
        # dying process fail.
        ok = [r for r in results if r.status_code == 200]
        assert len(ok) >= 4
        failed = http.post("/crashy", json={"fail": True})
        assert failed.status_code == 500
        body = failed.json()
        assert body["request_id"] and "Traceback" not in failed.text
    platform.cli("deploy", str(crashy))  # waits until both replicas are ready again
    events = platform.json("events", "crashy", "--kind", "replica_exited")
    assert isinstance(events, list) and any("17" in e["message"] for e in events)
    logs = platform.cli("logs", "crashy", "--tail", "200").stdout
    assert body["request_id"] in logs and "predictor failed on purpose" in logs
    platform.cli("delete", "crashy")


def test_python_client_mirrors_cli(platform: Any, project: Any) -> None:
    from thrifty import Client

    with Client(platform.home) as client:
        result = client.deploy(project("echo"), wait=True)
        assert result["apis"][0]["status"] == "live"
        assert client.predict("echo", {"a": 1}) == {"a": 1}
        assert client.predict("echo", None, raw=b"hello", content_type="text/plain") == "hello"
        assert client.status()["apis"] >= 1
        assert any(a["name"] == "echo" for a in client.list_apis())
        client.delete("echo")


def test_up_twice_and_admin_token(platform: Any, tmp_path: Path) -> None:
    again = platform.cli("up", "--port", "0", check=False)
    assert again.returncode == 7 and "already running" in again.stderr
    token = platform.home / "token"
    assert token.stat().st_mode & 0o777 == 0o600
    info = orjson.loads((platform.home / "operator.json").read_bytes())
    resp = httpx.get(f"http://127.0.0.1:{info['admin_port']}/v1/apis")
    assert resp.status_code == 401


def test_api_keys(platform: Any, project: Any) -> None:
    echo = project("echo")
    key = "s3cret-key-for-the-e2e-test"
    config = (echo / "thrifty.yaml").read_text()
    (echo / "thrifty.yaml").write_text(
        config.replace("    autoscaling:", f"    auth: {{api_keys: [{key}]}}\n    autoscaling:")
    )
    platform.cli("deploy", str(echo))
    with httpx.Client(base_url=platform.gateway, timeout=10) as http:
        assert http.post("/echo", json={"a": 1}).status_code == 401
        assert (
            http.post("/echo", json={"a": 1}, headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code
            == 401
        )
        assert http.post("/echo", json={"a": 1}, headers={"Authorization": f"Bearer {key}"}).json() == {"a": 1}
    out = platform.cli("predict", "echo", "-d", '{"b": 2}', "-k", key)
    assert orjson.loads(out.stdout) == {"b": 2}
    denied = platform.cli("predict", "echo", "-d", '{"b": 2}', check=False)
    assert denied.returncode == 11 and "401" in denied.stderr
    platform.cli("delete", "echo")


def test_embeddings_example_serves_real_embeddings(platform: Any, project: Any) -> None:
    pytest.importorskip("sentence_transformers", reason="the embeddings example needs thrifty[embeddings]")
    platform.cli("deploy", str(project("embeddings")), "--timeout", "180")
    with httpx.Client(base_url=platform.gateway, timeout=60) as http:
        out = http.post("/embeddings", json={"texts": ["a cat sits on the mat", "a kitten rests on a rug"]}).json()
    assert out["dim"] == 384 and len(out["embeddings"]) == 2 and len(out["embeddings"][0]) == 384
    platform.cli("delete", "embeddings")


def test_a_broken_revision_fails_the_deploy_and_the_old_one_keeps_serving(platform: Any, project: Any) -> None:
    echo = project("echo")
    platform.cli("deploy", str(echo))
    good = (echo / "predictor.py").read_text()
    (echo / "predictor.py").write_text(good + "\nraise RuntimeError('broken on purpose')\n")
    out = platform.cli("deploy", str(echo), "--timeout", "60", check=False)
    assert out.returncode == 8 and "broken on purpose" in out.stderr
    with httpx.Client(base_url=platform.gateway, timeout=10) as http:
        assert http.post("/echo", json={"old": "revision"}).json() == {"old": "revision"}
    (echo / "predictor.py").write_text(good)
    platform.cli("deploy", str(echo))  # back to the good code: live again
    assert platform.json("get", "echo")["status"] == "live"  # type: ignore[index]
    platform.cli("delete", "echo")
