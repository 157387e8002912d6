"""The report of a simulation: per strategy, the bill, the service and where the money went.

``summarize`` turns a run into plain JSON-able figures; ``write_rows`` writes ``report.md`` (a markdown
table), ``report.json`` and, when matplotlib is installed (the ``sim`` extra), ``timeline.png`` (replicas and
nodes against load) and ``cost_slo.png`` (cost against SLO attainment per strategy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from thrifty.config.scenario import ScenarioConfig
from thrifty.policy.costs import per_million_requests
from thrifty.sim.run import RunResult


def summarize(scenario: ScenarioConfig, run: RunResult) -> dict[str, Any]:
    arrived = sum(a.stats.arrived for a in run.apis)
    served = sum(a.stats.served for a in run.apis)
    lat = np.concatenate([np.frombuffer(a.stats.latencies_s, dtype=np.float64) for a in run.apis])
    under = int(np.count_nonzero(lat <= scenario.slo.latency)) if lat.size else 0
    attainment = 100.0 * under / arrived if arrived else 100.0
    dollars = sum(run.dollars.values())
    hits = sum(a.stats.hits for a in run.apis)
    misses = sum(a.stats.misses for a in run.apis)
    gpu_busy = sum(a.stats.busy_s * a.gpu for a in run.apis)
    pct = {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99, 99.9)} if lat.size else {}
    return {
        "strategy": run.strategy,
        "knob": run.knob,
        "duration_s": run.duration_s,
        "requests": arrived,
        "served": served,
        "rejected_503": sum(a.stats.rejected for a in run.apis),
        "timed_out": sum(a.stats.timed_out for a in run.apis),
        "lost": sum(a.stats.lost for a in run.apis),
        "retried": sum(a.stats.retried for a in run.apis),
        "total_dollars": dollars,
        "dollars_per_hour": dollars / (run.duration_s / 3600.0),
        "dollars_per_million_requests": per_million_requests(dollars, arrived),
        "slo": {"latency_s": scenario.slo.latency, "target_percent": scenario.slo.share},
        "slo_attainment_percent": attainment,
        "slo_met": attainment >= scenario.slo.share,
        "latency_s": pct,
        "replica_hours": {k: v / 3600.0 for k, v in run.replica_seconds.items()},
        "node_hours": {k: v / 3600.0 for k, v in run.node_seconds.items()},
        "dollars_by_pool": dict(run.dollars),
        "gpu_utilization": gpu_busy / run.gpu_seconds if run.gpu_seconds else None,
        "cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "spot_interruptions": run.interruptions,
    }


def markdown(scenario: ScenarioConfig, rows: list[dict[str, Any]]) -> str:
    head = (f"# {scenario.name}\n\n{scenario.description}\n\nSLO: {scenario.slo.share:g}% of requests within "
            f"{scenario.slo.latency * 1000:g} ms (failures count as missed).\n\n")  # fmt: skip
    cols = "| strategy | knob | $ total | $/h | $ per 1M req | SLO attained | met | 503 | timed out | retried | " \
           "replica-h | node-h by pool | GPU util | cache hits |"  # fmt: skip
    lines = [cols, "|" + "---|" * (cols.count("|") - 1)]
    for r in rows:
        per_m = r["dollars_per_million_requests"]
        pools = ", ".join(f"{k} {v:.1f}" for k, v in r["node_hours"].items() if v)
        gpu = "-" if r["gpu_utilization"] is None else f"{100 * r['gpu_utilization']:.1f}%"
        hit = "-" if r["cache_hit_ratio"] is None else f"{100 * r['cache_hit_ratio']:.1f}%"
        lines.append(
            f"| {r['strategy']} | {r['knob'] or '-'} | {r['total_dollars']:.2f} | {r['dollars_per_hour']:.3f} | "
            f"{'-' if per_m is None else f'{per_m:.2f}'} | {r['slo_attainment_percent']:.3f}% | "
            f"{'yes' if r['slo_met'] else 'NO'} | {r['rejected_503']} | {r['timed_out']} | {r['retried']} | "
            f"{sum(r['replica_hours'].values()):.1f} | {pools or '-'} | {gpu} | {hit} |"
        )
    return head + "\n".join(lines) + "\n"


def targets(
    scenario: ScenarioConfig, rows: list[dict[str, Any]], sweeps: dict[str, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """The issue's targets, checked on this run (printed, never asserted): thrifty <= 5% of naive with >= 99.9%
    within the SLO and no request lost to a preemption (gpu-1000-models), and thrifty cheaper than cortex at
    equal or better SLO attainment (every scenario). For the latter, any setting of thrifty's swept knob
    counts: where neither meets the SLO, the strategies' reported rows are their best attainment, and
    "equal or better" is judged against cortex's row with thrifty's cheapest setting that reaches it."""
    by = {r["strategy"]: r for r in rows}
    out: list[dict[str, Any]] = []
    t, naive, cortex = by.get("thrifty"), by.get("naive"), by.get("cortex")
    if t is not None and naive is not None and scenario.name == "gpu-1000-models":
        share = 100 * t["total_dollars"] / naive["total_dollars"] if naive["total_dollars"] else None
        ok = share is not None and share <= 5 and t["slo_attainment_percent"] >= 99.9 and t["lost"] == 0
        out.append({"target": "thrifty <= 5% of naive, >= 99.9% within SLO, no request lost to a preemption",
                    "met": ok, "figures": f"{share:.2f}% of naive; {t['slo_attainment_percent']:.3f}% within SLO; "
                    f"{t['lost']} lost" if share is not None else "naive cost nothing"})  # fmt: skip
    if t is not None and cortex is not None:
        floor = cortex["slo_attainment_percent"]
        settings = [t, *(sweeps or {}).get("thrifty", [])]
        good = [c for c in settings if c["slo_attainment_percent"] >= floor]
        if good:
            t = min(good, key=lambda c: c["total_dollars"])
        ok = t["total_dollars"] < cortex["total_dollars"] and t["slo_attainment_percent"] >= floor
        out.append({"target": "thrifty cheaper than cortex at equal or better SLO attainment", "met": ok,
                    "figures": f"${t['total_dollars']:.2f} vs ${cortex['total_dollars']:.2f}; "
                    f"{t['slo_attainment_percent']:.3f}% vs {cortex['slo_attainment_percent']:.3f}%"})  # fmt: skip
    return out


def write_rows(scenario: ScenarioConfig, rows: list[dict[str, Any]], timelines: dict[str, list[dict[str, Any]]],
               out: Path, sweeps: dict[str, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The report from runs already summarized (``summarize``) with their timelines, by strategy."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(scenario, rows)
    if sweeps:
        text += "\nEqual service: each strategy's knob swept, the cheapest setting that meets the SLO kept " \
                "(the best attainment where none does):\n\n| strategy | knob | $ total | SLO attained | met |\n" \
                "|---|---|---|---|---|\n"  # fmt: skip
        for name, tried in sweeps.items():
            for s in tried:
                text += (f"| {name} | {s['knob']} = {s['label']} | {s['total_dollars']:.2f} | "
                         f"{s['slo_attainment_percent']:.3f}% | {'yes' if s['slo_met'] else 'NO'} |\n")  # fmt: skip
    checks = targets(scenario, rows, sweeps)
    if checks:
        text += "\nTargets:\n\n" + "".join(
            f"- {'met' if c['met'] else 'MISSED'}: {c['target']} ({c['figures']})\n" for c in checks
        )
    (out / "report.md").write_text(text, encoding="utf-8")
    data = {"scenario": scenario.name, "strategies": rows, "sweeps": sweeps or {}, "targets": checks,
            "timelines": timelines}  # fmt: skip
    (out / "report.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    _plots(rows, timelines, out)
    return rows


def _plots(rows: list[dict[str, Any]], timelines: dict[str, list[dict[str, Any]]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the sim extra is optional: the markdown and JSON report stand alone
        return
    fig, ax = plt.subplots(figsize=(10, 4))
    ax2 = ax.twinx()
    for strategy, timeline in timelines.items():
        t = [p["t_s"] / 3600.0 for p in timeline]
        ax.plot(t, [p["replicas"] for p in timeline], label=f"{strategy} replicas")
        ax.plot(t, [sum(p["nodes"].values()) for p in timeline], "--", label=f"{strategy} nodes")
    if timelines:
        first = next(iter(timelines.values()))
        ax2.plot([p["t_s"] / 3600.0 for p in first], [p["rate"] for p in first],
                 color="grey", alpha=0.4, label="requests/s")  # fmt: skip
    ax.set_xlabel("hours")
    ax.set_ylabel("replicas / nodes")
    ax2.set_ylabel("requests/s")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        ax.scatter(row["slo_attainment_percent"], row["dollars_per_hour"])
        ax.annotate(row["strategy"], (row["slo_attainment_percent"], row["dollars_per_hour"]))
    ax.set_xlabel("SLO attainment (%)")
    ax.set_ylabel("$ per hour")
    fig.tight_layout()
    fig.savefig(out / "cost_slo.png", dpi=100)
    plt.close(fig)
