"""Provisioning: the cheapest nodes for what cannot be placed, min/max, priorities, idle release, consolidation."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from thrifty.config.loader import parse_cluster_text
from thrifty.policy.cluster_types import ClusterReplica, NodePool, NodeSpec, NodeState, NodeView, ReplicaRequest
from thrifty.policy.placement import place
from thrifty.policy.provisioning import ProvisioningConfig, ProvisioningDecision, ProvisioningState, decide

GI = 2**30


def pool(
    name: str,
    cpu: float = 2,
    mem_gi: int = 8,
    gpus: int = 0,
    price: float = 0.1,
    spot: bool = False,
    min_nodes: int = 0,
    max_nodes: int = 10,
    priority: int = 0,
) -> NodePool:
    spec = NodeSpec(pool=name, instance_type="custom", cpu=cpu, mem_bytes=mem_gi * GI, gpus=gpus,
                    gpu_mem_bytes=16 * GI if gpus else 0, price_per_hour=price, spot=spot)  # fmt: skip
    return NodePool(spec=spec, min_nodes=min_nodes, max_nodes=max_nodes, priority=priority)


def node_of(p: NodePool, node_id: str, state: NodeState = "ready", since_s: float = 0.0) -> NodeView:
    return NodeView(id=node_id, spec=p.spec, state=state, since_s=since_s)


def rep(
    rep_id: str, api: str = "a", cpu: float = 1, gpu: float = 0, on: str | None = None, gpus: tuple[int, ...] = ()
) -> ClusterReplica:
    req = ReplicaRequest(cpu=cpu, mem_bytes=GI, gpu=gpu)
    return ClusterReplica(id=rep_id, api=api, request=req, node_id=on, gpu_indices=gpus)


def cfg(*pools: NodePool, idle_s: float = 300, consolidation: bool = True) -> ProvisioningConfig:
    return ProvisioningConfig(pools=pools, node_idle_timeout_s=idle_s, consolidation=consolidation,
                              utilization_threshold=0.5, underused_for_s=60, move_timeout_s=600)  # fmt: skip


def launched(d: ProvisioningDecision) -> dict[str, int]:
    return {x.pool: x.count for x in d.launch}


SMALL = pool("small", cpu=2, price=0.096)
LARGE = pool("large", cpu=4, mem_gi=16, price=0.192)
GPU = pool("gpu", cpu=4, mem_gi=16, gpus=1, price=0.526)
GPU4 = pool("gpu4", cpu=48, mem_gi=192, gpus=4, price=3.912)
SPOT_GPU = pool("gpu-spot", cpu=4, mem_gi=16, gpus=1, price=0.184, spot=True)

BUY_CASES: list[tuple[str, Sequence[NodePool], list[ClusterReplica], dict[str, int]]] = [
    ("the cheapest pool that fits", [LARGE, SMALL], [rep("r1"), rep("r2")], {"small": 1}),
    ("three CPUs: two smalls, not a large", [SMALL, LARGE], [rep(f"r{i}") for i in range(3)],
     {"small": 2}),
    ("four 0.25-GPU replicas buy one GPU node", [GPU, GPU4], [rep(f"g{i}", api=f"a{i}", gpu=0.25) for i in range(4)],
     {"gpu": 1}),
    ("0.5 and 0.75 need two GPUs", [GPU], [rep("g1", gpu=0.5), rep("g2", api="b", gpu=0.75)], {"gpu": 2}),
    ("spot is cheaper", [GPU, SPOT_GPU], [rep("g1", gpu=1)], {"gpu-spot": 1}),
    ("CPU replicas ride along on a GPU node's spare CPU", [SMALL, GPU],
     [rep("g", api="g", gpu=1), rep("c1", api="c"), rep("c2", api="c")], {"gpu": 1}),
    ("max_nodes caps a pool; the next cheapest takes the rest", [pool("small", cpu=2, price=0.096, max_nodes=1), LARGE],
     [rep(f"r{i}") for i in range(4)], {"small": 1, "large": 1}),
    ("equal price: the lower priority number wins", [pool("b", priority=1), pool("a", priority=2)], [rep("r")],
     {"b": 1}),
    ("equal price and priority: the name decides", [pool("b"), pool("a")], [rep("r")], {"a": 1}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "pools", "replicas", "want"), BUY_CASES, ids=[c[0] for c in BUY_CASES])
def test_buys_the_cheapest_nodes_that_fit(
    case: str, pools: Sequence[NodePool], replicas: list[ClusterReplica], want: dict[str, int]
) -> None:
    d = decide(cfg(*pools), [], replicas, ProvisioningState(), 0.0)
    assert launched(d) == want, d.reason
    assert not d.unfit
    assert sorted(i for x in d.launch for i in x.replica_ids) == sorted(r.id for r in replicas)
    assert all(x.reason for x in d.launch)


def test_pending_replicas_that_fit_existing_or_launching_nodes_buy_nothing() -> None:
    nodes = [node_of(SMALL, "n1", state="launching"), node_of(SMALL, "n2")]
    replicas = [rep("r1", on="n2"), rep("r2"), rep("r3")]
    d = decide(cfg(SMALL), nodes, replicas, ProvisioningState(), 0.0)
    assert d.launch == ()
    assert d.reason["fit_on_existing"] == 2


UNFIT_CASES = [
    ("too big for every pool", [SMALL], rep("r", cpu=3), "larger than a node"),
    ("no GPU pool", [SMALL], rep("r", gpu=0.5), "larger than a node"),
    ("every pool at max_nodes", [pool("small", max_nodes=1)], rep("r", cpu=2), "max_nodes: small"),
]


@pytest.mark.parametrize(("case", "pools", "replica", "fragment"), UNFIT_CASES, ids=[c[0] for c in UNFIT_CASES])
def test_replicas_no_launch_can_hold_get_a_reason(
    case: str, pools: list[NodePool], replica: ClusterReplica, fragment: str
) -> None:
    nodes = [node_of(pools[0], "n1")] if pools[0].max_nodes == 1 else []
    blocker = [rep("b", api="b", cpu=2, on="n1")] if nodes else []
    d = decide(cfg(*pools), nodes, [*blocker, replica], ProvisioningState(), 0.0)
    assert d.launch == ()
    assert [u.replica_id for u in d.unfit] == ["r"]
    assert fragment in d.unfit[0].reason


def test_min_nodes_are_launched_and_kept_when_idle() -> None:
    p = pool("base", min_nodes=2)
    d = decide(cfg(p), [], [], ProvisioningState(), 0.0)
    assert launched(d) == {"base": 2}
    nodes = [node_of(p, "n1"), node_of(p, "n2")]
    state = ProvisioningState()
    for t in (0.0, 1000.0, 5000.0):
        d = decide(cfg(p, idle_s=300), nodes, [], state, t)
        state = d.state
        assert d.launch == () and d.release == ()


def test_idle_node_released_after_the_timeout_and_not_before() -> None:
    nodes = [node_of(SMALL, "busy"), node_of(SMALL, "idle")]
    replicas = [rep("r", on="busy")]
    state = ProvisioningState()
    released_at = None
    for t in (0.0, 100.0, 299.0, 300.0):
        d = decide(cfg(SMALL, idle_s=300, consolidation=False), nodes, replicas, state, t)
        state = d.state
        if d.release:
            assert [x.node_id for x in d.release] == ["idle"]
            assert "node_idle_timeout 300s" in d.release[0].reason
            released_at = t
            break
    assert released_at == 300.0


def test_idle_clock_restarts_when_a_replica_lands() -> None:
    nodes = [node_of(SMALL, "n1")]
    state = decide(cfg(SMALL, idle_s=300), nodes, [], ProvisioningState(), 0.0).state
    state = decide(cfg(SMALL, idle_s=300), nodes, [rep("r", on="n1")], state, 200.0).state
    d = decide(cfg(SMALL, idle_s=300), nodes, [], state, 400.0)
    assert d.release == ()
    assert decide(cfg(SMALL, idle_s=300), nodes, [], d.state, 700.0).release != ()


def test_consolidation_frees_an_underused_node() -> None:
    big = pool("big", cpu=8, mem_gi=32, price=0.4)
    nodes = [node_of(big, "a"), node_of(big, "b")]
    replicas = [rep("a1", api="x", cpu=2, on="a"), rep("a2", api="y", cpu=1, on="a"), rep("b1", api="z", on="b")]
    c = cfg(big)
    state = ProvisioningState()
    # Both nodes are underused; "b" (1/8 used) is the emptier one, but only after underused_for (60 s).
    d = decide(c, nodes, replicas, state, 0.0)
    assert d.moves == () and d.cordon == ()
    d = decide(c, nodes, replicas, d.state, 60.0)
    assert d.cordon == ("b",)
    assert [(m.replica_id, m.from_node, m.to_node) for m in d.moves] == [("b1", "b", "a")]
    # The operator moves b1 (new replica first); "b" is then empty and is released as consolidated.
    moved = [replicas[0], replicas[1], rep("b1-new", api="z", on="a")]
    cordoned = [nodes[0], node_of(big, "b", state="cordoned", since_s=60.0)]
    d2 = decide(c, cordoned, moved, d.state, 70.0)
    assert [(x.node_id, "consolidated" in x.reason) for x in d2.release] == [("b", True)]
    assert d2.state.consolidating is None


def test_no_consolidation_when_the_replicas_do_not_fit_elsewhere() -> None:
    nodes = [node_of(SMALL, "a"), node_of(SMALL, "b")]
    replicas = [rep("a1", cpu=1.5, on="a"), rep("b1", api="b", cpu=0.9, on="b")]
    d = decide(cfg(SMALL), nodes, replicas, ProvisioningState(underused_since={"b": 0.0}), 100.0)
    assert d.cordon == () and d.moves == ()


def test_consolidation_respects_min_nodes_and_gives_up_after_the_timeout() -> None:
    p = pool("p", cpu=8, mem_gi=32, min_nodes=2)
    nodes = [node_of(p, "a"), node_of(p, "b")]
    replicas = [rep("a1", on="a"), rep("b1", api="b", on="b")]
    assert decide(cfg(p), nodes, replicas, ProvisioningState(underused_since={"a": 0.0, "b": 0.0}), 100.0).moves == ()
    q = pool("q", cpu=8, mem_gi=32)
    nodes = [node_of(q, "a"), node_of(q, "b", state="cordoned")]
    stuck = ProvisioningState(consolidating="b", consolidating_since_s=0.0)
    assert decide(cfg(q), nodes, replicas, stuck, 599.0).uncordon == ()
    d = decide(cfg(q), nodes, replicas, stuck, 600.0)
    assert d.uncordon == ("b",) and d.state.consolidating is None


def test_no_consolidation_while_buying() -> None:
    big = pool("big", cpu=8, mem_gi=32)
    nodes = [node_of(big, "a"), node_of(big, "b")]
    replicas = [rep("a1", on="a"), rep("b1", api="b", on="b"), rep("huge", api="h", cpu=8)]
    d = decide(cfg(big), nodes, replicas, ProvisioningState(underused_since={"a": 0.0, "b": 0.0}), 100.0)
    assert launched(d) == {"big": 1}
    assert d.moves == ()


def test_decisions_carry_a_reason_record() -> None:
    d = decide(cfg(SMALL, LARGE), [], [rep("r1")], ProvisioningState(), 0.0)
    assert d.reason["summary"] == "launch 1 x small"
    assert d.reason["buy"]["rounds"][0]["price_per_work"] == {"small": 2.0, "large": 4.0}  # one CPU of two, of four
    assert d.reason["pending"] == 1 and d.reason["need_new_nodes"] == 1


def test_what_is_bought_is_enough_for_placement() -> None:
    """Buying and placing agree: once the launched nodes are ready, placement fits every pending replica."""
    pools = [SMALL, LARGE, GPU, GPU4, SPOT_GPU]
    shapes = [(0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (1.0, 0.25), (1.0, 0.5), (2.0, 1.0), (4.0, 2.0)]
    replicas = [rep(f"r{i:03}", api=f"a{i % 13}", cpu=shapes[i % 13 % 7][0], gpu=shapes[i % 13 % 7][1])
                for i in range(120)]  # fmt: skip
    d = decide(cfg(*pools), [], replicas, ProvisioningState(), 0.0)
    assert not d.unfit
    by_name = {p.name: p for p in pools}
    nodes = [node_of(by_name[x.pool], f"{x.pool}-{i}") for x in d.launch for i in range(x.count)]
    placed = place(nodes, replicas)
    assert placed.unplaced == (), placed.unplaced[:3]
    again = decide(cfg(*pools), nodes, replicas, ProvisioningState(), 1.0)
    assert again.launch == ()


def test_config_comes_from_the_cluster_file() -> None:
    text = """\
provider: simulated
node_idle_timeout: 90s
consolidation: {utilization_threshold: 0.3, underused_for: 10m}
node_pools:
  - {name: cpu, instance_type: m5.large, spot: true, min_nodes: 1}
"""
    c = ProvisioningConfig.from_cluster(parse_cluster_text(text, "c.yaml"))
    assert (c.node_idle_timeout_s, c.utilization_threshold, c.underused_for_s) == (90.0, 0.3, 600.0)
    assert [p.name for p in c.pools] == ["cpu"] and c.pools[0].spec.spot
    assert launched(decide(c, [], [], ProvisioningState(), 0.0)) == {"cpu": 1}


def test_a_memo_kept_from_tick_to_tick_decides_as_a_fresh_one() -> None:
    """Random ticks, some repeating the last inputs, some changing them: the memo never changes a decision."""
    import random

    from thrifty.policy.provisioning import ProvisioningMemo

    rng = random.Random(7)
    pools = (SMALL, LARGE, GPU, pool("spot", cpu=4, mem_gi=16, price=0.05, spot=True, min_nodes=1))
    c = cfg(*pools, idle_s=20)
    memo = ProvisioningMemo()
    kept, fresh = ProvisioningState(), ProvisioningState()
    nodes: list[NodeView] = []
    replicas: list[ClusterReplica] = []
    for tick in range(300):
        if rng.random() < 0.3:  # something changes: a node or a replica comes or goes, or a node's state
            p = rng.choice(pools)
            what = rng.random()
            if what < 0.25 or not nodes:
                nodes.append(node_of(p, f"{p.name}-{tick}", rng.choice(["ready", "launching", "cordoned"]), tick))
            elif what < 0.4:
                nodes.pop(rng.randrange(len(nodes)))
            elif what < 0.5:
                i = rng.randrange(len(nodes))
                nodes[i] = node_of(next(x for x in pools if x.spec == nodes[i].spec), nodes[i].id, "ready", tick)
            elif what < 0.8:
                on = rng.choice([None, None, *(n.id for n in nodes if n.state == "ready")])
                replicas.append(rep(f"r{tick}", rng.choice("ab"), cpu=rng.choice([0.5, 1, 2]), on=on))
            elif replicas:
                replicas.pop(rng.randrange(len(replicas)))
        out = frozenset({"spot"}) if tick % 50 < 10 else frozenset()
        a = decide(c, nodes, replicas, kept, float(tick), out, memo)
        b = decide(c, nodes, replicas, fresh, float(tick), out)
        assert a == b
        kept, fresh = a.state, b.state
