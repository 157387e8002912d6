"""The Open Inference Protocol codec, proven against the official client's own bytes (tritonclient.http)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from thrifty.dataplane.v2_protocol import (
    DATATYPES,
    V2RequestError,
    V2ResultError,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
    server_metadata,
)

SAMPLES: dict[str, Any] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.arange(6, dtype=np.uint8).reshape(2, 3),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([[4_000_000_000]], dtype=np.uint32),
    "UINT64": np.array([2**64 - 1, 0], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([[-3, 4], [5, -6]], dtype=np.int16),
    "INT32": np.arange(24, dtype=np.int32).reshape(2, 3, 4),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -1.25, 3.0], dtype=np.float16),
    "FP32": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
    "FP64": np.array([[1e-300, 2.5, -7.0]]),
    "BYTES": np.array([b"hello", b"", "caf\u00e9".encode()], dtype=object).reshape(1, 3),
}


def triton_body(arrays: dict[str, Any], *, binary: bool, outputs: list[Any] | None = None) -> tuple[bytes, int | None]:
    inputs = []
    for name, array in arrays.items():
        datatype = triton.np_to_triton_dtype(array.dtype) if array.dtype != object else "BYTES"
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id="req-7"
    )
    return bytes(body), header_length


def assert_same(got: Any, expected: Any) -> None:
    assert got.shape == expected.shape
    if expected.dtype == object:
        assert got.dtype == object and got.tolist() == expected.tolist()
    else:
        assert got.dtype == expected.dtype.newbyteorder("="), (got.dtype, expected.dtype)
        np.testing.assert_array_equal(got, expected)


def test_every_datatype_is_covered() -> None:
    assert set(SAMPLES) == set(DATATYPES)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_decodes_the_official_clients_request(datatype: str, binary: bool) -> None:
    body, header_length = triton_body({"x": SAMPLES[datatype]}, binary=binary)
    assert (header_length is not None) == binary
    request = decode_infer_request(body, header_length)
    assert request.id == "req-7"
    assert list(request.inputs) == ["x"]
    assert_same(request.inputs["x"], SAMPLES[datatype])


def test_decodes_several_inputs_mixing_binary_and_json() -> None:
    a = triton.InferInput("a", [2, 2], "FP32")
    a.set_data_from_numpy(np.ones((2, 2), dtype=np.float32), binary_data=True)
    b = triton.InferInput("b", [3], "INT64")
    b.set_data_from_numpy(np.array([1, 2, 3]), binary_data=False)
    c = triton.InferInput("c", [2], "BYTES")
    c.set_data_from_numpy(np.array([b"x", b"yz"], dtype=object), binary_data=True)
    body, header_length = triton.InferenceServerClient.generate_request_body([a, b, c])
    request = decode_infer_request(bytes(body), header_length)
    assert request.inputs["a"].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert request.inputs["b"].tolist() == [1, 2, 3]
    assert request.inputs["c"].tolist() == [b"x", b"yz"]
    assert request.binary_output  # no outputs named: tritonclient asks for binary outputs


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_the_official_client_reads_our_response(datatype: str, binary: bool) -> None:
    outputs = [triton.InferRequestedOutput("y", binary_data=binary)]
    body, header_length = triton_body({"x": SAMPLES[datatype]}, binary=True, outputs=outputs)
    request = decode_infer_request(body, header_length)
    response, json_length = encode_infer_response(
        {"y": request.inputs["x"]}, model_name="m", model_version="1", request=request
    )
    assert (json_length is not None) == binary
    result = triton.InferResult.from_response_body(response, header_length=json_length)
    assert result.get_response()["model_name"] == "m" and result.get_response()["id"] == "req-7"
    assert result.get_output("y")["datatype"] == datatype
    got = result.as_numpy("y")
    if datatype == "BYTES" and not binary:  # tritonclient gives JSON strings back as str
        got = np.vectorize(str.encode, otypes=[object])(got)
    assert_same(got, SAMPLES[datatype])


def test_one_array_is_output0_and_json_is_flattened_row_major() -> None:
    body, _ = encode_infer_response(np.arange(6, dtype=np.int32).reshape(2, 3), model_name="m")
    doc = orjson.loads(body)
    assert doc == {
        "model_name": "m",
        "outputs": [{"name": "output0", "datatype": "INT32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}],
    }
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    doc = orjson.loads(encode_infer_response({"z": fortran}, model_name="m")[0])
    assert doc["outputs"][0]["data"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # Lists and scalars are tensors too.
    doc = orjson.loads(encode_infer_response({"s": 3.5, "l": [[1, 2]]}, model_name="m")[0])
    assert [(o["shape"], o["datatype"]) for o in doc["outputs"]] == [([], "FP64"), ([1, 2], "INT64")]


def test_requested_outputs_select_and_order() -> None:
    request = decode_infer_request(
        orjson.dumps(
            {
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [{"name": "b"}, {"name": "a", "parameters": {"binary_data": False}}],
            }
        )
    )
    doc = orjson.loads(encode_infer_response({"a": 1, "b": 2, "c": 3}, model_name="m", request=request)[0])
    assert [o["name"] for o in doc["outputs"]] == ["b", "a"]
    with pytest.raises(V2RequestError, match="unknown output 'b'"):
        encode_infer_response({"a": 1}, model_name="m", request=request)


def doc(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


@pytest.mark.parametrize(
    ("body", "header_length", "fragment"),
    [
        (b"{", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (doc(), None, "non-empty list"),
        (doc({"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}), None, "1 elements of data for shape [2]"),
        (doc({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}), None, "(4 elements)"),
        (doc({"name": "x", "shape": [2], "datatype": "FP8", "data": [1, 2]}), None, "datatype 'FP8' is not one of"),
        (doc({"name": "x", "shape": [-1], "datatype": "FP32", "data": []}), None, "integers >= 0"),
        (doc({"name": "x", "shape": "2", "datatype": "FP32", "data": [1, 2]}), None, "shape must be a list"),
        (doc({"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}), None, "must be integers"),
        (doc({"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}), None, "outside INT8's range"),
        (doc({"name": "x", "shape": [1], "datatype": "UINT8", "data": [-1]}), None, "outside UINT8's range"),
        (doc({"name": "x", "shape": [2], "datatype": "UINT64", "data": [2**64 - 1, -1]}), None, "outside UINT64"),
        (doc({"name": "x", "shape": [2], "datatype": "INT64", "data": [2**63, 0.5]}), None, "must be integers"),
        (doc({"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}), None, "must be true/false"),
        (doc({"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}), None, "must be numbers"),
        (doc({"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}), None, "ragged"),
        (doc({"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}), None, "BYTES data must be strings"),
        (doc({"name": "x", "shape": [1], "datatype": "FP32"}), None, "has no data"),
        (doc({"shape": [1], "datatype": "FP32", "data": [1]}), None, "inputs[0].name"),
        (
            doc(*[{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2),
            None,
            "'x' appears more than once",
        ),
        (doc({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}, id=5), None, "'id' must be a string"),
        (doc({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}), 10_000, "Inference-Header-Content-Length"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: bytes, header_length: int | None, fragment: str) -> None:
    with pytest.raises(V2RequestError) as err:
        decode_infer_request(body, header_length)
    assert fragment in str(err.value)


def test_bad_binary_data_is_refused() -> None:
    head = doc({"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    assert decode_infer_request(head + bytes(8), len(head)).inputs["x"].tolist() == [0.0, 0.0]
    with pytest.raises(V2RequestError, match="does not fit"):
        decode_infer_request(head + bytes(4), len(head))
    with pytest.raises(V2RequestError, match="no input claims"):
        decode_infer_request(head + bytes(12), len(head))
    short = doc({"name": "x", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    with pytest.raises(V2RequestError, match=r"8 bytes of binary data for shape \[3\] of FP32 \(12 bytes\)"):
        decode_infer_request(short + bytes(8), len(short))
    strings = doc({"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 6}})
    with pytest.raises(V2RequestError, match="longer than the binary data"):
        decode_infer_request(strings + b"\x05\x00\x00\x00ab", len(strings))


def test_unencodable_results_are_result_errors() -> None:
    with pytest.raises(V2ResultError, match="no V2 datatype"):
        encode_infer_response(np.array([1 + 2j]), model_name="m")
    with pytest.raises(V2ResultError, match="not UTF-8"):
        encode_infer_response(np.array([b"\xff"], dtype=object), model_name="m")
    with pytest.raises(V2ResultError, match="bytes or str"):
        encode_infer_response(np.array([object()], dtype=object), model_name="m")


def test_metadata_documents() -> None:
    tensors = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert model_metadata("iris", versions=["1"], inputs=tensors) == {
        "name": "iris",
        "versions": ["1"],
        "platform": "thrifty",
        "inputs": tensors,
        "outputs": [],
    }
    with pytest.raises(V2ResultError):
        model_metadata("iris", inputs=[{"name": "x", "datatype": "FLOAT", "shape": [1]}])
    assert server_metadata("0.1")["extensions"] == ["binary_tensor_data"]
