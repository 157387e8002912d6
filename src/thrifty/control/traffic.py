"""Per-API traffic figures (requests/s, latency percentiles, in-flight) from successive gateway snapshots.

The gateway keeps cumulative counters and a latency histogram per API; the operator samples them every
second and keeps a short history, so rates and percentiles come from differences between two snapshots.

A restarted gateway counts from zero again (a new ``boot_id``); ``CounterCarry`` adds, per API, what the
previous gateway processes had counted at their last snapshot, so the figures the operator keeps
(``thrifty get``, the autoscaler's in-flight integral) continue and never step back. What a gateway counted
after its last snapshot before a crash (at most the last second) is lost.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

RATE_WINDOW_S = 10.0
LATENCY_WINDOW_S = 60.0
HISTORY_S = 120.0


def percentile_from_histogram(bounds_s: list[float], counts: list[int], q: float) -> float | None:
    """Estimate a quantile from per-bucket counts (last bucket = +Inf), interpolating inside the bucket."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, count in enumerate(counts):
        upper = bounds_s[i] if i < len(bounds_s) else (bounds_s[-1] if bounds_s else 0.0)
        if count and seen + count >= rank:
            if i >= len(bounds_s):
                return upper
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
        lower = upper
    return bounds_s[-1] if bounds_s else None


@dataclass(frozen=True)
class Sample:
    t_s: float
    apis: dict[str, Any]
    splitters: dict[str, Any] = field(default_factory=dict)  # per splitter, per backend and shadow figures


def _api(sample: Sample, name: str) -> dict[str, Any]:
    api = sample.apis.get(name)
    return api if isinstance(api, dict) else {}


def _total(api: dict[str, Any]) -> int:
    return sum(int(v) for v in api.get("requests", {}).values())


def model_rows(models: Any) -> list[dict[str, Any]]:
    """A multi-model API's models from the gateway's ``models`` document (see ``dataplane.gateway_models``):
    name, known versions, the versions in memory and the replicas holding each, cache counters."""
    rows: list[dict[str, Any]] = []
    if not isinstance(models, dict):
        return rows
    for name, m in sorted(models.items()):
        if not isinstance(m, dict):
            continue
        replicas = m.get("replicas")
        if not isinstance(replicas, dict):
            replicas = {}
        held = sorted({int(v) for vs in replicas.values() if isinstance(vs, list) for v in vs if isinstance(v, int)})
        rows.append(
            {
                "name": str(name),
                "versions": [v for v in m.get("versions", []) if isinstance(v, int)],
                "versions_held": held,
                "replicas": {str(r): sorted(vs) for r, vs in sorted(replicas.items()) if isinstance(vs, list)},
                **{k: int(m.get(k, 0) or 0) for k in ("hits", "misses", "loads", "evictions")},
            }
        )
    return rows


# The cumulative fields of one API's gateway counters (see ``dataplane.gateway_stats.ApiStats.to_json``).
_SCALARS = ("in_flight_seconds", "retries")
_LATENCY_SCALARS = ("sum_s", "count")


def _add_counters(base: dict[str, Any], api: dict[str, Any]) -> dict[str, Any]:
    """``api``'s cumulative counters plus ``base``'s (same shape); other fields from ``api``."""
    out = dict(api)
    for k in _SCALARS:
        if k in base or k in api:
            out[k] = base.get(k, 0) + api.get(k, 0)
    requests = {**base.get("requests", {})}
    for k, v in api.get("requests", {}).items():
        requests[k] = requests.get(k, 0) + v
    out["requests"] = requests
    b_lat, a_lat = base.get("latency", {}), api.get("latency", {})
    if b_lat or a_lat:
        lat = dict(a_lat) if a_lat else {"bounds_s": b_lat.get("bounds_s", [])}
        for k in _LATENCY_SCALARS:
            lat[k] = b_lat.get(k, 0) + a_lat.get(k, 0)
        b_counts, a_counts = list(b_lat.get("counts", [])), list(a_lat.get("counts", []))
        n = max(len(b_counts), len(a_counts))
        lat["counts"] = [
            (b_counts[i] if i < len(b_counts) else 0) + (a_counts[i] if i < len(a_counts) else 0) for i in range(n)
        ]
        out["latency"] = lat
    return out


class CounterCarry:
    """Keeps the gateway's cumulative counters cumulative across gateway restarts.

    Feed it every snapshot (``carry``): when the ``boot_id`` changes, each API's counters from the previous
    gateway's last snapshot become that API's offset, added to every later snapshot. An API missing from a
    snapshot was deleted: its offset goes (an API created again under that name starts from zero, as it
    does in the gateway). A snapshot without a ``boot_id`` (a fake gateway) passes through unchanged."""

    def __init__(self) -> None:
        self._boot_id: str | None = None
        self._last: dict[str, dict[str, Any]] = {}  # per API, the latest snapshot's counters, offset included
        self._offsets: dict[str, dict[str, Any]] = {}

    def carry(self, stats: dict[str, Any]) -> dict[str, Any]:
        boot_id = stats.get("boot_id")
        apis = stats.get("apis")
        if not isinstance(boot_id, str) or not isinstance(apis, dict):
            return stats
        if boot_id != self._boot_id:
            if self._boot_id is not None:
                self._offsets = dict(self._last)  # already includes the earlier restarts' offsets
            self._boot_id = boot_id
        out: dict[str, Any] = {}
        for name, api in apis.items():
            if not isinstance(api, dict):
                continue
            offset = self._offsets.get(name)
            out[name] = _add_counters(offset, api) if offset is not None else api
        self._offsets = {name: off for name, off in self._offsets.items() if name in out}
        self._last = out
        return {**stats, "apis": out}


