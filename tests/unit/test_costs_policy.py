"""Costs: each API's share of node prices by what it reserves, idle apart, and $ per million requests."""

from __future__ import annotations

import pytest

from thrifty.policy.cluster_types import ClusterReplica, NodeSpec, NodeView, ReplicaRequest
from thrifty.policy.costs import CostLedger, accrue, per_million_requests, spent_in_window, split_costs, unit_prices

GI = 2**30


def node(
    node_id: str, cpu: float = 4, mem_gi: int = 16, gpus: int = 0, price: float = 1.0, od: float = 0.0
) -> NodeView:
    spec = NodeSpec(pool="p", instance_type="custom", cpu=cpu, mem_bytes=mem_gi * GI, gpus=gpus,
                    gpu_mem_bytes=16 * GI if gpus else 0, price_per_hour=price, spot=od > price,
                    price_on_demand_per_hour=od or price)  # fmt: skip
    return NodeView(id=node_id, spec=spec, state="ready", since_s=0.0)


def rep(rep_id: str, api: str, on: str, cpu: float = 1, mem_gi: float = 0, gpu: float = 0) -> ClusterReplica:
    gpus = (0,) if 0 < gpu < 1 else tuple(range(int(gpu)))
    return ClusterReplica(id=rep_id, api=api, request=ReplicaRequest(cpu=cpu, mem_bytes=int(mem_gi * GI), gpu=gpu),
                          node_id=on, gpu_indices=gpus)  # fmt: skip


def test_unit_prices_add_up_to_the_node_price() -> None:
    n = node("n", cpu=4, mem_gi=16, gpus=1, price=0.526)
    cpu, mem, gpu = unit_prices(n)
    assert cpu * 4 + mem * 16 * GI + gpu == pytest.approx(0.526)
    assert gpu > cpu * 4  # a GPU node's price is mostly its GPU


CASES = [
    # (case, nodes, replicas, expected $/h per API, expected idle $/h)
    ("one API takes the whole CPU node", [node("n", mem_gi=0)], [rep("r", "a", "n", cpu=4)], {"a": 1.0}, 0.0),
    ("half the CPU, no memory: idle is the rest", [node("n", mem_gi=0)], [rep("r", "a", "n", cpu=2)], {"a": 0.5}, 0.5),
    (
        "two APIs at 0.5 GPU share a GPU node's price equally",
        [node("g", cpu=4, mem_gi=16, gpus=1, price=0.526)],
        [rep("r1", "a", "g", cpu=2, mem_gi=8, gpu=0.5), rep("r2", "b", "g", cpu=2, mem_gi=8, gpu=0.5)],
        {"a": 0.263, "b": 0.263},
        0.0,
    ),
    (
        "an API's replicas on several nodes add up",
        [node("n1", mem_gi=0), node("n2", mem_gi=0, price=2.0)],
        [rep("r1", "a", "n1"), rep("r2", "a", "n2"), rep("r3", "b", "n2", cpu=3)],
        {"a": 0.75, "b": 1.5},
        0.75,
    ),
    ("an empty node is all idle", [node("n")], [], {}, 1.0),
]


@pytest.mark.parametrize(("case", "nodes", "replicas", "by_api", "idle"), CASES, ids=[c[0] for c in CASES])
def test_split_by_what_each_api_reserves(
    case: str, nodes: list[NodeView], replicas: list[ClusterReplica], by_api: dict[str, float], idle: float
) -> None:
    b = split_costs(nodes, replicas)
    assert b.by_api == pytest.approx(by_api)
    assert b.idle_per_hour == pytest.approx(idle)
    assert sum(b.by_api.values()) + b.idle_per_hour == pytest.approx(b.cluster_per_hour)


def test_spot_savings_against_the_same_nodes_on_demand() -> None:
    b = split_costs([node("s", price=0.184, od=0.526), node("o", price=0.526)], [])
    assert b.cluster_per_hour == pytest.approx(0.71)
    assert b.spot_savings_per_hour == pytest.approx(0.342)
    assert [n.spot for n in b.nodes] == [False, True]  # nodes sorted by id: "o", "s"


def test_ledger_integrates_rates_and_reads_a_window() -> None:
    ledger = CostLedger(keep_s=600)
    # $3.6/h for 100 s, then $7.2/h for 100 s.
    for t, rate in ((0.0, 3.6), (50.0, 3.6), (100.0, 7.2), (150.0, 7.2), (200.0, 7.2)):
        ledger = accrue(ledger, {"a": rate}, t)
    assert ledger.spent["a"] == pytest.approx(0.1 + 0.2)
    assert spent_in_window(ledger, "a", 100.0) == pytest.approx(0.2)
    assert spent_in_window(ledger, "a", 150.0) == pytest.approx(0.25)
    assert spent_in_window(ledger, "missing", 100.0) == 0.0


def test_ledger_history_is_bounded() -> None:
    ledger = CostLedger(keep_s=60)
    for t in range(1000):
        ledger = accrue(ledger, {"a": 1.0}, float(t))
    assert len(ledger.history) <= 62
    assert spent_in_window(ledger, "a", 60.0) == pytest.approx(60 / 3600)


@pytest.mark.parametrize(("dollars", "requests", "want"), [(0.2, 400_000, 0.5), (1.0, 0, None), (0.0, 10, 0.0)])
def test_per_million_requests(dollars: float, requests: int, want: float | None) -> None:
    got = per_million_requests(dollars, requests)
    assert got == (pytest.approx(want) if want is not None else None)


def test_the_costs_step_prices_as_split_costs_whether_or_not_the_cluster_changed() -> None:
    """The step splits again only when the nodes or the replicas differ from the last tick's."""
    import random

    from thrifty.control.cluster_costs import CostsStep

    rng = random.Random(5)
    step = CostsStep()
    nodes: list[NodeView] = []
    replicas: list[ClusterReplica] = []
    for tick in range(200):
        what = rng.random()
        if what < 0.1:
            nodes.append(node(f"n{tick}", gpus=rng.choice([0, 1]), price=rng.choice([0.5, 1.0]), od=2.0))
        elif what < 0.15 and nodes:
            nodes.pop(rng.randrange(len(nodes)))
        elif what < 0.3 and nodes:
            replicas.append(rep(f"r{tick}", rng.choice("ab"), rng.choice(nodes).id, cpu=rng.choice([0.5, 1])))
        elif what < 0.35 and replicas:
            replicas.pop(rng.randrange(len(replicas)))
        assert step.update(float(tick), nodes, replicas, {"a": tick}) == split_costs(nodes, replicas)
        assert step.breakdown == split_costs(nodes, replicas)
