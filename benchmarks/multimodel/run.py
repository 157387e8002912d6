"""Multi-model serving on the real local platform: model-aware routing vs plain routing, same traffic.

    .venv/bin/python benchmarks/multimodel/run.py [--rates 100,180] [--warmup 15] [--duration 45] [--json]

For each routing mode, starts a platform of its own (``thrifty up --port 0`` in a temporary THRIFTY_HOME;
plain routing with ``THRIFTY_MODEL_ROUTING=0`` in its environment, which reaches the gateway), deploys one
multi-model API over a generated repository of ``--models`` (200) models with 4 replicas, each holding at
most ``--cache`` (10) models in memory, whose ``load_model`` sleeps ``--load-s`` (0.2 s). Then the same
open-loop traffic for both modes: Poisson arrivals at each of ``--rates`` requests/s, each for a model drawn from a
Zipf(``--alpha`` = 1.0) popularity (seeded, so both modes see the very same sequence). The first
``--warmup`` seconds fill the caches; figures cover the next ``--duration`` seconds:

- hit ratio: requests that found their model in memory / requests that needed a model, from the replicas'
  own counters (``/_thrifty/stats``), against the ideal: the request share of the ``replicas x cache``
  most popular models (what a perfect partition of the memory would hit);
- p50 / p99 latency at the client, from each request's scheduled send time (no coordinated omission);
- model loads per minute, failed requests, and the copies of models held at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from thrifty.dataplane.upstream import UpstreamError, UpstreamPool

HERE = Path(__file__).resolve().parent
THRIFTY = str(Path(sys.executable).parent / "thrifty")
API = "bench"


@dataclass
class Result:
    mode: str
    rate: float
    requests: int = 0
    failed: int = 0
    achieved_rps: float = 0.0
    hit_ratio: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    loads_per_min: float = 0.0
    copies_held: int = 0
    distinct_held: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def zipf_weights(n: int, alpha: float) -> list[float]:
    w = [1.0 / (i + 1) ** alpha for i in range(n)]
    total = sum(w)
    return [x / total for x in w]


def make_repository(root: Path, n: int) -> list[str]:
    names = [f"m{i:03d}" for i in range(n)]
    for name in names:
        folder = root / name / "1"
        folder.mkdir(parents=True)
        (folder / "model.txt").write_text(name)
    return names


def make_project(dest: Path, source: Path, args: argparse.Namespace) -> Path:
    shutil.copytree(HERE / "project", dest, ignore=shutil.ignore_patterns("__pycache__"))
    config = {
        "apis": [
            {
                "name": API,
                "predictor": {"path": "predictor.py", "class": "Bench", "config": {"load_s": args.load_s}},
                "serving": {"max_concurrency": 4, "max_queue_length": 10000, "request_timeout": 60},
                "autoscaling": {"min_replicas": args.replicas, "max_replicas": args.replicas},
                "models": {
                    "source": str(source),
                    "cache_size": args.cache,
                    "disk_cache_size": args.models,  # every model fits on disk: loads cost load_s, not downloads
                    "poll_interval": 60,
                },
            }
        ]
    }
    (dest / "thrifty.yaml").write_text(json.dumps(config))
    return dest


def schedule(args: argparse.Namespace, names: list[str], rate: float) -> list[tuple[float, str]]:
    """(send time from the start, model) for every request: Poisson arrivals, Zipf models, seeded."""
    rng = random.Random(args.seed)
    weights = zipf_weights(len(names), args.alpha)
    out: list[tuple[float, str]] = []
    t = 0.0
    end = args.warmup + args.duration
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append((t, rng.choices(names, weights)[0]))


class Platform:
    def __init__(self, home: Path, model_routing: bool) -> None:
        self.env = {**os.environ, "THRIFTY_HOME": str(home), "THRIFTY_MODEL_ROUTING": "1" if model_routing else "0"}
        self.home = home

    def cli(self, *args: str) -> str:
        proc = subprocess.run([THRIFTY, *args], env=self.env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"thrifty {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def gateway_port(self) -> int:
        return int(orjson.loads((self.home / "operator.json").read_bytes())["gateway_port"])

    def replica_ports(self) -> list[int]:
        detail = orjson.loads(self.cli("get", API, "-o", "json"))
        return [int(r["port"]) for r in detail["replica_list"] if r["state"] == "ready"]


async def replica_counters(pool: UpstreamPool, ports: list[int]) -> dict[str, Any]:
    """Hits, misses and loads summed over the replicas, and the models each holds."""
    totals = {"hits": 0, "misses": 0, "loads": 0}
    held: list[list[str]] = []
    for port in ports:
        head = b"GET /_thrifty/stats HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        stats = orjson.loads((await pool.request("127.0.0.1", port, head, 10.0)).body)
        for s in stats["model_stats"].values():
            totals["hits"] += s["hits"]
            totals["misses"] += s["misses"]
            totals["loads"] += s["load_seconds_count"]
        held.append(stats["models"])
    return {**totals, "held": held}


async def drive(
    args: argparse.Namespace, plan: list[tuple[float, str]], gateway: int, replicas: list[int]
) -> tuple[list[tuple[float, float, int]], dict[str, Any], dict[str, Any]]:
    pool = UpstreamPool()
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, float, int]] = []  # (scheduled time, latency s, status; 0 = no response)
    heads = {
        name: f"POST /{API}/{name} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}".encode() for _, name in plan
    }

    async def one(at: float, head: bytes) -> None:
        try:
            status = (await pool.request("127.0.0.1", gateway, head, 60.0)).status
        except UpstreamError:
            status = 0
        samples.append((at - start, loop.time() - at, status))

    before: dict[str, Any] = {}
    tasks: list[asyncio.Task[None]] = []
    start = loop.time() + 0.5
    for at, name in plan:
        if not before and at >= args.warmup:
            before = await replica_counters(pool, replicas)
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(start + at, heads[name])))
    end_at = start + args.warmup + args.duration
    await asyncio.sleep(max(0.0, end_at - loop.time()))
    after = await replica_counters(pool, replicas)
    await asyncio.gather(*tasks)
    pool.close()
    return samples, before, after


def measure(args: argparse.Namespace, mode: str, rate: float, plan: list[tuple[float, str]], source: Path) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"thrifty-bench-{mode}-") as tmp:
        platform = Platform(Path(tmp) / "home", model_routing=mode == "model-aware")
        project = make_project(Path(tmp) / "project", source, args)
        platform.cli("up", "--port", "0")
        try:
            platform.cli("deploy", str(project))
            deadline = time.monotonic() + 60
            while len(ports := platform.replica_ports()) < args.replicas:
                if time.monotonic() > deadline:
                    raise RuntimeError("replicas did not become ready")
                time.sleep(0.2)
            samples, before, after = asyncio.run(drive(args, plan, platform.gateway_port(), ports))
        finally:
            platform.cli("down")
    window = [s for s in samples if args.warmup <= s[0] < args.warmup + args.duration]
    ok = sorted(s[1] for s in window if s[2] == 200)
    hits = after["hits"] - before["hits"]
    misses = after["misses"] - before["misses"]
    statuses: dict[str, int] = {}
    for s in window:
        statuses[str(s[2])] = statuses.get(str(s[2]), 0) + 1
    quantiles = statistics.quantiles(ok, n=100) if len(ok) >= 2 else [0.0] * 99
    held = [m for replica in after["held"] for m in replica]
    return Result(
        mode=mode,
        rate=rate,
        requests=len(window),
        failed=len(window) - len(ok),
        achieved_rps=len(window) / args.duration,
        hit_ratio=hits / max(1, hits + misses),
        p50_ms=1000 * quantiles[49],
        p99_ms=1000 * quantiles[98],
        loads_per_min=(after["loads"] - before["loads"]) * 60 / args.duration,
        copies_held=len(held),
        distinct_held=len(set(held)),
        statuses=statuses,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent of model popularity")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--cache", type=int, default=10, help="models in memory per replica")
    ap.add_argument("--load-s", type=float, default=0.2, help="seconds load_model takes")
    ap.add_argument("--rates", default="100,180", help="requests per second (Poisson), comma-separated")
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--duration", type=float, default=45.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--modes", default="model-aware,plain")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="thrifty-bench-models-") as tmp:
        names = make_repository(Path(tmp), args.models)
        results = []
        for rate in rates:
            plan = schedule(args, names, rate)
            results += [measure(args, mode, rate, plan, Path(tmp)) for mode in args.modes.split(",")]
    ideal = sum(zipf_weights(args.models, args.alpha)[: args.replicas * args.cache])
    if args.json:
        print(json.dumps({"args": vars(args), "ideal_hit_ratio": ideal, "results": [asdict(r) for r in results]}))
        return 0
    print(
        f"{args.models} models, Zipf {args.alpha}, {args.replicas} replicas x {args.cache} models in memory, "
        f"load {args.load_s * 1000:.0f} ms, warm-up {args.warmup:g} s, measured {args.duration:g} s"
    )
    print(f"ideal hit ratio (share of the top {args.replicas * args.cache} models): {ideal:.3f}")
    header = f"{'req/s':>5} {'routing':<12} {'hit ratio':>9} {'of ideal':>8} {'p50 ms':>8} {'p99 ms':>8} "
    print(header + f"{'loads/min':>9} {'sent/s':>6} {'failed':>6} {'held':>9}")
    for r in results:
        print(
            f"{r.rate:>5g} {r.mode:<12} {r.hit_ratio:>9.3f} {r.hit_ratio / ideal:>8.1%} "
            f"{r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
            f"{r.loads_per_min:>9.0f} {r.achieved_rps:>6.1f} {r.failed:>6} {r.distinct_held:>4}/{r.copies_held:<4}"
        )
    for rate in rates:
        by_mode = {r.mode: r for r in results if r.rate == rate}
        if {"model-aware", "plain"} <= set(by_mode):
            aware, plain = by_mode["model-aware"], by_mode["plain"]
            p99_x = plain.p99_ms / max(aware.p99_ms, 1e-9)
            p50_x = plain.p50_ms / max(aware.p50_ms, 1e-9)
            saved = 1 - aware.loads_per_min / max(plain.loads_per_min, 1e-9)
            print(
                f"{rate:g} req/s: p99 plain / model-aware {p99_x:.1f}x (target >= 3x), p50 {p50_x:.0f}x; "
                f"model-aware hit ratio {aware.hit_ratio / ideal:.1%} of ideal (target >= 90%); {saved:.0%} fewer loads"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