class TrafficHistory:
    def __init__(self) -> None:
        self._samples: deque[Sample] = deque()

    def add(self, t_s: float, stats: dict[str, Any]) -> None:
        apis = stats.get("apis", {})
        splitters = stats.get("splitters", {})
        if self._samples and t_s < self._samples[-1].t_s:
            self._samples.clear()
        self._samples.append(
            Sample(t_s, apis if isinstance(apis, dict) else {}, splitters if isinstance(splitters, dict) else {})
        )
        while self._samples and self._samples[0].t_s < t_s - HISTORY_S:
            self._samples.popleft()

    def reset(self) -> None:
        """The gateway restarted: rates start again from its next snapshots (``CounterCarry`` keeps the
        counters themselves cumulative)."""
        self._samples.clear()

    def models(self, name: str) -> list[dict[str, Any]]:
        """The models of a multi-model API in the latest snapshot (``model_rows``); [] before any."""
        return model_rows(_api(self._samples[-1], name).get("models")) if self._samples else []

    def splitter(self, name: str) -> dict[str, Any]:
        """A splitter's cumulative figures in the latest snapshot (``SplitterStats.to_json``); {} before any."""
        if not self._samples:
            return {}
        doc = self._samples[-1].splitters.get(name)
        return doc if isinstance(doc, dict) else {}

    def splitter_summary(self, name: str) -> dict[str, Any]:
        """Per backend (and per shadow API) of a splitter: requests, error rate (5xx), p50/p99 over the last
        minute (since the gateway started when there was no traffic lately), and the shadow copies dropped."""
        if not self._samples:
            return {"backends": {}, "shadow": {}, "shadow_dropped": 0}
        last = self.splitter(name)
        base_sample = self._baseline(LATENCY_WINDOW_S)
        base = base_sample.splitters.get(name, {}) if base_sample is not None else {}
        out: dict[str, Any] = {"shadow_dropped": int(last.get("shadow_dropped", 0) or 0)}
        for part in ("backends", "shadow"):
            figures: dict[str, Any] = {}
            for api, cur in (last.get(part) or {}).items():
                prev = (base.get(part) or {}).get(api, {}) if isinstance(base, dict) else {}
                figures[api] = _backend_figures(cur, prev)
            out[part] = figures
        return out

    def _baseline(self, window_s: float) -> Sample | None:
        if not self._samples:
            return None
        latest = self._samples[-1].t_s
        for s in self._samples:
            if s.t_s >= latest - window_s:
                return s
        return self._samples[0]

    def summary(self, name: str) -> dict[str, Any]:
        if not self._samples:
            return {
                "in_flight": 0,
                "requests_per_s": 0.0,
                "p50_ms": None,
                "p99_ms": None,
                "requests": {"2xx": 0, "4xx": 0, "5xx": 0},
            }
        last = self._samples[-1]
        cur = _api(last, name)
        rate_base = self._baseline(RATE_WINDOW_S)
        rps = 0.0
        if rate_base is not None and last.t_s > rate_base.t_s:
            rps = max(0, _total(cur) - _total(_api(rate_base, name))) / (last.t_s - rate_base.t_s)
        lat = cur.get("latency", {})
        bounds = [float(b) for b in lat.get("bounds_s", [])]
        counts = [int(c) for c in lat.get("counts", [])]
        lat_base = self._baseline(LATENCY_WINDOW_S)
        base_counts = [int(c) for c in _api(lat_base, name).get("latency", {}).get("counts", [])] if lat_base else []
        window_counts = [c - (base_counts[i] if i < len(base_counts) else 0) for i, c in enumerate(counts)]
        if sum(window_counts) <= 0:
            window_counts = counts  # no traffic lately: show the figures since the gateway started
        p50 = percentile_from_histogram(bounds, window_counts, 0.5)
        p99 = percentile_from_histogram(bounds, window_counts, 0.99)
        requests = cur.get("requests", {})
        return {
            "in_flight": int(cur.get("in_flight", 0)),
            "requests_per_s": round(rps, 2),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
            "requests": {k: int(requests.get(k, 0)) for k in ("2xx", "4xx", "5xx")},
            "replicas": cur.get("replicas", {}),
        }


def _backend_figures(cur: dict[str, Any], prev: dict[str, Any]) -> dict[str, Any]:
    requests = {k: int(cur.get("requests", {}).get(k, 0)) for k in ("2xx", "4xx", "5xx")}
    total = sum(requests.values())
    lat = cur.get("latency", {})
    bounds = [float(b) for b in lat.get("bounds_s", [])]
    counts = [int(c) for c in lat.get("counts", [])]
    before = [int(c) for c in prev.get("latency", {}).get("counts", [])]
    window = [c - (before[i] if i < len(before) else 0) for i, c in enumerate(counts)]
    if sum(window) <= 0 or any(c < 0 for c in window):
        window = counts  # no traffic lately (or the gateway restarted): the figures since it started
    p50 = percentile_from_histogram(bounds, window, 0.5)
    p99 = percentile_from_histogram(bounds, window, 0.99)
    return {
        "requests": total,
        "by_class": requests,
        "error_rate_pct": round(100.0 * requests["5xx"] / total, 3) if total else 0.0,
        "p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }
