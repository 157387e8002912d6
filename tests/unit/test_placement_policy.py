"""Placement: best-fit packing, fractional GPUs on one physical GPU, GPU memory caps, spreading, reasons."""

from __future__ import annotations

from collections import Counter

import pytest

from thrifty.config.schema import ComputeConfig
from thrifty.policy.cluster_types import ClusterReplica, NodeSpec, NodeState, NodeView, ReplicaRequest, SpotPreference
from thrifty.policy.placement import NodeUsage, Packer, PlacementDecision, how_many_fit, place, request_of, usage

GI = 2**30


def node(
    node_id: str,
    cpu: float = 8,
    mem_gi: int = 32,
    gpus: int = 0,
    gpu_mem_gi: int = 16,
    spot: bool = False,
    pool: str = "pool",
    state: NodeState = "ready",
) -> NodeView:
    spec = NodeSpec(pool=pool, instance_type="custom", cpu=cpu, mem_bytes=mem_gi * GI, gpus=gpus,
                    gpu_mem_bytes=gpu_mem_gi * GI if gpus else 0, price_per_hour=1.0, spot=spot)  # fmt: skip
    return NodeView(id=node_id, spec=spec, state=state, since_s=0.0)


def rep(
    rep_id: str,
    api: str = "a",
    cpu: float = 0.5,
    mem_gi: float = 1,
    gpu: float = 0,
    gpu_mem_gi: float | None = None,
    pools: tuple[str, ...] = (),
    spot: SpotPreference = "prefer",
    on: str | None = None,
    gpus: tuple[int, ...] = (),
) -> ClusterReplica:
    req = ReplicaRequest(cpu=cpu, mem_bytes=int(mem_gi * GI), gpu=gpu,
                         gpu_mem_bytes=None if gpu_mem_gi is None else int(gpu_mem_gi * GI),
                         node_pools=pools, spot=spot)  # fmt: skip
    return ClusterReplica(id=rep_id, api=api, request=req, node_id=on, gpu_indices=gpus)


def where(d: PlacementDecision) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {a.replica_id: (a.node_id, a.gpu_indices) for a in d.assignments}


def gpu_share(d: PlacementDecision) -> Counter[tuple[str, tuple[int, ...]]]:
    return Counter((a.node_id, a.gpu_indices) for a in d.assignments)


# (case, nodes, replicas, number placed, replicas per (node, gpus) expected or None)
GPU_CASES = [
    (
        "four 0.25-GPU replicas share one GPU",
        [node("n1", gpus=2)],
        [rep(f"r{i}", api=f"api{i}", gpu=0.25) for i in range(4)],
        4,
        {("n1", (0,)): 4},
    ),
    (
        "0.5 and 0.75 do not share a GPU",
        [node("n1", gpus=2)],
        [rep("r1", gpu=0.5), rep("r2", api="b", gpu=0.75)],
        2,
        {("n1", (0,)): 1, ("n1", (1,)): 1},
    ),
    (
        "0.5 and 0.75 on a one-GPU node: one cannot be placed",
        [node("n1", gpus=1)],
        [rep("r1", gpu=0.5), rep("r2", api="b", gpu=0.75)],
        1,
        {("n1", (0,)): 1},
    ),
    (
        "a fraction is never split across two GPUs",
        [node("n1", gpus=2)],
        [rep("r1", gpu=0.6), rep("r2", api="b", gpu=0.6), rep("r3", api="c", gpu=0.6)],
        2,
        {("n1", (0,)): 1, ("n1", (1,)): 1},
    ),
    (
        "GPU memory caps a GPU before its fractions do",
        [node("n1", gpus=1, gpu_mem_gi=16)],
        [rep("r1", gpu=0.25, gpu_mem_gi=10), rep("r2", api="b", gpu=0.25, gpu_mem_gi=10)],
        1,
        {("n1", (0,)): 1},
    ),
    (
        "GPU memory larger than any GPU: not placed",
        [node("n1", gpus=1, gpu_mem_gi=16)],
        [rep("r1", gpu=0.5, gpu_mem_gi=20)],
        0,
        {},
    ),
    (
        "default GPU memory is the fraction's share",
        [node("n1", gpus=1, gpu_mem_gi=16)],
        [rep("r1", gpu=0.5), rep("r2", api="b", gpu=0.25), rep("r3", api="c", gpu=0.25, gpu_mem_gi=4)],
        3,
        {("n1", (0,)): 3},
    ),
    (
        "whole GPUs are taken whole",
        [node("n1", gpus=4)],
        [rep("r1", gpu=2), rep("r2", api="b", gpu=0.5), rep("r3", api="c", gpu=1)],
        3,
        {("n1", (0, 1)): 1, ("n1", (2,)): 1, ("n1", (3,)): 1},
    ),
    (
        "a whole GPU is not taken from a shared one",
        [node("n1", gpus=1)],
        [rep("r1", gpu=0.25, on="n1", gpus=(0,)), rep("r2", api="b", gpu=1)],
        0,
        {},
    ),
]


