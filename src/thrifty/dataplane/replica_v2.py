"""The Open Inference Protocol (KServe V2 REST) in the replica: where tensors are decoded and encoded.

The gateway forwards ``/v2/models/<name>/...`` unchanged (``gateway_v2``); decoding happens here, so the
gateway stays a byte proxy and numpy is loaded only by replicas of APIs with ``serving.protocol: v2``. The
``<name>`` in the path is the gateway's business (an API, or a splitter whose backend this replica serves);
the replica answers for its own predictor whatever the name.

- ``POST /v2/models/<name>[/versions/<v>]/infer``: the body (JSON, or JSON + binary tensors with
  ``Inference-Header-Content-Length``) is decoded by ``v2_protocol``; the predictor gets ``{input name: numpy
  array}`` through the same admission and scheduler as any request, and returns a dict of arrays (or one
  array, ``output0``); the response is encoded as the request asked (binary outputs after the JSON, with the
  header giving the JSON's length).
- ``GET /v2/models/<name>[/versions/<v>]``: the metadata; inputs and outputs as the predictor class declares
  them (class attributes ``inputs`` / ``outputs``: lists of ``{"name", "datatype", "shape"}``), else empty.
- ``GET /v2/models/<name>[/versions/<v>]/ready``: 200 when the predictor is serving, else 503.

Errors are the protocol's ``{"error": message}``: 400 for a request that breaks the protocol (the message says
what and where), 500 for a predictor failure or an output that is not a tensor (details in the log, under the
request id). Overload and drain answer as every request does (503 + Retry-After; a draining replica's 503 tells
the gateway to retry elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thrifty.dataplane.http_messages import JSON, OCTETS, Request, Response, json_response
from thrifty.dataplane.v2_protocol import (
    HEADER_LENGTH,
    V2Request,
    V2RequestError,
    V2ResultError,
    decode_infer_request,
    encode_infer_response,
    error_body,
    model_metadata,
)

if TYPE_CHECKING:
    from thrifty.dataplane.replica import ReplicaApp

_log = logging.getLogger("thrifty.replica")
PREFIX = b"/v2/models/"
PREDICTOR_FAILED = "the predictor failed; its error is in the replica log under request id "


def v2_error(
    status: int, message: str, rid: bytes | None = None, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    extra = [(b"x-request-id", rid)] if rid is not None else []
    return Response(status, error_body(message), JSON, [*extra, *(headers or [])])


def _operation(path: bytes) -> bytes | None:
    """``b""`` (metadata), ``b"infer"`` or ``b"ready"`` for a model path; None for anything else."""
    parts = path[len(PREFIX) :].split(b"/")
    if not parts[0]:
        return None
    rest = parts[1:]
    if len(rest) >= 2 and rest[0] == b"versions" and rest[1]:
        rest = rest[2:]
    if not rest:
        return b""
    if len(rest) == 1 and rest[0] in (b"infer", b"ready"):
        return rest[0]
    return None


class V2Serving:
    def __init__(self, api_name: str) -> None:
        self.api_name = api_name
        self._metadata: Response | None = None

    async def handle(self, request: Request, rid: bytes, app: ReplicaApp) -> Response:
        op = _operation(request.path)
        if op is None:
            return v2_error(404, f"no such V2 endpoint: {request.path.decode('latin-1')}", rid)
        if op == b"infer":
            if request.method != b"POST":
                return v2_error(405, "infer with POST", rid, [(b"allow", b"POST")])
            return await self._infer(request, rid, app)
        if request.method != b"GET":
            return v2_error(405, "use GET", rid, [(b"allow", b"GET")])
        if op == b"ready":
            if app.ready:
                return json_response(200, {"name": self.api_name, "ready": True})
            return v2_error(503, "the predictor is not ready", rid, [(b"retry-after", b"1")])
        return self._metadata_response(app.predictor_instance, rid)

    def _metadata_response(self, instance: Any, rid: bytes) -> Response:
        if self._metadata is None:
            try:
                doc = model_metadata(
                    self.api_name,
                    inputs=getattr(instance, "inputs", None),
                    outputs=getattr(instance, "outputs", None),
                )
            except V2ResultError as exc:
                _log.error("request_id=%s bad V2 metadata on the predictor: %s", rid.decode("latin-1"), exc)
                return v2_error(500, f"the predictor's inputs/outputs metadata is malformed: {exc}", rid)
            self._metadata = json_response(200, doc)
        return self._metadata

    async def _infer(self, request: Request, rid: bytes, app: ReplicaApp) -> Response:
        scheduler = app.scheduler
        if scheduler is None:
            return v2_error(503, "the predictor is still loading", rid, [(b"retry-after", b"1")])
        decision = scheduler.admission()
        if not decision.admitted:
            return app.rejection(decision, rid)
        raw_length = request.headers.get(HEADER_LENGTH)
        try:
            length = None
            if raw_length is not None:
                if not raw_length.strip().isdigit():
                    raise V2RequestError(f"Inference-Header-Content-Length must be a number, got {raw_length!r}")
                length = int(raw_length)
            decoded = decode_infer_request(request.body, length)
        except V2RequestError as exc:
            return v2_error(400, str(exc), rid)
        return await app.run(scheduler, decoded.inputs, decision, rid, encode=self._encoder(decoded))

    def _encoder(self, decoded: V2Request) -> Callable[[Any, bytes], Response]:
        def encode(result: Any, rid: bytes) -> Response:
            try:
                body, json_length = encode_infer_response(result, model_name=self.api_name, request=decoded)
            except V2RequestError as exc:  # an output the request named that the predictor did not return
                return v2_error(400, str(exc), rid)
            except (V2ResultError, TypeError, ValueError) as exc:
                _log.error("request_id=%s the predictor's result is not a V2 tensor: %s", rid.decode("latin-1"), exc)
                return v2_error(500, PREDICTOR_FAILED + rid.decode("latin-1"), rid)
            if json_length is None:
                return Response(200, body, JSON, [(b"x-request-id", rid)])
            headers = [(b"x-request-id", rid), (HEADER_LENGTH, str(json_length).encode("ascii"))]
            return Response(200, body, OCTETS, headers)

        return encode
