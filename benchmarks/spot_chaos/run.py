"""Spot chaos: random spot interruptions per pool under load, with notice handling and without (Cortex).

    .venv/bin/python benchmarks/spot_chaos/run.py [--clients 16] [--duration 300] [--rate 6] [--notice 30]
        [--hard-kill-share 0.3] [--correlation 0.3] [--seed 1] [--scenarios drain,ignore] [--json OUT]

SKELETON: written against the CLI verbs the operator wiring adds (``thrifty up --cluster FILE``,
``thrifty cluster info -o json``, ``thrifty cluster preempt NODE --notice 30s``); see README.md for what is
untested until that lands. For each scenario (``spot.notice_handling: drain``, then ``ignore``) it starts a
platform in a folder of its own with ``cluster.yaml``, deploys ``project/`` (four replicas, ~10 ms per
request, ``spot: prefer``), runs ``--clients`` closed-loop clients (``benchmarks/chaos/run.py``'s
``Clients``) and drives ``thrifty.clouds.preemption.PreemptionProcess`` (seeded: both scenarios see the
same market) against the nodes ``cluster info`` lists, reclaiming them through ``cluster preempt``. It
prints, per scenario: requests sent, failed, retried by the gateway; p50/p99 in steady state and during
each interruption (notice to capacity back); the time to restore capacity; and the $/h spot saves against
the same nodes on demand. Targets: 0 failed with notice and without; p99 during a noticed interruption
within 2x of steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from thrifty.client import Client
from thrifty.clouds.base import CloudNode, NodeNotice
from thrifty.clouds.preemption import ChaosEvent, PoolChaos, Preemption, PreemptionProcess
from thrifty.policy.cluster_types import NodeSpec

HERE = Path(__file__).resolve().parent


def _load_chaos() -> Any:
    """``benchmarks/chaos/run.py`` by path (both files are named run.py): its Clients, Platform and helpers."""
    spec = importlib.util.spec_from_file_location("chaos_run", HERE.parent / "chaos" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chaos_run = _load_chaos()
Clients, Platform = chaos_run.Clients, chaos_run.Platform
free_port, percentile_ms, wait_for = chaos_run.free_port, chaos_run.percentile_ms, chaos_run.wait_for

API = "spot-chaos"
REPLICAS = 4


def retries_total(gateway: str) -> float:
    """The gateway's ``thrifty_retries_total{api="spot-chaos"}`` (benchmarks/chaos reads its own API's)."""
    try:
        text = httpx.get(gateway + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return float("nan")
    pattern = r'^thrifty_retries_total\{api="' + re.escape(API) + r'"\} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


class SpotPlatform(Platform):  # type: ignore[misc,valid-type]
    """``benchmarks/chaos``'s platform, started with a cluster file, plus the cluster verbs."""

    def __init__(self, home: Path, port: int, cluster_file: Path) -> None:
        super().__init__(home, port)
        self.cluster_file = cluster_file

    def up(self) -> None:
        self.cli("up", "--port", str(self.port), "--cluster", str(self.cluster_file))

    def info(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.cli("cluster", "info", "-o", "json").stdout)
        return doc

    def full_capacity(self, gone: frozenset[str] = frozenset()) -> bool:
        """Four replicas ready on live nodes: ``thrifty get``'s ready count alone lags a dead node (its
        replicas read ready until their exit is seen), so only replicas on a node that ``cluster info`` shows
        ``ready`` (not cordoned, terminating or gone) and that was not reclaimed (``gone``) count."""
        with Client(self.home, timeout_s=5) as c:
            doc = c.get(API)
        ready = {r["id"] for r in doc.get("replica_list", []) if r.get("state") == "ready"}
        live = {rid for n in self.info()["nodes"] if n["state"] == "ready" and n["id"] not in gone
                for rid in n["replicas"]}  # fmt: skip
        return len(ready & live) >= REPLICAS


class CliMarket:
    """The ``ChaosTarget`` the process drives: nodes from ``cluster info``, reclaims via ``cluster preempt``."""

    def __init__(self, platform: SpotPlatform) -> None:
        self.platform = platform
        self.preempted: list[tuple[float, str, float]] = []  # (monotonic time, node, notice_s)

    def nodes(self) -> list[CloudNode]:
        out = []
        for n in self.platform.info()["nodes"]:
            spec = NodeSpec(pool=n["pool"], instance_type=n["instance_type"], cpu=float(n["cpu"]["total"]),
                            mem_bytes=int(n["mem_bytes"]["total"]), gpus=int(n["gpu"]["total"]), gpu_mem_bytes=0,
                            price_per_hour=float(n["price_per_hour"]), spot=n["capacity"] == "spot")  # fmt: skip
            state = "running" if n["state"] in ("ready", "cordoned") else "pending"
            if n["state"] in ("terminating", "terminated"):
                state = "terminated"
            out.append(CloudNode(id=n["id"], spec=spec, state=state, launched_s=float(n.get("launched_at", 0.0))))
        return out

    async def preempt(self, node_id: str, notice_s: float) -> NodeNotice:
        now = time.monotonic()
        self.platform.cli("cluster", "preempt", node_id, "--notice", f"{notice_s:g}s")
        self.preempted.append((now, node_id, notice_s))
        return NodeNotice(node_id=node_id, kind="interruption", issued_s=now, deadline_s=now + notice_s)

    def set_capacity(self, pool: str, launches: int | None) -> None:
        # No CLI verb takes a pool's capacity away yet (the provider has set_capacity); outages are off here.
        raise NotImplementedError("capacity outages need a `thrifty cluster capacity` verb")


