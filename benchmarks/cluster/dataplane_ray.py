"""The data plane through the gateway to a replica on a Ray worker node vs the same replica on the local engine.

One run, one gateway, two APIs serving the same echo predictor (``benchmarks/dataplane/echo``):

- ``local``: a replica started by the local engine (``LocalEngine``: a subprocess of this process);
- ``ray``: a replica started by the Ray engine (``RayEngine``) in an actor pinned to a node of a simulated
  pool (``SimulatedCloud``: a Ray worker node on this machine, 2 logical CPUs).

Both are the same ``replica_main`` process with the platform secret; Ray carries no request, so the two
should be within noise: the target is the Ray replica within 10% of the local one (requests/s at 32
connections). Measurements reuse ``benchmarks/dataplane/run.py`` (wrk with ``post.lua``, warm-up, CPU per
request, median of rounds, the table), interleaving the two targets.

    .venv/bin/python benchmarks/cluster/dataplane_ray.py [--duration 10] [--repeat 3] [--json-out F]

Needs wrk (``apt-get install -y wrk``) and the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.platform_secret import ensured_secret_file
from thrifty.engines.base import ReplicaLaunch, ReplicaObservation
from thrifty.engines.local import LocalEngine
from thrifty.policy.cluster_types import NodeSpec

HERE = Path(__file__).resolve().parent
DATAPLANE = HERE.parent / "dataplane"
TARGET_RATIO = 0.90
NODE = NodeSpec(
    pool="cpu", instance_type="m5.large", cpu=2, mem_bytes=2 * 2**30, gpus=0, gpu_mem_bytes=0,
    price_per_hour=0.096, spot=False,
)  # fmt: skip


def dataplane_bench() -> ModuleType:
    """``benchmarks/dataplane/run.py``, imported by path (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("dataplane_run", DATAPLANE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(replica_id: str, api: str, predictor_class: str) -> ReplicaLaunch:
    config = ApiConfig.model_validate(
        {
            "name": api,
            "predictor": {"path": "predictor.py", "class": predictor_class},
            "compute": {"cpu": 1, "mem": "512Mi"},
            "serving": {"max_concurrency": 64, "max_queue_length": 1024, "request_timeout": 10, "max_payload": 2**20},
        }
    ).model_dump(mode="json", by_alias=True)
    return ReplicaLaunch(replica_id, api, "bench", config, str(DATAPLANE / "echo"))


async def ready(observe: Any, replica_id: str, timeout_s: float = 60.0) -> ReplicaObservation:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obs = next((o for o in observe() if o.replica_id == replica_id), None)
        if obs is not None and obs.state == "ready":
            return obs
        if obs is not None and obs.state == "exited":
            raise SystemExit(f"replica {replica_id} exited: {obs.error} (log {obs.log_path})")
        await asyncio.sleep(0.05)
    raise SystemExit(f"replica {replica_id} not ready after {timeout_s:g}s")


def start_gateway(
    bench: ModuleType, tmp: Path, secret_file: Path, replicas: dict[str, ReplicaObservation]
) -> tuple[subprocess.Popen[bytes], int]:
    """The data-plane benchmark's gateway, with the platform secret and a route per replica."""
    routes = {
        api: [{"id": obs.replica_id, "host": obs.host, "port": obs.port, "draining": False}]
        for api, obs in replicas.items()
    }
    proc, port = bench.start_gateway(tmp, 0, tmp / "gateway.log", secret_file=secret_file, routes=routes)
    return proc, int(port)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from thrifty.clouds.simulated import SimulatedCloud
    from thrifty.engines.ray import RayEngine, RayPlacement
    from thrifty.engines.ray_cluster import RayCluster

    bench = dataplane_bench()
    cls = "EchoPredictor" if args.predictor == "async" else "SyncEchoPredictor"
    home = Path(tempfile.mkdtemp(prefix="thrifty-bench-"))
    secret_file = ensured_secret_file(home)
    conns = [int(c) for c in args.connections.split(",")]
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    local = LocalEngine(home, default_grace_s=2.0)
    t0 = time.monotonic()
    cluster = RayCluster.connect(home)  # on the main thread: Ray installs its signal handlers there
    timings["ray_head_s"] = time.monotonic() - t0
    engine = RayEngine(home, default_grace_s=2.0)
    cloud = SimulatedCloud(cluster, home, launch_delay_s=0.0)
    gateway: subprocess.Popen[bytes] | None = None
    print(f"wrk -t1, {args.duration:g}s per run after {args.warmup:g}s warm-up, {args.repeat} round(s); {cls}; {home}")
    try:
        t0 = time.monotonic()
        node = await cloud.wait_running((await cloud.launch(NODE)).id, timeout_s=60)
        timings["node_join_s"] = time.monotonic() - t0
        if node.engine_node_id is None:
            raise SystemExit(f"the simulated node did not join: {node.error}")
        t0 = time.monotonic()
        await local.start_replica(launch("local-1", "echo-local", cls))
        on_local = await ready(local.observe, "local-1")
        timings["local_replica_ready_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        await engine.start_replica(launch("ray-1", "echo-ray", cls), RayPlacement(node.engine_node_id))
        on_ray = await ready(engine.observe, "ray-1")
        timings["ray_replica_ready_s"] = time.monotonic() - t0
        print("startup: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), flush=True)
        gateway, port = start_gateway(bench, home, secret_file, {"echo-local": on_local, "echo-ray": on_ray})
        assert on_local.pid is not None and on_ray.pid is not None
        targets = {
            "local": (f"http://127.0.0.1:{port}/echo-local", {"gateway": gateway.pid, "replica": on_local.pid}),
            "ray": (f"http://127.0.0.1:{port}/echo-ray", {"gateway": gateway.pid, "replica": on_ray.pid}),
        }
        for _ in range(args.repeat):
            for c in conns:
                for target, (url, pids) in targets.items():
                    row = await asyncio.to_thread(bench.measure, url, target, c, args.duration, args.warmup, pids)
                    rows.append(row)
    finally:
        if gateway is not None:
            bench._stop(gateway)
        await local.close(2.0)
        await engine.close(2.0)
        await cloud.close()
        cluster.close()
        shutil.rmtree(home, ignore_errors=True)
    if args.repeat > 1:
        print(f"\nmedian of {args.repeat} rounds:")
        rows = bench.medians(rows)
    bench.report(rows)
    by = {(r["target"], r["connections"]): r for r in rows}
    summary: dict[str, Any] = {"timings_s": timings}
    for c in conns:
        lo, ry = by[("local", c)], by[("ray", c)]
        ratio = ry["rps"] / lo["rps"]
        summary[f"ratio_rps_{c}"] = ratio
        verdict = "MET" if ratio >= TARGET_RATIO else "MISSED"
        print(
            f"ray/local requests/s at {c} connection(s): {ratio:.1%} (target >= {TARGET_RATIO:.0%}: {verdict}); "
            f"p50 {lo['p50_us'] / 1000:.3f} ms local vs {ry['p50_us'] / 1000:.3f} ms ray"
        )
    return {"rows": rows, "summary": summary, "cpus": os.cpu_count()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each measurement")
    p.add_argument("--connections", default="1,32", help="comma-separated connection counts")
    p.add_argument("--predictor", choices=("async", "sync"), default="async", help="echo predict() flavour")
    p.add_argument("--repeat", type=int, default=3, help="rounds; the median round is reported")
    p.add_argument("--json-out", help="also write the rows and the summary as JSON here")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed. Install it with:  apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    result = asyncio.run(run(args))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
