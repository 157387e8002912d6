"""The Open Inference Protocol on the real local platform, called with the official tritonclient.http client
(unmodified), as a Triton or KServe user would: liveness, readiness, metadata and inference, binary and JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

pytestmark = pytest.mark.e2e


def test_tritonclient_against_the_gateway(platform: Any, project: Any) -> None:
    platform.cli("deploy", str(project("v2-numpy")))
    client = triton.InferenceServerClient(platform.gateway.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("scaler")
        meta = client.get_model_metadata("scaler")
        assert meta["name"] == "scaler"
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["y", "row_sum"]

        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        for binary in (True, False):
            tensor = triton.InferInput("x", [3, 4], "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            outputs = [triton.InferRequestedOutput("y", binary_data=binary), triton.InferRequestedOutput("row_sum")]
            result = client.infer("scaler", [tensor], outputs=outputs, request_id=f"r-{binary}")
            np.testing.assert_allclose(result.as_numpy("y"), x * 3 + 0.5)
            np.testing.assert_allclose(result.as_numpy("row_sum"), x.sum(axis=1))
            assert result.get_response()["id"] == f"r-{binary}"
        assert not client.is_model_ready("nothing-here")
    finally:
        client.close()
    got: Any = platform.json("get", "scaler")
    assert got["requests"]["2xx"] >= 2
    platform.cli("delete", "scaler")