@dataclass
class Scenario:
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def cluster_file(home: Path, notice_handling: str) -> Path:
    text = (HERE / "cluster.yaml").read_text().replace("notice_handling: drain", f"notice_handling: {notice_handling}")
    path = home / "cluster.yaml"
    path.write_text(text)
    return path


def run_scenario(name: str, args: argparse.Namespace) -> Scenario:
    home = Path(tempfile.mkdtemp(prefix=f"thrifty-spot-{name}-"))
    platform = SpotPlatform(home, free_port(), cluster_file(home, name))
    market = CliMarket(platform)
    scenario = Scenario(name)
    rng = random.Random(args.seed)
    clients = Clients(f"{platform.gateway}/{API}", args.clients)
    try:
        platform.up()
        platform.cli("deploy", str(HERE / "project"))
        wait_for(platform.full_capacity, timeout_s=300)
        clients.start()
        time.sleep(5)
        steady = clients.window(time.monotonic() - 4, time.monotonic())
        retried_before = retries_total(platform.gateway)
        start = time.monotonic()
        chaos = PoolChaos(interruptions_per_node_hour=args.rate, notice_s=args.notice, correlation=args.correlation)
        process = PreemptionProcess({"spot-a": chaos, "spot-b": chaos}, rng, 0.0)
        savings: list[float] = []
        while time.monotonic() - start < args.duration:
            events: list[ChaosEvent] = process.step(time.monotonic() - start, market.nodes())
            for e in events:
                if isinstance(e, Preemption):
                    notice = 0.0 if rng.random() < args.hard_kill_share else e.notice_s
                    asyncio.run(market.preempt(e.node_id, notice))
                    t0 = market.preempted[-1][0]
                    gone = frozenset(n for _, n, _ in market.preempted)
                    back = wait_for(lambda g=gone: platform.full_capacity(g), timeout_s=600)
                    time.sleep(1.0)
                    window = clients.window(t0, time.monotonic())
                    row = {"node": e.node_id, "pool": e.pool, "notice_s": notice, "correlated": e.correlated,
                           "sent": len(window), "failed": sum(1 for s in window if s.status != 200),
                           "p50_ms": percentile_ms(window, 50), "p99_ms": percentile_ms(window, 99),
                           "capacity_back_s": round(back - t0, 2)}  # fmt: skip
                    scenario.rows.append(row)
                    print(f"  [{name}] {e.node_id:12s} notice {notice:4g}s  sent {row['sent']:6d}  failed "
                          f"{row['failed']:4d}  p99 {row['p99_ms']} ms  capacity back {row['capacity_back_s']} s",
                          flush=True)  # fmt: skip
            savings.append(float(platform.info()["cost"]["spot_savings_per_hour"]))
            time.sleep(1.0)
        total = clients.window(start, time.monotonic())
        scenario.summary = {
            "sent": len(total),
            "failed": sum(1 for s in total if s.status != 200),
            "retried": max(0.0, retries_total(platform.gateway) - retried_before),
            "steady_p50_ms": percentile_ms(steady, 50),
            "steady_p99_ms": percentile_ms(steady, 99),
            "interruptions": len(scenario.rows),
            "spot_saves_per_hour": round(sum(savings) / len(savings), 4) if savings else None,
        }
    finally:
        clients.stop()
        platform.cli("down", check=False)
    return scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of random preemptions per scenario")
    ap.add_argument("--rate", type=float, default=6.0, help="interruptions per spot node-hour")
    ap.add_argument("--notice", type=float, default=30.0, help="notice length in seconds")
    ap.add_argument("--hard-kill-share", type=float, default=0.3, help="share of interruptions without notice")
    ap.add_argument("--correlation", type=float, default=0.3, help="chance each other node of the pool goes too")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenarios", default="drain,ignore")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = [run_scenario(name, args) for name in args.scenarios.split(",")]
    print(f"\n{'scenario':10s} {'sent':>8s} {'failed':>7s} {'retried':>8s} {'p50':>7s} {'p99':>7s} "
          f"{'worst p99 in interruption':>26s} {'saves $/h':>10s}")  # fmt: skip
    for s in results:
        worst = max((r["p99_ms"] or 0.0 for r in s.rows), default=None)
        m = s.summary
        print(f"{s.name:10s} {m.get('sent', 0):8d} {m.get('failed', 0):7d} {m.get('retried', 0):8.0f} "
              f"{m.get('steady_p50_ms') or 0:7.1f} {m.get('steady_p99_ms') or 0:7.1f} {worst or 0:26.1f} "
              f"{m.get('spot_saves_per_hour') or 0:10.4f}")  # fmt: skip
    if args.json:
        args.json.write_bytes(orjson.dumps([{"scenario": s.name, **s.summary, "interruptions": s.rows}
                                            for s in results], option=orjson.OPT_INDENT_2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