@pytest.mark.parametrize(("case", "nodes", "replicas", "placed", "shares"), GPU_CASES, ids=[c[0] for c in GPU_CASES])
def test_gpu_packing(
    case: str,
    nodes: list[NodeView],
    replicas: list[ClusterReplica],
    placed: int,
    shares: dict[tuple[str, tuple[int, ...]], int],
) -> None:
    d = place(nodes, replicas)
    assert len(d.assignments) == placed, d.unplaced
    assert dict(gpu_share(d)) == shares
    pending = [r for r in replicas if r.node_id is None]
    assert len(d.unplaced) == len(pending) - placed
    assert all(u.reason for u in d.unplaced)


def test_fractions_on_one_gpu_never_exceed_one() -> None:
    nodes = [node("n1", cpu=64, mem_gi=256, gpus=4)]
    replicas = [rep(f"r{i:02}", api=f"a{i % 5}", cpu=0.1, gpu=f) for i, f in enumerate([0.3, 0.45, 0.2, 0.7] * 5)]
    d = place(nodes, replicas)
    per_gpu: dict[int, float] = {}
    fractions = {r.id: r.request.gpu for r in replicas}
    for a in d.assignments:
        assert len(a.gpu_indices) == 1
        per_gpu[a.gpu_indices[0]] = per_gpu.get(a.gpu_indices[0], 0.0) + fractions[a.replica_id]
    assert all(total <= 1.0 + 1e-9 for total in per_gpu.values())
    assert sum(per_gpu.values()) > 3.5  # and the packing is tight


SPREAD_CASES = [
    ("two replicas of one API go to two nodes", [node("n1"), node("n2")], [rep("r1"), rep("r2")], {"n1": 1, "n2": 1}),
    (
        "no room elsewhere: they share a node",
        [node("n1"), node("n2", cpu=1, state="cordoned")],
        [rep("r1"), rep("r2")],
        {"n1": 2},
    ),
    (
        "spread counts replicas already placed",
        [node("n1"), node("n2")],
        [rep("r0", on="n1"), rep("r1"), rep("r2")],
        {"n2": 1, "n1": 1},
    ),
    (
        "empty identical nodes fill in id order, tightly",
        [node(f"n{i}", cpu=4) for i in range(10)],
        [rep(f"r{i}", api=f"a{i}", cpu=1) for i in range(8)],
        {"n0": 4, "n1": 4},
    ),
    (
        "one API over empty identical nodes: one replica each",
        [node(f"n{i}", cpu=4) for i in range(10)],
        [rep(f"r{i}", cpu=1) for i in range(3)],
        {"n0": 1, "n1": 1, "n2": 1},
    ),
    (
        "different APIs pack onto the fullest node (best fit)",
        [node("n1"), node("n2")],
        [rep("r0", api="x", cpu=6, on="n2"), rep("r1", api="y", cpu=1)],
        {"n2": 1},
    ),
]


