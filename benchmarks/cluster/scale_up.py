"""Time from "replicas cannot be placed" to a ready replica on a new simulated node, in three parts.

The operator's own code (``Operator`` with its cluster steps, ``RayEngine``, ``SimulatedCloud`` on a real
local Ray head; a fake gateway, since no request is sent) on the real clock. Each round deploys one API
at ``gpu: 0.5`` on an empty cluster, so its replica cannot be placed, and measures:

- **decision**: from the deploy to the launch request (reconcile wake-up, placement finding no node,
  provisioning choosing the pool), and the CPU time of the provisioning step itself;
- **launch**: from the launch request until the node joined Ray (the configured ``launch_delay``, then
  ``ray start`` of a worker node and its registration);
- **replica start**: from the node joining until the replica answers ready (actor scheduled on the node,
  replica process started, predictor loaded).

Then the API is deleted and the idle node released before the next round.

    .venv/bin/python benchmarks/cluster/scale_up.py [--rounds 3] [--launch-delay 0] [--json-out F]

Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from thrifty.config.cluster import ClusterConfig
from thrifty.control.cluster_setup import build
from thrifty.control.fake_gateway import FakeGateway
from thrifty.control.home import Home
from thrifty.control.nodes import NODE_EVENT_KINDS
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.project_archive import pack

PREDICTOR = (
    "class Predictor:\n    def __init__(self, config):\n        pass\n\n    def predict(self, p):\n        return 1\n"
)
API = "apis:\n  - name: bench\n    compute: {cpu: 0.5, gpu: 0.5}\n"


async def wait_for(check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        await asyncio.sleep(0.01)


async def run(rounds: int, launch_delay_s: float) -> list[dict[str, float]]:
    root = Path(tempfile.mkdtemp(prefix="thr-su-"))
    home = Home(root)
    home.ensure()
    store = Store(home.db_path)
    config = ClusterConfig.model_validate({
        "engine": "ray", "provider": "simulated", "launch_delay": launch_delay_s, "node_idle_timeout": 0.5,
        "node_pools": [
            {"name": "cpu", "instance_type": "m5.large", "spot": True},
            {"name": "gpu", "instance_type": "g4dn.xlarge", "cpu": 2, "spot": True},
        ],
    })  # fmt: skip
    setup = await build(config, root, store, time.time)
    cluster = setup.cluster
    step = cluster.provisioning
    decide_cpu: list[float] = []
    original = step.update

    def timed(now: float, nodes: Any, replicas: Any) -> Any:
        t = time.process_time()
        out = original(now, nodes, replicas)
        if any(r.node_id is None for r in replicas):
            decide_cpu.append(time.process_time() - t)
        return out

    step.update = timed  # type: ignore[method-assign]
    op = Operator(home, store, setup.engine, FakeGateway(), tick_s=0.05, cluster=cluster, placing=setup.placing)
    await op.start()
    project = root / "project"
    project.mkdir()
    (project / "thrifty.yaml").write_text(API)
    (project / "predictor.py").write_text(PREDICTOR)
    results = []
    try:
        for _ in range(rounds):
            decide_cpu.clear()
            last_event = max((e.id for e in store.events(None, limit=1)), default=0)
            t0 = time.time()
            await op.deploy(pack(project))
            try:
                await wait_for(lambda: any(o.state == "ready" for o in op.observed), 120)
            except TimeoutError:  # say why (a replica that cannot start, a node that cannot join)
                for e in store.events(None, limit=20):
                    print(e.api, e.kind, e.message)
                raise
            t_ready = time.time()
            evs = [e for e in store.cluster_events(NODE_EVENT_KINDS, 20) if e.id > last_event]
            t_launch = next(e.ts_s for e in evs if e.kind == "node_launch")
            t_joined = next(e.ts_s for e in evs if e.kind == "node_ready")
            results.append({
                "decision_s": t_launch - t0,
                "decision_cpu_ms": 1000 * (decide_cpu[0] if decide_cpu else 0.0),
                "launch_s": t_joined - t_launch,
                "replica_start_s": t_ready - t_joined,
                "total_s": t_ready - t0,
            })  # fmt: skip
            await op.delete("bench")
            await wait_for(lambda: not cluster.nodes.nodes, 60)
    finally:
        await op.stop()
        await setup.close()
        store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--launch-delay", type=float, default=0.0, help="the simulated boot time, seconds")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.launch_delay))
    keys = ["decision_s", "decision_cpu_ms", "launch_s", "replica_start_s", "total_s"]
    print(f"{'round':>5}  " + "  ".join(f"{k:>15}" for k in keys))
    for i, r in enumerate(results, 1):
        print(f"{i:>5}  " + "  ".join(f"{r[k]:>15.3f}" for k in keys))
    print(f"{'median':>5}  " + "  ".join(f"{statistics.median(r[k] for r in results):>15.3f}" for k in keys))
    print(f"(launch includes the configured launch_delay of {args.launch_delay:g}s)")
    if args.json_out:
        args.json_out.write_text(json.dumps({"launch_delay_s": args.launch_delay, "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
