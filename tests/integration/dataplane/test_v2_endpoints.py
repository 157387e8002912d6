"""The Open Inference Protocol through the gateway (a byte proxy) to a replica that decodes the tensors:
JSON and binary tensors, metadata, readiness, health, errors; the official tritonclient.http, unmodified."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from dataplane_helpers import ReplicaFactory, RunningGateway, api_config
from tritonclient.utils import InferenceServerException

from thrifty.dataplane.gateway_routes import RoutesDoc


def tensors_api(name: str = "tensors") -> Any:
    return api_config("Tensors", "splitting.py", name=name, protocol="v2")


async def serve_v2(gateway: RunningGateway, start_replica: ReplicaFactory) -> None:
    r = await start_replica(tensors_api(), "t1")
    route = {"replicas": [{"id": "t1", "host": "127.0.0.1", "port": r.port}], "protocol": "v2"}
    gateway.app.set_routes(RoutesDoc.model_validate({"apis": {"tensors": route}}))


async def test_json_infer_metadata_ready_and_health(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    await serve_v2(gateway, start_replica)
    body = {
        "id": "req-1",
        "inputs": [{"name": "INPUT0", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}],
    }
    resp = await client.post(gateway.url + "/v2/models/tensors/infer", json=body)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["model_name"] == "tensors" and doc["id"] == "req-1"
    [out] = doc["outputs"]
    assert out == {"name": "doubled", "datatype": "FP32", "shape": [2, 4], "data": [float(2 * i) for i in range(8)]}

    meta = (await client.get(gateway.url + "/v2/models/tensors")).json()
    assert meta["name"] == "tensors" and meta["inputs"][0]["name"] == "INPUT0"
    assert (await client.get(gateway.url + "/v2/models/tensors/ready")).status_code == 200
    assert (await client.get(gateway.url + "/v2/health/live")).status_code == 200
    assert (await client.get(gateway.url + "/v2/health/ready")).status_code == 200
    assert (await client.get(gateway.url + "/v2")).json()["extensions"] == ["binary_tensor_data"]

    bad = await client.post(gateway.url + "/v2/models/tensors/infer", json={"inputs": []})
    assert bad.status_code == 400 and "inputs" in bad.json()["error"]
    missing = await client.post(gateway.url + "/v2/models/nope/infer", json=body)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    # A V2 API does not take the thrifty protocol's POST /<api>.
    plain = await client.post(gateway.url + "/tensors", json={})
    assert plain.status_code == 404 and "/v2/models/tensors/infer" in plain.json()["error"]


async def test_a_thrifty_api_is_not_served_at_v2(
    gateway: RunningGateway, start_replica: ReplicaFactory, client: httpx.AsyncClient
) -> None:
    r = await start_replica(api_config("Echo"), "e1")
    gateway.set_routes(test_api={"replicas": [r]})
    resp = await client.post(gateway.url + "/v2/models/test-api/infer", json={"inputs": []})
    assert resp.status_code == 404


async def test_official_tritonclient_binary_and_json(gateway: RunningGateway, start_replica: ReplicaFactory) -> None:
    await serve_v2(gateway, start_replica)
    url = gateway.url.removeprefix("http://")

    def call() -> dict[str, Any]:
        client = triton.InferenceServerClient(url)
        try:
            x = np.arange(8, dtype=np.float32).reshape(2, 4)
            y = np.ones((2, 4), dtype=np.float32)
            inputs = [triton.InferInput("INPUT0", [2, 4], "FP32"), triton.InferInput("INPUT1", [2, 4], "FP32")]
            inputs[0].set_data_from_numpy(x, binary_data=True)
            inputs[1].set_data_from_numpy(y, binary_data=False)
            outputs = [triton.InferRequestedOutput("sum", binary_data=True), triton.InferRequestedOutput("doubled")]
            result = client.infer("tensors", inputs, outputs=outputs)
            with pytest.raises(InferenceServerException, match="unknown output"):
                client.infer("tensors", inputs[:1], outputs=[triton.InferRequestedOutput("nope")])
            return {
                "live": client.is_server_live(),
                "ready": client.is_server_ready(),
                "model_ready": client.is_model_ready("tensors"),
                "metadata": client.get_model_metadata("tensors"),
                "sum": result.as_numpy("sum"),
                "doubled": result.as_numpy("doubled"),
                "expected_sum": x + y,
                "expected_doubled": x * 2,
            }
        finally:
            client.close()

    got = await asyncio.to_thread(call)
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["metadata"]["name"] == "tensors"
    np.testing.assert_array_equal(got["sum"], got["expected_sum"])
    np.testing.assert_array_equal(got["doubled"], got["expected_doubled"])
