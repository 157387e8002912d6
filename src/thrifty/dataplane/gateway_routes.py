"""The gateway's routing table: the admin document (what the operator PUTs) and the live structures.

The operator replaces the whole table at once (``PUT /_thrifty/routes``). Live per-replica state (requests
in flight, ejection after a refused connection, a drain the gateway saw for itself) and per-API counters
survive a replacement for replicas and APIs that are still there, so figures stay continuous.

``RoutesFile`` keeps the last pushed table on disk (atomic replace, owner-only), so that a gateway
restarted after a crash routes at once from it instead of waiting for the operator's next push.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from thrifty.dataplane.gateway_stats import ApiStats
from thrifty.dataplane.process_io import write_atomic
from thrifty.models.recent import RecentModels

DEFAULT_MAX_PAYLOAD = 10 * 2**20


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaRoute(_Doc):
    id: str = Field(..., min_length=1)
    host: str = Field(..., min_length=1)
    port: int = Field(..., ge=1, le=65535)
    draining: bool = False


class ApiRouteDoc(_Doc):
    replicas: list[ReplicaRoute] = Field(default_factory=list)
    api_keys_sha256: list[str] = Field(default_factory=list, description="hex sha256 of each accepted key")
    max_payload: int = Field(DEFAULT_MAX_PAYLOAD, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)
    stream_idle_timeout_s: float = Field(30.0, gt=0)  # a streamed response: longest gap between chunks
    # Scale to zero: with no ready replica, hold requests (bounded) until one is, instead of answering 503.
    hold_when_empty: bool = False
    cold_start_timeout_s: float = Field(120.0, gt=0)
    max_cold_queue: int = Field(1000, ge=1)
    # A multi-model API: requests name a model (POST /<api>/<model>[/<version>]) and go to replicas holding it.
    multi_model: bool = False
    # models.keep_warm: the gateway counts the distinct models asked for within this window (0 = not counted).
    keep_warm_s: float = Field(0.0, ge=0, le=86400)
    # v2: also served at /v2/models/<api>/... (the Open Inference Protocol), the path forwarded as it is.
    protocol: Literal["thrifty", "v2"] = "thrifty"
    # Replicas the platform lost with their node (a spot reclaim, a node given back), not crashes: a request
    # they cut off does not count against the poison bound (``gateway_proxy.RESET_RETRIES``).
    lost_with_node: list[str] = Field(default_factory=list)


class SplitterBackendDoc(_Doc):
    api: str = Field(..., min_length=1)
    weight: float = Field(..., ge=0, le=1_000_000)


class ShadowDoc(_Doc):
    api: str = Field(..., min_length=1)
    percent: float = Field(100.0, gt=0, le=100)


class SplitterRouteDoc(_Doc):
    """A splitter as the gateway routes it: the operator sends the weights in force (a canary's included)."""

    backends: list[SplitterBackendDoc] = Field(..., min_length=1)
    sticky_header: str | None = None
    shadow: ShadowDoc | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> SplitterRouteDoc:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError("no backend has a weight above 0")
        return self


class RoutesDoc(_Doc):
    apis: dict[str, ApiRouteDoc] = Field(default_factory=dict)
    splitters: dict[str, SplitterRouteDoc] = Field(default_factory=dict)


class ReplicaState:
    """One replica as the router sees it (satisfies ``policy.routing.RoutingCandidate``)."""

    __slots__ = (
        "authority", "draining", "ejected_until", "held", "held_refs", "host", "id", "in_flight", "model_stats",
        "port", "seen_draining", "slots",
    )  # fmt: skip

    def __init__(self, replica_id: str, host: str, port: int) -> None:
        self.id = replica_id
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}".encode("ascii")
        self.draining = False  # told by the table, or seen in a 503 + X-Thrifty-Draining
        self.seen_draining = False
        self.in_flight = 0
        self.ejected_until = 0.0  # refused a connection: skipped until then
        # Multi-model APIs, from the replica's last report (gateway_models.ModelPoller):
        self.held: frozenset[bytes] = frozenset()  # b"name" and b"name/version" of models in memory
        self.held_refs: tuple[str, ...] = ()  # "name/version", least recently used first
        self.model_stats: dict[str, Any] = {}  # per-model cache counters
        self.slots = 1  # requests it executes at once (model-aware routing's load bound)


