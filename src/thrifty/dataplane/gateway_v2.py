"""The Open Inference Protocol (KServe V2 REST) at the gateway: only a path mapping, never a codec.

Decoding and encoding tensors happens in the replica (``replica_v2``): the gateway stays a byte proxy, adds
no numpy and no per-request parsing, and an API's V2 requests take the same path as its other requests (API
keys, the hold while it scales from zero, retries, timeouts). The gateway answers itself only what is about
the server rather than a model:

- ``GET /v2/health/live``: 200 while the gateway runs;
- ``GET /v2/health/ready``: 200 once it holds a routing table from the operator, else 503;
- ``GET /v2``: the server metadata.

``/v2/models/<name>[/versions/<v>][/infer|/ready]`` goes, path unchanged, to API ``<name>`` when it was
deployed with ``serving.protocol: v2`` (or to a splitter whose backends all are); the replica answers
``infer`` (POST), the metadata (GET) and ``ready`` (GET). The name ``v2`` is therefore not available to APIs
and splitters (the operator refuses it at deploy).
"""

from __future__ import annotations

from thrifty import __version__
from thrifty.dataplane.http_messages import Response, json_response
from thrifty.dataplane.v2_protocol import error_body, server_metadata

MODELS_PREFIX = b"/v2/models/"
_LIVE = json_response(200, {"live": True})
_READY = json_response(200, {"ready": True})


def model_name(path: bytes) -> bytes | None:
    """``<name>`` of ``/v2/models/<name>[/...]``; None for any other path."""
    if not path.startswith(MODELS_PREFIX):
        return None
    rest = path[len(MODELS_PREFIX) :]
    slash = rest.find(b"/")
    name = rest if slash < 0 else rest[:slash]
    return name or None


def server_answer(method: bytes, path: bytes, routes_pushed: bool) -> Response | None:
    """The gateway's own answer to a server-level V2 request; None when the path is about a model."""
    if method != b"GET":
        return None
    if path == b"/v2/health/live":
        return _LIVE
    if path == b"/v2/health/ready":
        if routes_pushed:
            return _READY
        return Response(503, error_body("the gateway has no routing table yet"), headers=[(b"retry-after", b"1")])
    if path == b"/v2":
        return json_response(200, server_metadata(__version__))
    return None


def not_found(name: bytes) -> Response:
    model = name.decode("utf-8", "replace")
    return Response(404, error_body(f"no model {model!r}: no API with serving.protocol v2 has that name"))
