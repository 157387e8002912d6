"""The gateway's admin listener (loopback only): the operator pushes routes and reads counters.

Every request needs ``Authorization: Bearer <token>`` (the token the platform keeps in a file readable only
by its owner), else 401.

- ``PUT /_thrifty/routes``: body ``{"apis": {"<name>": {"replicas": [{"id", "host", "port", "draining"}],
  "api_keys_sha256": [...], "max_payload": int, "request_timeout_s": float}}}`` replaces the whole table,
  and saves it (``RoutesFile``) for the gateway's next start, when there is a routes file.
  The table may also hold ``splitters``: ``{"<name>": {"backends": [{"api", "weight"}], "sticky_header",
  "shadow": {"api", "percent"}}}`` (``gateway_splitters``).
- ``GET /_thrifty/routes``: the table as the gateway holds it.
- ``GET /_thrifty/stats``: ``boot_id`` (new at each gateway start: the counters began again) and ``apis``:
  cumulative counters per API since that start (see ``ApiStats.to_json``); for a multi-model API also
  ``models``: per model, its versions, the replicas holding each and cache counters (``gateway_models``);
  ``splitters``: per splitter, per backend and per shadow API, requests and latency, and the shadow copies
  dropped (``gateway_stats.SplitterStats``).
"""

from __future__ import annotations

import hmac
import logging

from pydantic import ValidationError

from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.gateway_routes import RoutesDoc, RoutesFile
from thrifty.dataplane.http_messages import Request, Response, error_response, json_response

MAX_ADMIN_BODY = 16 * 2**20

_log = logging.getLogger("thrifty.gateway")


class AdminApp:
    def __init__(self, gateway: GatewayApp, token: str, routes_file: RoutesFile | None = None) -> None:
        self._gateway = gateway
        self._routes_file = routes_file
        self._expected = b"Bearer " + token.encode("utf-8")

    def body_limit(self, request: Request) -> int:
        return MAX_ADMIN_BODY

    async def handle(self, request: Request) -> Response:
        auth = request.headers.get(b"authorization", b"")
        if not hmac.compare_digest(auth, self._expected):
            return error_response(401, "unauthorized", "missing or wrong admin token")
        path, method = request.path, request.method
        if path == b"/_thrifty/routes":
            if method == b"PUT":
                try:
                    doc = RoutesDoc.model_validate_json(request.body)
                except ValidationError as exc:
                    return error_response(400, "invalid_routes", str(exc))
                self._gateway.set_routes(doc)
                if self._routes_file is not None:
                    try:
                        self._routes_file.save(doc)
                    except OSError as exc:  # routing goes on; only a restart would start from an older table
                        _log.error("cannot save the routing table to %s: %s", self._routes_file.path, exc)
                return json_response(200, {"apis": len(doc.apis)})
            if method == b"GET":
                return json_response(200, _routes_json(self._gateway))
        if path == b"/_thrifty/stats" and method == b"GET":
            return json_response(200, self._gateway.stats_json())
        return error_response(404, "not_found", f"no such admin endpoint: {method.decode()} {path.decode('latin-1')}")


def _routes_json(gateway: GatewayApp) -> dict[str, object]:
    return {
        "apis": {
            r.name: {
                "replicas": [{"id": s.id, "host": s.host, "port": s.port, "draining": s.draining} for s in r.replicas],
                "api_keys_sha256": list(r.key_hashes),
                "max_payload": r.max_payload,
                "request_timeout_s": r.timeout_s,
                "multi_model": r.multi_model,
                "protocol": "v2" if r.v2 else "thrifty",
            }
            for r in gateway.routes.values()
        },
        "splitters": {
            s.name: {
                "backends": [
                    {"api": name, "weight": w} for name, w in zip(s.split.names, s.split.weights, strict=True)
                ],
                "shadow": {"api": s.shadow.decode(), "percent": s.shadow_percent} if s.shadow is not None else None,
                "sticky_header": s.sticky.decode() if s.sticky is not None else None,
            }
            for s in gateway.splitters.values()
        },
    }
