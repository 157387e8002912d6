"""How long placement and provisioning take to decide for 1,000 replicas over 200 nodes (target < 100 ms each).

    .venv/bin/python benchmarks/cluster/policy_speed.py [--replicas 1000] [--nodes 200] [--repeat 7]

The cluster: 200 nodes from the built-in catalog (m5.xlarge, c5.2xlarge, r5.xlarge, g4dn.xlarge,
g4dn.12xlarge, spot and on-demand), 100 APIs with a mix of requests (CPU-only, 0.25 / 0.5 GPU with and
without GPU memory, whole GPUs). Cases:
- placement, empty cluster: all replicas pending, placed in one call;
- placement, busy cluster: 80% already placed, the other 20% pending;
- provisioning, scale-up: the cluster is full and 1,000 replicas wait for new nodes (the greedy cover buys
  them from five pools);
- provisioning, steady: the cluster is partly used, nothing pending; idle and consolidation checks run.
Prints the median and the worst wall time of ``repeat`` runs and the median CPU time, in ms; deterministic
input (seeded).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from thrifty.catalog import lookup
from thrifty.policy.cluster_types import ClusterReplica, NodePool, NodeSpec, NodeView, ReplicaRequest
from thrifty.policy.placement import place
from thrifty.policy.provisioning import ProvisioningConfig, ProvisioningState, decide

GI = 2**30
TYPES = ("m5.xlarge", "c5.2xlarge", "r5.xlarge", "g4dn.xlarge", "g4dn.12xlarge")


def pools() -> tuple[NodePool, ...]:
    out = []
    for t in TYPES:
        it = lookup(t)
        assert it is not None
        for spot in (True, False):
            spec = NodeSpec(pool=f"{t.replace('.', '-')}{'-spot' if spot else ''}", instance_type=t, cpu=it.vcpu,
                            mem_bytes=it.mem_bytes, gpus=it.gpus, gpu_mem_bytes=it.gpu_mem_bytes,
                            price_per_hour=it.price_spot if spot else it.price_on_demand, spot=spot,
                            price_on_demand_per_hour=it.price_on_demand)  # fmt: skip
            out.append(NodePool(spec=spec, min_nodes=0, max_nodes=1000, priority=0 if spot else 1))
    return tuple(out)


def api_requests(rng: random.Random, n_apis: int) -> list[ReplicaRequest]:
    shapes = [
        ReplicaRequest(cpu=0.5, mem_bytes=GI),
        ReplicaRequest(cpu=1, mem_bytes=2 * GI),
        ReplicaRequest(cpu=2, mem_bytes=4 * GI),
        ReplicaRequest(cpu=1, mem_bytes=2 * GI, gpu=0.25),
        ReplicaRequest(cpu=1, mem_bytes=4 * GI, gpu=0.5, gpu_mem_bytes=6 * GI),
        ReplicaRequest(cpu=2, mem_bytes=8 * GI, gpu=1),
        ReplicaRequest(cpu=0.5, mem_bytes=GI, spot="never"),
    ]
    return [rng.choice(shapes) for _ in range(n_apis)]


def scenario(
    n_replicas: int, n_nodes: int, placed_share: float, seed: int = 7
) -> tuple[list[NodeView], list[ClusterReplica]]:
    rng = random.Random(seed)
    ps = pools()
    nodes = [NodeView(id=f"node-{i:04}", spec=ps[i % len(ps)].spec, state="ready", since_s=0.0) for i in range(n_nodes)]
    reqs = api_requests(rng, 100)
    replicas = [
        ClusterReplica(id=f"r-{i:05}", api=f"api-{i % 100:03}", request=reqs[i % 100]) for i in range(n_replicas)
    ]
    if placed_share > 0:
        n_placed = int(n_replicas * placed_share)
        d = place(nodes, replicas[:n_placed])
        where = {a.replica_id: a for a in d.assignments}
        replicas = [
            ClusterReplica(r.id, r.api, r.request, where[r.id].node_id, where[r.id].gpu_indices) if r.id in where else r
            for r in replicas[:n_placed]
        ] + replicas[n_placed:]
        replicas = [r for r in replicas if r.node_id is not None or replicas.index(r) >= n_placed]
    return nodes, replicas


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(median wall ms, worst wall ms, median CPU ms): CPU time is the figure to trust on a shared machine."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), max(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    cfg = ProvisioningConfig(pools=pools())
    rows = []

    nodes, reps = scenario(a.replicas, a.nodes, 0.0)
    d = place(nodes, reps)
    rows.append(("placement, empty cluster", f"{len(d.assignments)} placed, {len(d.unplaced)} not",
                 timed(lambda: place(nodes, reps), a.repeat)))  # fmt: skip

    nodes, reps = scenario(a.replicas, a.nodes, 0.8)
    d = place(nodes, reps)
    pending = sum(1 for r in reps if r.node_id is None)
    rows.append((f"placement, busy cluster ({pending} pending)", f"{len(d.assignments)} placed",
                 timed(lambda: place(nodes, reps), a.repeat)))  # fmt: skip

    full = [
        ClusterReplica(f"f-{i}", "filler", ReplicaRequest(cpu=n.spec.cpu, mem_bytes=0), n.id)
        for i, n in enumerate(nodes)
    ]
    _, waiting = scenario(a.replicas, 0, 0.0)
    everything = full + waiting
    pd = decide(cfg, nodes, everything, ProvisioningState(), 0.0)
    bought = sum(x.count for x in pd.launch)
    rows.append((f"provisioning, scale-up ({len(waiting)} pending)", f"buys {bought} nodes, {len(pd.unfit)} unfit",
                 timed(lambda: decide(cfg, nodes, everything, ProvisioningState(), 0.0), a.repeat)))  # fmt: skip

    nodes, reps = scenario(a.replicas, a.nodes, 0.5)
    placed = [r for r in reps if r.node_id is not None]
    under = ProvisioningState(underused_since={n.id: 0.0 for n in nodes})
    pd = decide(cfg, nodes, placed, under, 1000.0)
    rows.append((f"provisioning, steady ({len(placed)} placed)", pd.reason["summary"][:40],
                 timed(lambda: decide(cfg, nodes, placed, under, 1000.0), a.repeat)))  # fmt: skip

    print(f"{a.replicas} replicas, {a.nodes} nodes, {len(cfg.pools)} pools; {a.repeat} runs each (target < 100 ms)")
    print(f"  {'case':42} {'median':>8}    {'worst':>8}    {'CPU':>8}")
    for name, what, (median, worst, cpu) in rows:
        print(f"  {name:42} {median:8.1f} ms {worst:8.1f} ms {cpu:8.1f} ms   {what}")


if __name__ == "__main__":
    main()