@pytest.mark.parametrize(("case", "nodes", "replicas", "per_node"), SPREAD_CASES, ids=[c[0] for c in SPREAD_CASES])
def test_spread_and_best_fit(
    case: str, nodes: list[NodeView], replicas: list[ClusterReplica], per_node: dict[str, int]
) -> None:
    d = place(nodes, replicas)
    assert dict(Counter(a.node_id for a in d.assignments)) == per_node


SELECTOR_CASES = [
    ("pool selector", [node("a", pool="cpu"), node("b", pool="big")], rep("r", pools=("big",)), "b"),
    ("spot required", [node("a"), node("b", spot=True)], rep("r", spot="require"), "b"),
    ("spot never", [node("a", spot=True), node("b")], rep("r", spot="never"), "b"),
    ("spot preferred", [node("a"), node("b", spot=True)], rep("r"), "b"),
    ("CPU replica keeps off GPU nodes", [node("a", gpus=1), node("b")], rep("r"), "b"),
    ("launching node takes nothing", [node("a", state="launching"), node("b")], rep("r"), "b"),
]


@pytest.mark.parametrize(("case", "nodes", "replica", "node_id"), SELECTOR_CASES, ids=[c[0] for c in SELECTOR_CASES])
def test_selectors(case: str, nodes: list[NodeView], replica: ClusterReplica, node_id: str) -> None:
    assert where(place(nodes, [replica])) == {"r": (node_id, ())}


REASON_CASES = [
    ("no nodes", [], rep("r"), "none is ready"),
    ("selector", [node("a", pool="cpu")], rep("r", pools=("gpu",)), "node_pool gpu"),
    ("cpu", [node("a", cpu=2)], rep("r", cpu=4), "CPU short on 1 (needs 4, most free 2)"),
    ("mem", [node("a", mem_gi=2)], rep("r", mem_gi=4), "memory short on 1"),
    ("gpu", [node("a", gpus=1)], rep("r", gpu=2), "needs 2 whole GPUs"),
    ("gpu fraction", [node("a")], rep("r", gpu=0.5), "needs 0.5 of one GPU"),
]


@pytest.mark.parametrize(("case", "nodes", "replica", "fragment"), REASON_CASES, ids=[c[0] for c in REASON_CASES])
def test_every_unplaced_replica_has_a_reason(
    case: str, nodes: list[NodeView], replica: ClusterReplica, fragment: str
) -> None:
    d = place(nodes, [replica])
    assert not d.assignments
    assert [u.replica_id for u in d.unplaced] == ["r"]
    assert fragment in d.unplaced[0].reason
    assert "cannot be placed" in d.reason["summary"]


def test_deterministic_whatever_the_input_order() -> None:
    nodes = [node(f"n{i}", gpus=i % 2) for i in range(6)]
    replicas = [rep(f"r{i}", api=f"a{i % 3}", cpu=1 + i % 3, gpu=(0.25 if i % 4 == 0 else 0)) for i in range(20)]
    first = place(nodes, replicas)
    second = place(list(reversed(nodes)), list(reversed(replicas)))
    assert where(first) == where(second)
    assert first.unplaced == second.unplaced


def test_capacity_is_never_overcommitted() -> None:
    nodes = [node(f"n{i}", cpu=4, mem_gi=8) for i in range(3)]
    replicas = [rep(f"r{i:02}", api=f"a{i % 4}", cpu=1.5, mem_gi=2) for i in range(12)]
    d = place(nodes, replicas)
    cpu = Counter[str]()
    for a in d.assignments:
        cpu[a.node_id] += 1
    assert all(n * 1.5 <= 4 for n in cpu.values())
    assert len(d.assignments) == 6 and len(d.unplaced) == 6


