"""The operator's admin REST API (loopback only, bearer token): what the CLI and the Python client call.

Routing is a plain function of (method, path, query, headers, body) so it is served by the same lean
HTTP core as the data plane and tested without sockets.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from pydantic import ValidationError

from thrifty import __version__
from thrifty.config.cluster import SpotChaosConfig
from thrifty.config.schema import API_NAME_RE
from thrifty.control.cluster import Cluster
from thrifty.control.cluster_metrics import cost_metrics
from thrifty.control.logs import read_logs
from thrifty.control.nodes import NODE_EVENT_KINDS
from thrifty.control.operator import Operator
from thrifty.control.spot_step import SPOT_EVENT_KINDS
from thrifty.errors import AuthError, NotFoundError, RequestError, ThriftyError

log = logging.getLogger("thrifty.admin")

MAX_UPLOAD_BYTES = 300 * 2**20
UNAUTHORIZED_BODY_BYTES = 64 * 1024  # enough to answer 401; no one without the token makes us buffer more


@dataclass(frozen=True)
class AdminResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


def _json(status: int, obj: Any) -> AdminResponse:
    return AdminResponse(status, orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))


def _int_param(q: dict[str, list[str]], name: str, default: int) -> int:
    raw = q.get(name, [str(default)])[0]
    if not raw.isdigit():
        raise RequestError(f"{name} must be a non-negative whole number, got {raw!r}")
    return int(raw)


Handler = Callable[[re.Match[str], dict[str, list[str]], bytes], Awaitable[Any]]


class AdminApi:
    def __init__(self, operator: Operator, token: str, on_shutdown: Callable[[], None]) -> None:
        self._op = operator
        self._token = token.encode()
        self._on_shutdown = on_shutdown
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"^/v1/status$"), self._status),
            ("POST", re.compile(r"^/v1/deploy$"), self._deploy),
            ("GET", re.compile(r"^/v1/apis$"), self._list),
            ("GET", re.compile(r"^/v1/apis/(?P<name>[^/]+)$"), self._get),
            ("DELETE", re.compile(r"^/v1/apis/(?P<name>[^/]+)$"), self._delete),
            ("POST", re.compile(r"^/v1/apis/(?P<name>[^/]+)/refresh$"), self._refresh),
            ("GET", re.compile(r"^/v1/apis/(?P<name>[^/]+)/logs$"), self._logs),
            ("GET", re.compile(r"^/v1/apis/(?P<name>[^/]+)/events$"), self._events),
            ("POST", re.compile(r"^/v1/shutdown$"), self._shutdown),
            ("GET", re.compile(r"^/v1/events$"), self._all_events),
            ("GET", re.compile(r"^/v1/cluster$"), self._cluster),
            ("GET", re.compile(r"^/v1/cluster/events$"), self._cluster_events),
            ("POST", re.compile(r"^/v1/cluster/nodes/(?P<node>[^/]+)/preempt$"), self._preempt),
            ("POST", re.compile(r"^/v1/cluster/nodes/(?P<node>[^/]+)/rebalance$"), self._rebalance),
            ("POST", re.compile(r"^/v1/cluster/pools/(?P<pool>[^/]+)/capacity$"), self._capacity),
            ("POST", re.compile(r"^/v1/cluster/chaos$"), self._chaos),
            ("GET", re.compile(r"^/metrics$"), self._metrics),
        ]

    async def handle(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> AdminResponse:
        try:
            self._authorize(headers)
            allowed = []
            for route_method, pattern, handler in self._routes:
                match = pattern.match(path)
                if match is None:
                    continue
                if route_method != method:
                    allowed.append(route_method)
                    continue
                name = match.groupdict().get("name")
                if name is not None and not API_NAME_RE.match(name):
                    raise RequestError(f"{name!r} is not an API name ([a-z][a-z0-9-]*, at most 40 characters)")
                out = await handler(match, parse_qs(query), body)
                if isinstance(out, AdminResponse):
                    return out
                return _json(200, out)
            if allowed:
                return _json(405, {"error": "method_not_allowed", "message": f"use {', '.join(allowed)}"})
            raise NotFoundError(f"no admin endpoint {method} {path}")
        except ThriftyError as exc:
            return _json(exc.http_status, exc.to_dict())
        except Exception as exc:  # an operator bug must not kill the admin API
            log.exception("admin request %s %s failed", method, path)
            return _json(500, {"error": "internal", "message": f"{type(exc).__name__}: {exc}"})

    def authorized(self, authorization: str) -> bool:
        given = authorization[7:].encode() if authorization.lower().startswith("bearer ") else b""
        return bool(given) and hmac.compare_digest(given, self._token)

    def _authorize(self, headers: dict[str, str]) -> None:
        if not self.authorized(headers.get("authorization", "")):
            raise AuthError("missing or wrong admin token (it is in $THRIFTY_HOME/token)")

    async def _status(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        op = self._op
        return {
            "version": __version__,
            "home": str(op.home.root),
            "gateway": op.gateway.url,
            "apis": len(op.apis),
            "replicas": len(op.observed),
            "uptime_s": round(op.clock() - op.started_s, 1),
        }

    async def _deploy(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        config = q.get("config", [None])[0]
        return await self._op.deploy(body, config)

    async def _list(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        op = self._op
        await op.refresh_traffic()
        out: dict[str, Any] = {"apis": op.list_apis(), "splitters": op.splitters.list(op.traffic, op.gateway.url)}
        if op.cluster is not None:
            out["cost"] = op.cluster.costs.cluster()  # the cluster's $/h, idle apart
        return out

    async def _get(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        name = m["name"]
        op = self._op
        await op.refresh_traffic()
        if name in op.splitters.runtimes and name not in op.apis:
            out = op.splitters.describe(name, op.traffic, op.gateway.url)
        else:
            out = op.describe(name, detail=True)
        out["events"] = [e.to_dict() for e in self._op.store.events(name, limit=10)]
        return out

    async def _delete(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        return await self._op.delete(m["name"])

    async def _refresh(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        return self._op.refresh(m["name"])

    async def _logs(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        name = m["name"]
        api_dir = self._op.home.logs_dir / name
        if name not in self._op.apis and not api_dir.is_dir():
            raise NotFoundError(f"no API named {name!r} is deployed and no logs are kept for it")
        cursor_raw = q.get("cursor", [None])[0]
        try:
            cursor = orjson.loads(cursor_raw) if cursor_raw else None
        except orjson.JSONDecodeError:
            cursor = "bad"
        if cursor is not None and not (
            isinstance(cursor, dict) and all(isinstance(v, int) and v >= 0 for v in cursor.values())
        ):
            raise RequestError("cursor must be the JSON object a previous logs call returned")
        return read_logs(api_dir, cursor, _int_param(q, "tail", 100))

    async def _events(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        kind = q.get("kind", [None])[0]
        limit = _int_param(q, "limit", 50)
        return {"events": [e.to_dict() for e in self._op.store.events(m["name"], kind, limit)]}

    async def _all_events(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        kind = q.get("kind", [None])[0]
        limit = _int_param(q, "limit", 50)
        return {"events": [e.to_dict() for e in self._op.store.events(None, kind, limit)]}

    def _cluster_of(self) -> Cluster:
        if self._op.cluster is None:
            raise NotFoundError("the platform runs without a cluster file (start it with `thrifty up --cluster FILE`)")
        return self._op.cluster

    async def _cluster(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        return self._cluster_of().info(self._op.clock())

    async def _cluster_events(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        self._cluster_of()
        limit = _int_param(q, "limit", 50)
        kinds = NODE_EVENT_KINDS + SPOT_EVENT_KINDS
        return {"events": [e.to_dict() for e in self._op.store.cluster_events(kinds, limit)]}

    def _body(self, body: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise RequestError("the body must be a JSON object")
        return doc

    async def _preempt(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        notice = self._body(body).get("notice_s", 120.0)
        if not isinstance(notice, (int, float)) or isinstance(notice, bool) or not 0 <= notice <= 3600:
            raise RequestError(f"notice_s must be a number of seconds from 0 to 3600, got {notice!r}")
        return await self._cluster_of().preempt(m["node"], float(notice))

    async def _rebalance(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        return self._cluster_of().rebalance(m["node"])

    async def _capacity(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        launches = self._body(body).get("launches")
        if launches is not None and (not isinstance(launches, int) or isinstance(launches, bool) or launches < 0):
            raise RequestError(f"launches must be a whole number >= 0 or null (unlimited), got {launches!r}")
        return self._cluster_of().set_capacity(m["pool"], launches)

    async def _chaos(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        doc = self._body(body)
        try:
            chaos = SpotChaosConfig.model_validate(doc)
        except ValidationError as exc:
            raise RequestError(f"bad chaos settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        return self._cluster_of().start_chaos(chaos)

    async def _metrics(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        op = self._op
        text = cost_metrics(op.cluster, list(op.apis), op.clock()) if op.cluster is not None else ""
        return AdminResponse(200, text.encode(), "text/plain; version=0.0.4")

    async def _shutdown(self, m: re.Match[str], q: dict[str, list[str]], body: bytes) -> Any:
        self._on_shutdown()
        return {"shutting_down": True}