class ApiRoute:
    __slots__ = (
        "cold_start_timeout_s", "hold_when_empty", "key_hashes", "lost_s", "lost_with_node", "max_cold_queue",
        "max_payload",
        "model_orders", "multi_model", "name", "name_bytes", "recent_models", "replicas", "stats",
        "stream_idle_timeout_s", "timeout_s", "v2",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        replicas: list[ReplicaState],
        key_hashes: tuple[str, ...],
        max_payload: int,
        timeout_s: float,
        stats: ApiStats,
        hold_when_empty: bool = False,
        cold_start_timeout_s: float = 120.0,
        max_cold_queue: int = 1000,
        multi_model: bool = False,
        v2: bool = False,
    ) -> None:
        self.name = name
        self.name_bytes = name.encode("utf-8")
        self.replicas = replicas
        self.key_hashes = key_hashes
        self.max_payload = max_payload
        self.timeout_s = timeout_s
        self.stream_idle_timeout_s = 30.0
        self.stats = stats
        self.hold_when_empty = hold_when_empty
        self.cold_start_timeout_s = cold_start_timeout_s
        self.max_cold_queue = max_cold_queue
        self.multi_model = multi_model
        self.v2 = v2  # served at /v2/models/<name>/... too
        self.model_orders: dict[bytes, tuple[int, ...]] = {}  # rendezvous order per model, for these replicas
        # When a replica was last lost (refused a connection, reset a request, or left the table without
        # draining first: a crash): until a replacement is listed, requests wait for it instead of a 503.
        self.lost_s: float | None = None
        self.lost_with_node: frozenset[str] = frozenset()  # replica ids the platform lost with their node
        self.recent_models: RecentModels | None = None  # models asked for within keep_warm (multi-model APIs)

    @property
    def replicas_ready(self) -> int:
        return sum(1 for r in self.replicas if not r.draining)


def build_routes(doc: RoutesDoc, old: dict[bytes, ApiRoute], now_s: float = 0.0) -> dict[bytes, ApiRoute]:
    """The new live table, reusing replica state and counters of what stays.

    A replica that leaves the table without having been listed as draining was lost (deliberate stops drain
    first): its API's ``lost_s`` becomes ``now_s``."""
    new: dict[bytes, ApiRoute] = {}
    for name, api in doc.apis.items():
        key = name.encode("utf-8")
        prev = old.get(key)
        known = {(r.id, r.host, r.port): r for r in prev.replicas} if prev is not None else {}
        replicas: list[ReplicaState] = []
        for entry in api.replicas:
            state = known.get((entry.id, entry.host, entry.port)) or ReplicaState(entry.id, entry.host, entry.port)
            state.draining = entry.draining or state.seen_draining
            replicas.append(state)
        new[key] = ApiRoute(
            name=name,
            replicas=replicas,
            key_hashes=tuple(h.lower() for h in api.api_keys_sha256),
            max_payload=api.max_payload,
            timeout_s=api.request_timeout_s,
            stats=prev.stats if prev is not None else ApiStats(),
            hold_when_empty=api.hold_when_empty,
            cold_start_timeout_s=api.cold_start_timeout_s,
            max_cold_queue=api.max_cold_queue,
            multi_model=api.multi_model,
            v2=api.protocol == "v2",
        )
        new[key].stream_idle_timeout_s = api.stream_idle_timeout_s
        new[key].lost_with_node = frozenset(api.lost_with_node)
        if api.multi_model and api.keep_warm_s > 0:
            kept_recent = prev.recent_models if prev is not None else None
            new[key].recent_models = (
                kept_recent if kept_recent is not None and kept_recent.window_s == api.keep_warm_s
                else RecentModels(api.keep_warm_s)
            )  # fmt: skip
        if prev is not None:
            route = new[key]
            route.lost_s = prev.lost_s
            kept = {(r.id, r.host, r.port) for r in replicas}
            if any(not r.draining and (r.id, r.host, r.port) not in kept for r in prev.replicas):
                route.lost_s = now_s
    return new


def removed_endpoints(old: dict[bytes, ApiRoute], new: dict[bytes, ApiRoute]) -> set[tuple[str, int]]:
    """(host, port) of replicas that left the table: their idle pooled connections can go."""
    before = {(r.host, r.port) for route in old.values() for r in route.replicas}
    after = {(r.host, r.port) for route in new.values() for r in route.replicas}
    return before - after


class RoutesFile:
    """The last routing table the gateway was given, kept for its next start.

    ``save`` rewrites the file only when the table changed (the operator re-pushes an unchanged table every
    few seconds). Written with ``write_atomic``: a crash mid-write leaves the previous table, never half of
    one; the file is created readable by its owner only (it holds API key hashes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last: bytes | None = None

    def load(self) -> RoutesDoc | None:
        """The saved table; None when there is none or it cannot be read (the gateway then starts empty)."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        try:
            doc = RoutesDoc.model_validate_json(data)
        except ValidationError:
            return None
        self._last = doc.model_dump_json().encode("utf-8")
        return doc

    def save(self, doc: RoutesDoc) -> None:
        data = doc.model_dump_json().encode("utf-8")
        if data != self._last:
            write_atomic(self.path, data)
            self._last = data