@pytest.mark.parametrize(
    "request_",
    [
        ReplicaRequest(cpu=1, mem_bytes=GI),
        ReplicaRequest(cpu=0.3, mem_bytes=3 * GI),
        ReplicaRequest(cpu=0.5, gpu=0.25),
        ReplicaRequest(cpu=0.5, gpu=0.3, gpu_mem_bytes=5 * GI),
        ReplicaRequest(cpu=1, gpu=1),
        ReplicaRequest(cpu=1, gpu=2),
    ],
)
def test_counting_fits_agrees_with_placing_one_at_a_time(request_: ReplicaRequest) -> None:
    n = node("n", cpu=16, mem_gi=64, gpus=4)
    partly_used = [rep("x", api="x", cpu=3, gpu=0.5, on="n", gpus=(1,))]
    one_by_one = Packer([n], partly_used)
    count = 0
    while one_by_one.place(ClusterReplica(f"r{count}", "a", request_)) is not None:
        count += 1
    counted = Packer([n], partly_used)
    assert how_many_fit(counted.rooms[0], request_, 1000) == count


def test_request_of_an_apis_compute() -> None:
    compute = ComputeConfig.model_validate({"cpu": "500m", "mem": "1Gi", "gpu": 0.25, "gpu_mem": "2Gi",
                                            "node_pool": "gpu", "spot": "never"})  # fmt: skip
    assert request_of(compute) == ReplicaRequest(cpu=0.5, mem_bytes=GI, gpu=0.25, gpu_mem_bytes=2 * GI,
                                                 node_pools=("gpu",), spot="never")  # fmt: skip
    assert request_of(ComputeConfig()) == ReplicaRequest(cpu=1.0)


def test_usage_per_node() -> None:
    nodes = [node("n1", gpus=2), node("n2")]
    replicas = [rep("a", cpu=1, mem_gi=2, gpu=0.25, on="n1", gpus=(0,)), rep("b", cpu=2, gpu=1, on="n1", gpus=(1,)),
                rep("c", on=None)]  # fmt: skip
    assert usage(nodes, replicas) == (
        NodeUsage("n1", replicas=2, cpu=3.0, mem_bytes=3 * GI, gpus=1.25, gpu_mem_bytes=20 * GI),
        NodeUsage("n2", replicas=0, cpu=0.0, mem_bytes=0, gpus=0.0, gpu_mem_bytes=0),
    )


def test_the_placement_step_decides_as_place_whether_or_not_its_inputs_repeat() -> None:
    """The step keeps its last decision for the same nodes and replicas: random ticks, some repeating."""
    import random

    from thrifty.control.placement_step import PlacementStep

    rng = random.Random(11)
    step = PlacementStep()
    nodes: list[NodeView] = []
    placed: list[ClusterReplica] = []
    pending: list[ClusterReplica] = []
    for tick in range(300):
        what = rng.random()
        if what < 0.1:
            nodes.append(node(f"n{tick}", cpu=rng.choice([2, 4]), gpus=rng.choice([0, 1]),
                              state=rng.choice(["ready", "launching"])))  # fmt: skip
        elif what < 0.15 and nodes:
            nodes.pop(rng.randrange(len(nodes)))
        elif what < 0.3:
            pending.append(rep(f"r{tick}", rng.choice("ab"), cpu=rng.choice([0.5, 1, 3]), gpu=rng.choice([0, 0.5])))
        d = step.update(float(tick), nodes, placed, pending)
        assert d == place(nodes, [*placed, *pending])
        assert step.last_reason["now_s"] == float(tick)
        if rng.random() < 0.5:  # the operator starts what was placed (else the same inputs come again)
            done = {a.replica_id: a for a in d.assignments}
            placed += [ClusterReplica(r.id, r.api, r.request, done[r.id].node_id, done[r.id].gpu_indices)
                       for r in pending if r.id in done]  # fmt: skip
            pending = [r for r in pending if r.id not in done]
