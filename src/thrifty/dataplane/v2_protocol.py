"""The Open Inference Protocol (KServe V2, REST) as pure functions: request bodies in, numpy arrays out, and back.

An API with ``serving.protocol: v2`` is called as Triton and KServe users call a model: ``POST
/v2/models/<api>/infer`` with ``{"id", "parameters", "inputs": [{"name", "shape", "datatype", "data"}],
"outputs": [{"name", "parameters"}]}``. The predictor gets ``{input name: numpy array}`` (dtype and shape from
the request) and returns a dict of arrays, or one array (named ``output0``); the response carries each output's
``name``, ``shape``, ``datatype`` and ``data`` flattened in row-major order.

The binary tensor extension (Triton's, which ``tritonclient.http`` uses by default) is understood both ways: a
request whose ``Inference-Header-Content-Length`` says where its JSON ends carries the raw bytes of inputs that
have ``parameters.binary_data_size``; outputs go back as raw bytes after the JSON when the request asks for it
(``parameters.binary_data_output`` for all, or an output's ``parameters.binary_data``), with the JSON length
returned for the same header. BYTES elements are then each a 4-byte little-endian length and the bytes.

Every problem with a request raises :class:`V2RequestError` (the caller answers 400 ``invalid_payload`` with
its message); a predictor result that cannot be encoded raises :class:`V2ResultError` (500, logged). numpy is
imported only here, on first use (``pip install 'thrifty[v2]'``), so APIs that do not use V2 never load it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import numpy as np

HEADER_LENGTH = b"inference-header-content-length"
OUTPUT0 = "output0"

# V2 datatype -> numpy dtype string (little-endian, as the binary extension sends them); BYTES -> object.
_NUMPY_OF = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "BYTES": "O",
}
DATATYPES = tuple(_NUMPY_OF)
_LEN = struct.Struct("<I")
_MAX_DIMS = 32


class V2RequestError(ValueError):
    """The request does not follow the protocol; ``str(exc)`` says what and where (answer 400)."""


class V2ResultError(TypeError):
    """The predictor returned something that is not a tensor or a dict of tensors (answer 500, log it)."""


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy ships with the v2 extra
        raise RuntimeError("serving.protocol: v2 needs numpy: pip install 'thrifty[v2]'") from exc
    return numpy


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: as the request-level binary_data_output says


@dataclass(frozen=True)
class V2Request:
    inputs: dict[str, np.ndarray[Any, Any]]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[RequestedOutput, ...] = ()  # empty: every output the predictor returns
    binary_output: bool = False


# -- requests -------------------------------------------------------------------------------------------------
def decode_infer_request(body: bytes, header_length: int | None = None) -> V2Request:
    """Parse an infer request body; ``header_length`` is the ``Inference-Header-Content-Length`` header's value
    (None when absent: the whole body is JSON)."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not 0 < header_length <= len(body):
            raise V2RequestError(
                f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes"
            )
        header, binary = body[:header_length], body[header_length:]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise V2RequestError(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise V2RequestError("the request must be a JSON object with an 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2RequestError("'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "parameters")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2RequestError("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, Any] = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        name, array, offset = _decode_input(tensor, i, binary, offset)
        if name in inputs:
            raise V2RequestError(f"inputs[{i}]: input {name!r} appears more than once")
        inputs[name] = array
    if offset != len(binary):
        raise V2RequestError(f"{len(binary) - offset} bytes of binary data follow the JSON that no input claims")
    outputs = _requested_outputs(doc.get("outputs"))
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise V2RequestError("parameters.binary_data_output must be true or false")
    return V2Request(inputs, request_id, parameters, outputs, binary_output)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2RequestError(f"{where} must be an object")
    return value


def _decode_input(tensor: Any, i: int, binary: bytes, offset: int) -> tuple[str, Any, int]:
    where = f"inputs[{i}]"
    if not isinstance(tensor, dict):
        raise V2RequestError(f"{where} must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise V2RequestError(f"{where}.name must be a non-empty string")
    where = f"input {name!r}"
    datatype = tensor.get("datatype")
    if datatype not in _NUMPY_OF:
        raise V2RequestError(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise V2RequestError(f"{where}: shape must be a list of at most {_MAX_DIMS} integers >= 0, got {shape!r}")
    count = math.prod(shape)
    params = _parameters(tensor.get("parameters"), f"{where}.parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise V2RequestError(f"{where} has both data and parameters.binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise V2RequestError(
                f"{where}: binary_data_size {size!r} does not fit the {len(binary) - offset} binary bytes left"
            )
        array = _from_binary(binary[offset : offset + size], datatype, shape, count, where)
        return name, array, offset + size
    if "data" not in tensor:
        raise V2RequestError(f"{where} has no data")
    return name, _from_json(tensor["data"], datatype, shape, count, where), offset


def _from_json(data: Any, datatype: str, shape: list[int], count: int, where: str) -> Any:
    np = _numpy()
    if datatype == "BYTES":
        flat = _flatten_bytes(data, where)
        if len(flat) != count:
            raise V2RequestError(f"{where}: {len(flat)} elements of data for shape {shape} ({count} elements)")
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    if not isinstance(data, list):
        data = [data]
    try:
        parsed = np.asarray(data)
    except ValueError:
        raise V2RequestError(f"{where}: data is ragged (nested lists of different lengths)") from None
    if parsed.size != count:
        raise V2RequestError(f"{where}: {parsed.size} elements of data for shape {shape} ({count} elements)")
    kind = parsed.dtype.kind
    if kind == "f" and datatype.startswith(("INT", "UINT")) and count:
        # Python ints that no single numpy int type holds (e.g. 2**64 - 1 next to 0) infer as float64.
        return _exact_integers(parsed.size, data, datatype, shape, where)
    if count and not (
        (datatype == "BOOL" and kind == "b")
        or (datatype.startswith(("INT", "UINT")) and kind in "iu")
        or (datatype.startswith("FP") and kind in "iuf")
    ):
        expected = "true/false" if datatype == "BOOL" else "numbers" if datatype.startswith("FP") else "integers"
        raise V2RequestError(f"{where}: data must be {expected} for {datatype}")
    dtype = np.dtype(_NUMPY_OF[datatype])
    if kind in "iu" and dtype.kind in "iu" and count:
        info = np.iinfo(dtype)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise V2RequestError(f"{where}: a value is outside {datatype}'s range [{info.min}, {info.max}]")
    return parsed.astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def _exact_integers(count: int, data: Any, datatype: str, shape: list[int], where: str) -> Any:
    np = _numpy()
    flat: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    if not all(type(x) is int for x in flat):
        raise V2RequestError(f"{where}: data must be integers for {datatype}")
    dtype = np.dtype(_NUMPY_OF[datatype])
    info = np.iinfo(dtype)
    if min(flat) < info.min or max(flat) > info.max:
        raise V2RequestError(f"{where}: a value is outside {datatype}'s range [{info.min}, {info.max}]")
    return np.array(flat, dtype=dtype.newbyteorder("=")).reshape(shape)


def _flatten_bytes(data: Any, where: str) -> list[bytes]:
    out: list[bytes] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item.encode())
        else:
            raise V2RequestError(f"{where}: BYTES data must be strings, got {type(item).__name__}")
    return out


def _from_binary(raw: bytes, datatype: str, shape: list[int], count: int, where: str) -> Any:
    np = _numpy()
    if datatype == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise V2RequestError(f"{where}: BYTES element {len(items)} has a truncated length prefix")
            (n,) = _LEN.unpack_from(raw, pos)
            if pos + 4 + n > len(raw):
                raise V2RequestError(f"{where}: BYTES element {len(items)} is longer than the binary data")
            items.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        if len(items) != count:
            raise V2RequestError(f"{where}: {len(items)} BYTES elements for shape {shape} ({count} elements)")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = np.dtype(_NUMPY_OF[datatype])
    if len(raw) != count * dtype.itemsize:
        raise V2RequestError(
            f"{where}: {len(raw)} bytes of binary data for shape {shape} of {datatype} ({count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(shape)


def _requested_outputs(value: Any) -> tuple[RequestedOutput, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise V2RequestError("'outputs' must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise V2RequestError(f"outputs[{i}] must be an object with a name")
        binary = _parameters(item.get("parameters"), f"outputs[{i}].parameters").get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise V2RequestError(f"outputs[{i}].parameters.binary_data must be true or false")
        out.append(RequestedOutput(item["name"], binary))
    return tuple(out)


# -- responses ------------------------------------------------------------------------------------------------
def datatype_of(array: Any) -> str:
    """The V2 datatype of a numpy array."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        return "BOOL"
    if kind in "iu":
        return f"{'INT' if kind == 'i' else 'UINT'}{size * 8}"
    if kind == "f" and size in (2, 4, 8):
        return f"FP{size * 8}"
    if kind in "OSU":
        return "BYTES"
    raise V2ResultError(f"a {array.dtype} array has no V2 datatype")


def encode_infer_response(
    result: Any,
    *,
    model_name: str,
    model_version: str | None = None,
    request: V2Request | None = None,
) -> tuple[bytes, int | None]:
    """The response body for a predictor's ``result`` (a dict of arrays, or one array = ``output0``), and the
    length of its JSON part when binary outputs follow it (for ``Inference-Header-Content-Length``), else None."""
    np = _numpy()
    produced = result if isinstance(result, dict) else {OUTPUT0: result}
    wanted = request.outputs if request is not None and request.outputs else None
    binary_default = request.binary_output if request is not None else False
    selected: list[tuple[str, bool]]
    if wanted is None:
        selected = [(name, binary_default) for name in produced]
    else:
        missing = [o.name for o in wanted if o.name not in produced]
        if missing:
            raise V2RequestError(f"unknown output {missing[0]!r}; the model returns {sorted(map(str, produced))}")
        selected = [(o.name, binary_default if o.binary is None else o.binary) for o in wanted]
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in selected:
        if not isinstance(name, str):
            raise V2ResultError(f"output names must be strings, got {name!r}")
        try:
            array = np.asarray(produced[name])
        except ValueError as exc:
            raise V2ResultError(f"output {name!r} is not a tensor: {exc}") from None
        datatype = datatype_of(array)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        flat = np.ascontiguousarray(array).reshape(-1)
        if binary:
            raw = _bytes_binary(flat, name) if datatype == "BYTES" else flat.astype(_NUMPY_OF[datatype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            tensor["data"] = [_text(x, name) for x in flat.tolist()]
        else:
            tensor["data"] = flat
        outputs.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request is not None and request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = outputs
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)


def _as_bytes(x: Any, name: str) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    raise V2ResultError(f"output {name!r}: a BYTES element must be bytes or str, got {type(x).__name__}")


def _bytes_binary(flat: Any, name: str) -> bytes:
    parts = []
    for x in flat.tolist():
        b = _as_bytes(x, name)
        parts.append(_LEN.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def _text(x: Any, name: str) -> str:
    try:
        return _as_bytes(x, name).decode()
    except UnicodeDecodeError:
        raise V2ResultError(
            f"output {name!r} holds bytes that are not UTF-8: the client must ask for binary data"
        ) from None


# -- metadata -------------------------------------------------------------------------------------------------
def model_metadata(
    name: str,
    *,
    versions: list[str] | None = None,
    platform: str = "thrifty",
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``GET /v2/models/<name>``: inputs/outputs are ``{"name", "datatype", "shape"}`` (-1 for a variable
    dimension), as the predictor declares them (class attributes ``inputs`` / ``outputs``), else empty."""
    for where, tensors in (("inputs", inputs or []), ("outputs", outputs or [])):
        for t in tensors:
            if set(t) != {"name", "datatype", "shape"} or t["datatype"] not in _NUMPY_OF:
                raise V2ResultError(f"{where} metadata must be {{name, datatype, shape}} with a V2 datatype: {t!r}")
    return {
        "name": name,
        "versions": versions or [],
        "platform": platform,
        "inputs": inputs or [],
        "outputs": outputs or [],
    }


def server_metadata(version: str) -> dict[str, Any]:
    """``GET /v2``: the server's name, version and protocol extensions."""
    return {"name": "thrifty", "version": version, "extensions": ["binary_tensor_data"]}


def error_body(message: str) -> bytes:
    """The protocol's error document, ``{"error": message}``."""
    return orjson.dumps({"error": message})
