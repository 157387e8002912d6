"""Rendering for the CLI: aligned tables, ages, JSON."""

from __future__ import annotations

import time
from typing import Any

import click
import orjson


def print_json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def age(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    secs = max(0, int((now if now is not None else time.time()) - ts))
    if secs < 60:
        return f"{secs}s ago"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s ago"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m ago"
    return f"{secs // 86400}d ago"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}ms" if value < 10 else f"{value:.0f}ms"


def dollars(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if value < 10 else f"${value:,.2f}"


def cluster_cost_line(cost: dict[str, Any]) -> str:
    """The cluster's $/h with the idle share apart (under `thrifty get` on a cluster)."""
    return (
        f"cluster: {dollars(cost['per_hour'])}/h, of which idle (reserved by no replica) "
        f"{dollars(cost['idle_per_hour'])}/h; spot saves {dollars(cost['spot_savings_per_hour'])}/h"
    )


def api_rows(apis: list[dict[str, Any]]) -> str:
    headers = ["API", "STATUS", "REPLICAS", "IN-FLIGHT", "REQ/S", "P50", "P99", "2XX", "4XX", "5XX", "LAST UPDATE"]
    priced = any("cost" in a for a in apis)
    if priced:
        headers += ["$/H", "$/1M REQ"]
    rows = []
    for a in apis:
        reps = a["replicas"]
        req = a["requests"]
        rows.append(
            [
                a["name"],
                a["status"],
                f"{reps['ready']}/{reps['requested']}",
                str(a["in_flight"]),
                f"{a['requests_per_s']:g}",
                ms(a["p50_ms"]),
                ms(a["p99_ms"]),
                str(req["2xx"]),
                str(req["4xx"]),
                str(req["5xx"]),
                age(a["last_update"]),
            ]
        )
        if priced:
            cost = a.get("cost") or {}
            rows[-1] += [dollars(cost.get("per_hour")), dollars(cost.get("per_million_requests"))]
    return table(headers, rows)


def model_table(models: list[dict[str, Any]]) -> str:
    """A multi-model API's models: versions, versions in memory, and which replicas hold which version."""

    def versions(vs: list[int]) -> str:
        return ",".join(str(v) for v in vs) or "-"

    rows = [
        [
            m["name"],
            versions(m["versions"]),
            versions(m["versions_held"]),
            " ".join(f"{r}({versions(vs)})" for r, vs in m["replicas"].items()) or "-",
            str(m["hits"]),
            str(m["misses"]),
            str(m["loads"]),
            str(m["evictions"]),
        ]
        for m in models
    ]
    return table(["MODEL", "VERSIONS", "IN MEMORY", "REPLICAS", "HITS", "MISSES", "LOADS", "EVICTIONS"], rows)


def api_detail(a: dict[str, Any]) -> str:
    out = [api_rows([a]), "", f"endpoint: {a['endpoint']}", f"revision: {a['revision']}"]
    cost = a.get("cost")
    if cost:
        window = f"{cost['window_s'] / 60:.0f} min" if cost["window_s"] >= 60 else f"{cost['window_s']:.0f}s"
        out.append(
            f"cost: {dollars(cost['per_hour'])}/h; {dollars(cost['spent'])} for {cost['requests']} requests over "
            f"the last {window} ({dollars(cost['per_million_requests'])} per million)"
        )
    waiting = a.get("cluster") or {}
    if waiting.get("replicas"):
        out.append(f"waiting for a node: {waiting['replicas']} replicas ({'; '.join(waiting['reasons']) or '-'})")
    scaling = a.get("autoscaling")
    if scaling:
        out.append(f"autoscaling: {scaling.get('summary', '-')}")
    err = a.get("error")
    if err:
        out += ["", f"error: {err.get('message')}"]
        if err.get("log"):
            out.append(f"  log: {err['log']}")
    reps = a.get("replica_list", [])
    if reps:
        rows = [
            [r["id"], r["state"], r["revision"], str(r["port"] or "-"), str(r["pid"] or "-"), str(r["in_flight"]),
             age(r["started"])]
            for r in reps
        ]  # fmt: skip
        out += ["", table(["REPLICA", "STATE", "REVISION", "PORT", "PID", "IN-FLIGHT", "STARTED"], rows)]
    models = a.get("models")
    if models is not None:
        out += ["", model_table(models) if models else "models: none loaded yet"]
    events = a.get("events", [])
    if events:
        out += ["", "recent events:"]
        out += [f"  {age(e['ts'])}  {e['kind']}: {e['message']}" for e in events]
    return "\n".join(out)


def pct(value: float) -> str:
    return f"{value:.3g}%"


def splitter_rows(splitters: list[dict[str, Any]]) -> str:
    """One row per backend (and shadow) of each splitter: weight, share in force, requests, errors, latency."""
    headers = ["SPLITTER", "BACKEND", "WEIGHT", "SHARE", "REQUESTS", "ERRORS", "P50", "P99"]
    rows = []
    for s in splitters:
        for i, b in enumerate(s["backends"]):
            rows.append(
                [
                    s["name"] if i == 0 else "",
                    b["api"],
                    f"{b['weight']:g}",
                    pct(b["percent"]),
                    str(b["requests"]),
                    pct(b["error_rate_pct"]),
                    ms(b["p50_ms"]),
                    ms(b["p99_ms"]),
                ]
            )
        shadow = s.get("shadow")
        if shadow:
            rows.append(
                [
                    "",
                    f"{shadow['api']} (shadow, {shadow['dropped']} dropped)",
                    "-",
                    pct(shadow["percent"]),
                    str(shadow["requests"]),
                    pct(shadow["error_rate_pct"]),
                    ms(shadow["p50_ms"]),
                    ms(shadow["p99_ms"]),
                ]
            )
    return table(headers, rows)


def splitter_detail(s: dict[str, Any]) -> str:
    out = [splitter_rows([s]), "", f"endpoint: {s['endpoint']}"]
    if s.get("sticky_header"):
        out.append(f"sticky by header: {s['sticky_header']}")
    canary = s.get("canary")
    if canary:
        steps = ", ".join(f"{x:g}" for x in canary["steps"])
        out.append(f"canary: {canary['api']} {canary['phase']} at {canary['percent']:g}% (steps {steps})")
        if canary.get("summary"):
            out.append(f"  {canary['summary']}")
    events = s.get("events", [])
    if events:
        out += ["", "recent events:"]
        out += [f"  {age(e['ts'])}  {e['kind']}: {e['message']}" for e in events]
    return "\n".join(out)
