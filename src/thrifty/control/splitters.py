"""The operator's splitters step: deployed splitters, their rows in the routing table, and the automated canary.

- **Deploy** (``check`` then ``apply``): a project's splitters are checked against what the project and the
  platform hold before anything changes: every backend and shadow must be an API of this project or one already
  deployed, a splitter's name must not be a deployed API's (nor an API's a deployed splitter's), the name ``v2``
  is kept for the Open Inference Protocol's paths, and a splitter's APIs must all speak one protocol. A bad
  project raises ``ConfigError`` and changes nothing. ``apply`` stores them (``Store.put_splitter``).
- **Routes** (``routes``): each splitter's row in the gateway's table with the weights in force: the
  configured ones, or the canary's while it runs. A weight change is a new table; the gateway swaps it in at
  once and requests in flight finish where they were sent.
- **Canary** (``update(now)``, one call per reconcile tick): ``policy.canary.decide`` with the figures of the
  step so far, from the gateway's per-backend counters per splitter (the operator's stats pull,
  ``traffic.TrafficHistory``): cumulative counters now minus those at the step's start. A decision that moves
  traffic changes the weights (pushed by the same tick) and is recorded as an event of the splitter
  (``canary_started``, ``canary_step``, ``canary_promoted``, ``canary_rolled_back``, ``canary_held``) with its
  reason record. The canary's progress is stored, so an operator restart resumes it (the interval in progress
  starts again). A redeploy with another ``canary`` block (or other backends) starts a fresh canary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from thrifty.config.schema import ApiConfig, ProjectConfig, SplitterConfig
from thrifty.control.store import Store, StoredSplitter
from thrifty.control.traffic import TrafficHistory, percentile_from_histogram
from thrifty.errors import ConfigError, ConflictError, NotFoundError
from thrifty.policy.canary import CanaryFigures, CanaryState, decide, weights_at

RESERVED_NAMES = frozenset({"v2"})  # /v2/... is the Open Inference Protocol's (dataplane.gateway_v2)

# Cumulative figures of one backend: (requests, 5xx, latency bucket counts).
_Counts = tuple[int, int, tuple[int, ...]]


@dataclass
class SplitterRuntime:
    config: SplitterConfig
    created_s: float
    updated_s: float
    canary: CanaryState | None = None
    canary_key: str = ""  # the canary's config and backends: a redeploy that changes them starts it afresh
    resume: bool = False  # restored after an operator restart: the step in progress starts again
    baseline: dict[str, _Counts] | None = None  # per backend, the counters at the current step's start
    bounds_s: list[float] = field(default_factory=list)
    last_reason: dict[str, Any] | None = None

    @property
    def weights(self) -> dict[str, float]:
        """Weight per backend API in force now (a canary not ticked yet: at its first step)."""
        if self.config.canary is None:
            return {b.api: b.weight for b in self.config.backends}
        return weights_at(self.config, _canary_percent(self.config, self.canary or CanaryState()))


def _canary_key(config: SplitterConfig) -> str:
    if config.canary is None:
        return ""
    doc = {"canary": config.canary.model_dump(mode="json"), "backends": [b.api for b in config.backends]}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()


def _canary_percent(config: SplitterConfig, state: CanaryState) -> float:
    if state.phase == "promoted":
        return 100.0
    if state.phase == "rolled_back" or config.canary is None:
        return 0.0
    return config.canary.steps[max(state.step, 0)]


class Splitters:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock  # wall time, for timestamps users see
        self.runtimes: dict[str, SplitterRuntime] = {}

    # deploy ---------------------------------------------------------------------------------------------
    def restore(self) -> None:
        """The splitters deployed before an operator restart, canaries where they were."""
        for stored in self.store.list_splitters():
            config = SplitterConfig.model_validate(stored.config)
            rt = SplitterRuntime(config, stored.created_s, stored.updated_s, canary_key=_canary_key(config))
            c = stored.canary
            if config.canary is not None and c is not None and c.get("key") == rt.canary_key:
                rt.canary = CanaryState(c["phase"], int(c["step"]), math.nan, str(c.get("summary", "")))
                rt.resume = True
            self.runtimes[config.name] = rt

    def check(self, project: ProjectConfig, deployed: Mapping[str, ApiConfig], source: str) -> None:
        """Raise ConfigError when the project's APIs and splitters do not fit what is deployed."""
        apis: dict[str, ApiConfig] = {**deployed, **{a.name: a for a in project.apis}}
        for i, api in enumerate(project.apis):
            if api.name in RESERVED_NAMES:
                raise ConfigError(f"{source}: apis[{i}].name = {api.name!r}: reserved for the /v2/... endpoints")
            if api.name in self.runtimes:
                raise ConfigError(
                    f"{source}: apis[{i}].name = {api.name!r}: a splitter of that name is deployed "
                    f"(`thrifty delete {api.name}` first, or rename the API)"
                )
        for i, s in enumerate(project.splitters):
            where = f"{source}: splitters[{i}]"
            if s.name in RESERVED_NAMES:
                raise ConfigError(f"{where}.name = {s.name!r}: reserved for the /v2/... endpoints")
            if s.name in deployed:
                raise ConfigError(f"{where}.name = {s.name!r}: an API of that name is deployed; rename the splitter")
            for name in s.api_names:
                if name not in apis:
                    known = ", ".join(sorted(apis)) or "none"
                    raise ConfigError(
                        f"{where}: API {name!r} is neither an API of this project nor a deployed API "
                        f"(deployed and in the project: {known}); deploy it first or fix the name"
                    )
            protocols = {apis[n].serving.protocol for n in s.api_names}
            if len(protocols) > 1:
                raise ConfigError(
                    f"{where}: its APIs speak different protocols ("
                    + ", ".join(f"{n}: {apis[n].serving.protocol}" for n in s.api_names)
                    + "); a splitter's backends and shadow must all be thrifty or all v2"
                )

    def apply(self, splitters: list[SplitterConfig], now_s: float) -> list[dict[str, Any]]:
        """Store the (checked) splitters; -> one {"name", "action"} per splitter."""
        results = []
        for config in splitters:
            current = self.runtimes.get(config.name)
            if current is not None and current.config == config:
                results.append({"name": config.name, "action": "unchanged"})
                continue
            key = _canary_key(config)
            if current is None:
                action = "created"
                rt = self.runtimes[config.name] = SplitterRuntime(config, now_s, now_s, canary_key=key)
            else:
                action = "updated"
                rt = current
                rt.config, rt.updated_s = config, now_s
                if key != rt.canary_key:  # another canary (or none): start afresh
                    rt.canary, rt.canary_key, rt.baseline, rt.resume = None, key, None, False
            self._save(rt)
            self.store.add_event(config.name, "deploy", f"splitter {action}: {_describe_weights(rt.weights)}", now_s)
            results.append({"name": config.name, "action": action})
        return results

    def delete(self, name: str) -> dict[str, Any]:
        if name not in self.runtimes:
            raise NotFoundError(f"no API or splitter named {name!r} is deployed", details={"name": name})
        del self.runtimes[name]
        self.store.delete_splitter(name)
        self.store.add_event(name, "delete", "splitter deleted", self.clock())
        return {"name": name, "deleted": True, "kind": "splitter"}

    def check_api_delete(self, api: str) -> None:
        """An API that a splitter sends requests to cannot be deleted from under it."""
        users = sorted(name for name, rt in self.runtimes.items() if api in rt.config.api_names)
        if users:
            raise ConflictError(
                f"API {api!r} is a backend or shadow of splitter(s) {', '.join(users)}: delete them or redeploy "
                "them without it first",
                details={"api": api, "splitters": users},
            )

    def _save(self, rt: SplitterRuntime) -> None:
        canary = None
        if rt.canary is not None:
            c = rt.canary
            canary = {"key": rt.canary_key, "phase": c.phase, "step": c.step, "summary": c.summary}
        config = rt.config.model_dump(mode="json", exclude_none=True)
        self.store.put_splitter(StoredSplitter(rt.config.name, config, rt.created_s, rt.updated_s, canary))

    # routes ---------------------------------------------------------------------------------------------
    def routes(self) -> dict[str, Any]:
        """The ``splitters`` part of the gateway's routing table (``gateway_routes.SplitterRouteDoc``)."""
        table: dict[str, Any] = {}
        for name, rt in self.runtimes.items():
            c = rt.config
            table[name] = {
                "backends": [{"api": api, "weight": w} for api, w in rt.weights.items()],
                "sticky_header": c.sticky_header,
                "shadow": {"api": c.shadow.api, "percent": c.shadow.percent} if c.shadow is not None else None,
            }
        return table

    # canary ---------------------------------------------------------------------------------------------
    def update(self, now_s: float, traffic: TrafficHistory) -> bool:
        """One canary tick for every splitter with a canary; True when some weights changed."""
        changed = False
        for name, rt in self.runtimes.items():
            if rt.config.canary is None:
                continue
            counts = self._counts(rt, traffic.splitter(name))
            if rt.resume and rt.canary is not None:
                rt.canary, rt.resume, rt.baseline = replace(rt.canary, step_started_s=now_s), False, None
            if rt.baseline is None or any(counts.get(b, (0, 0, ()))[0] < base[0] for b, base in rt.baseline.items()):
                rt.baseline = counts  # first tick, or the gateway restarted (its counters began again)
            before = rt.weights
            prior = rt.canary or CanaryState()
            decision = decide(rt.config, self._figures(rt, counts), prior, now_s)
            rt.canary = decision.state
            rt.last_reason = decision.reason
            if decision.state.step_started_s != prior.step_started_s:  # a new step (or a held one) starts now
                rt.baseline = counts
            if decision.event is not None:
                self.store.add_event(name, decision.event, decision.state.summary, self.clock(), decision.reason)
                self._save(rt)
            changed = changed or rt.weights != before
        return changed

    def _counts(self, rt: SplitterRuntime, doc: dict[str, Any]) -> dict[str, _Counts]:
        out: dict[str, _Counts] = {}
        for api, figures in (doc.get("backends") or {}).items():
            requests = figures.get("requests", {})
            latency = figures.get("latency", {})
            rt.bounds_s = [float(b) for b in latency.get("bounds_s", rt.bounds_s)]
            total = sum(int(v) for v in requests.values())
            out[api] = (total, int(requests.get("5xx", 0)), tuple(int(c) for c in latency.get("counts", [])))
        return out

    def _figures(self, rt: SplitterRuntime, counts: dict[str, _Counts]) -> CanaryFigures:
        """What each side did since the step began: the counters now minus those at its start."""
        if rt.config.canary is None:
            return CanaryFigures()
        canary = rt.config.canary.api
        base = rt.baseline or {}
        sides: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
        hist: dict[bool, list[int]] = {True: [], False: []}
        for api, (total, errors, buckets) in counts.items():
            b_total, b_errors, b_buckets = base.get(api, (0, 0, ()))
            side = api == canary
            sides[side][0] += total - b_total
            sides[side][1] += errors - b_errors
            diff = [c - (b_buckets[i] if i < len(b_buckets) else 0) for i, c in enumerate(buckets)]
            h = hist[side]
            h.extend([0] * (len(diff) - len(h)))
            for i, d in enumerate(diff):
                h[i] += d

        def p99(side: bool) -> float | None:
            return percentile_from_histogram(rt.bounds_s, hist[side], 0.99) if sides[side][0] > 0 else None

        return CanaryFigures(sides[True][0], sides[True][1], p99(True), sides[False][0], sides[False][1], p99(False))

    # views ----------------------------------------------------------------------------------------------
    def describe(self, name: str, traffic: TrafficHistory, gateway_url: str) -> dict[str, Any]:
        rt = self.runtimes.get(name)
        if rt is None:
            raise NotFoundError(f"no API or splitter named {name!r} is deployed", details={"name": name})
        c = rt.config
        figures = traffic.splitter_summary(name)
        weights = rt.weights
        total_weight = sum(weights.values()) or 1.0
        empty = {"requests": 0, "error_rate_pct": 0.0, "p50_ms": None, "p99_ms": None}
        out: dict[str, Any] = {
            "name": name,
            "kind": "splitter",
            "endpoint": f"{gateway_url}/{name}",
            "backends": [
                {
                    "api": b.api,
                    "weight": b.weight,
                    "percent": round(100.0 * weights.get(b.api, 0.0) / total_weight, 3),
                    **{k: v for k, v in figures["backends"].get(b.api, empty).items() if k != "by_class"},
                }
                for b in c.backends
            ],
            "sticky_header": c.sticky_header,
            "shadow": None,
            "canary": None,
            "created": rt.created_s,
            "last_update": rt.updated_s,
        }
        if c.shadow is not None:
            shadow = figures["shadow"].get(c.shadow.api, empty)
            out["shadow"] = {
                "api": c.shadow.api,
                "percent": c.shadow.percent,
                "dropped": figures["shadow_dropped"],
                **{k: v for k, v in shadow.items() if k != "by_class"},
            }
        if c.canary is not None:
            state = rt.canary or CanaryState()
            out["canary"] = {
                "api": c.canary.api,
                "phase": state.phase if state.step >= 0 else "pending",
                "step": state.step,
                "percent": _canary_percent(c, state) if state.step >= 0 else 0.0,
                "steps": list(c.canary.steps),
                "summary": state.summary,
            }
        return out

    def list(self, traffic: TrafficHistory, gateway_url: str) -> list[dict[str, Any]]:
        return [self.describe(name, traffic, gateway_url) for name in sorted(self.runtimes)]


def _describe_weights(weights: dict[str, float]) -> str:
    total = sum(weights.values()) or 1.0
    return ", ".join(f"{api} {100.0 * w / total:.4g}%" for api, w in weights.items())
