"""The spot policy, tick by tick: notices (drain, room, deadline, hard kill, rebalance, ignore), capacity
(backoff, probes, diversification, on-demand backup, the AWS mix, require/never), spread and return to spot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from thrifty.clouds.base import NodeNotice
from thrifty.config.loader import parse_cluster_text
from thrifty.policy.cluster_types import (
    ClusterReplica,
    NodePool,
    NodeSpec,
    NodeState,
    NodeView,
    ReplicaRequest,
    SpotPreference,
)
from thrifty.policy.placement import place
from thrifty.policy.provisioning import Launch, ProvisioningConfig, ProvisioningState
from thrifty.policy.provisioning import decide as provision
from thrifty.policy.spot import ReplicaLoad, SpotConfig, SpotDecision, SpotSnapshot, SpotState, decide, excluded
from thrifty.policy.spot_capacity import LaunchResult, backoff_delay_s, required_on_demand

GI = 2**30


def pool(name: str, price: float, spot: bool, cpu: float = 2, max_nodes: int = 10) -> NodePool:
    spec = NodeSpec(pool=name, instance_type="custom", cpu=cpu, mem_bytes=8 * GI, gpus=0, gpu_mem_bytes=0,
                    price_per_hour=price, spot=spot, price_on_demand_per_hour=0.096)  # fmt: skip
    return NodePool(spec=spec, min_nodes=0, max_nodes=max_nodes, priority=0)


SPOT_A = pool("spot-a", 0.030, True)
SPOT_B = pool("spot-b", 0.035, True)
OD = pool("od", 0.096, False)
POOLS = (SPOT_A, SPOT_B, OD)


def node(p: NodePool, node_id: str, state: NodeState = "ready") -> NodeView:
    return NodeView(id=node_id, spec=p.spec, state=state, since_s=0.0)


def rep(rep_id: str, on: str | None, api: str = "a", spot: SpotPreference = "prefer") -> ClusterReplica:
    return ClusterReplica(id=rep_id, api=api, request=ReplicaRequest(cpu=1, mem_bytes=GI, spot=spot), node_id=on)


def cfg(**kw: object) -> SpotConfig:
    return SpotConfig(pools=POOLS, **kw)  # type: ignore[arg-type]


def ready(in_flight: int = 0, capacity: int = 1) -> ReplicaLoad:
    return ReplicaLoad(ready=True, in_flight=in_flight, capacity=capacity)


def notice(node_id: str, at: float, notice_s: float | None = 120.0) -> NodeNotice:
    if notice_s is None:
        return NodeNotice(node_id=node_id, kind="rebalance", issued_s=at)
    return NodeNotice(node_id=node_id, kind="interruption", issued_s=at, deadline_s=at + notice_s)


def kinds(d: SpotDecision) -> list[str]:
    return [e.kind for e in d.events]


# -- notices, tick by tick ---------------------------------------------------------------------------------


def test_a_notice_cordons_replaces_elsewhere_unroutes_when_ready_and_releases_when_empty() -> None:
    c = cfg()
    nodes = [node(SPOT_A, "a1"), node(SPOT_B, "b1")]
    r1, r2 = rep("r1", "a1"), rep("r2", "b1", api="b")  # r1 is its API's only replica: no room elsewhere
    loads = {"r1": ready(1), "r2": ready(0)}
    n = notice("a1", 100.0)

    # t=100: the notice. Cordon, a replacement that avoids the interrupted pool; still routed (no room).
    d = decide(c, SpotSnapshot(nodes, [r1, r2], loads, [n]), SpotState(), 100.0)
    assert d.cordon == ("a1",) and not d.unroute and not d.release
    assert [(x.replica_id, x.avoid_pools) for x in d.replace] == [("r1", ("spot-a",))]
    assert kinds(d)[:2] == ["interruption", "replacement"]

    # t=101: the replacement exists (pending), no second one is asked for; placement keeps it off spot-a.
    nodes[0] = replace(nodes[0], state="cordoned")
    new = ClusterReplica("r9", "a", replace(r1.request, avoid_pools=("spot-a",)))
    nodes.append(node(SPOT_A, "a2"))
    placed = place(nodes, [r2, new])
    assert [(x.replica_id, x.node_id) for x in placed.assignments] == [("r9", "b1")]
    snap = SpotSnapshot(nodes, [r1, r2, new], loads, [n], replacing={"r9": "r1"})
    d = decide(c, snap, d.state, 101.0)
    assert d.cordon == () and d.replace == () and d.unroute == () and d.release == ()

    # t=110: the replacement is ready: stop routing to r1; its in-flight request goes on.
    new = replace(new, node_id="b1")
    loads = {**loads, "r9": ready(0)}
    snap = SpotSnapshot(nodes, [r1, r2, new], loads, [n], replacing={"r9": "r1"})
    d = decide(c, snap, d.state, 110.0)
    assert d.unroute == ("r1",) and d.stop == () and d.release == ()

    # t=111: still one in flight: wait. t=112: done: stop it, and with nothing else on a1, release it.
    d = decide(c, snap, d.state, 111.0)
    assert d.stop == () and d.release == ()
    loads = {**loads, "r1": ready(0)}
    d = decide(c, replace(snap, loads=loads), d.state, 112.0)
    assert d.stop == ("r1",) and [x.node_id for x in d.release] == ["a1"] and kinds(d) == ["release"]
    # t=113: a1 is still listed with its notice: asked again, quietly, not drained anew; gone: forgotten.
    snap = SpotSnapshot(nodes, [r2, new], loads, [n], replacing={})
    d = decide(c, snap, d.state, 113.0)
    assert [x.node_id for x in d.release] == ["a1"] and d.events == () and d.replace == ()
    d = decide(c, SpotSnapshot(nodes[1:], [r2, new], loads), d.state, 114.0)
    assert d.state.drains == {} and d.release == ()


ROOM_CASES: list[tuple[str, dict[str, ReplicaLoad], bool]] = [
    ("others have free slots for its in-flight requests", {"r1": ready(2), "o1": ready(0, 4)}, True),
    ("others are full", {"r1": ready(2), "o1": ready(4, 4)}, False),
    ("others have one slot, it has two in flight", {"r1": ready(2), "o1": ready(3, 4)}, False),
    ("an idle replica needs only one serving other", {"r1": ready(0), "o1": ready(4, 4)}, True),
    ("the other is not ready", {"r1": ready(0), "o1": ReplicaLoad(ready=False)}, False),
]  # fmt: skip


@pytest.mark.parametrize(("case", "loads", "unrouted"), ROOM_CASES, ids=[c[0] for c in ROOM_CASES])
def test_unroutes_at_once_where_the_apis_other_replicas_have_room(
    case: str, loads: dict[str, ReplicaLoad], unrouted: bool
) -> None:
    nodes = [node(SPOT_A, "a1"), node(SPOT_B, "b1")]
    snap = SpotSnapshot(nodes, [rep("r1", "a1"), rep("o1", "b1")], loads, [notice("a1", 0.0)])
    d = decide(cfg(), snap, SpotState(), 0.0)
    assert (d.unroute == ("r1",)) is unrouted
    assert [x.replica_id for x in d.replace] == ["r1"]  # replaced either way


def test_two_replicas_on_the_node_do_not_both_claim_the_same_room() -> None:
    nodes = [node(SPOT_A, "a1"), node(SPOT_B, "b1")]
    loads = {"r1": ready(2), "r2": ready(2), "o1": ready(0, 3)}
    snap = SpotSnapshot(nodes, [rep("r1", "a1"), rep("r2", "a1"), rep("o1", "b1")], loads, [notice("a1", 0.0)])
    assert decide(cfg(), snap, SpotState(), 0.0).unroute == ("r1",)


DEADLINE_CASES: list[tuple[str, float, float, bool]] = [
    # (case, notice length, now after the notice, released)
    ("two minutes' notice, early", 120.0, 10.0, False),
    ("just before the margin", 120.0, 114.9, False),
    ("at deadline - 5 s", 120.0, 115.0, True),
    ("a notice shorter than the margin", 3.0, 0.0, True),
    ("a hard kill (notice 0)", 0.0, 0.0, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "notice_s", "after_s", "released"), DEADLINE_CASES, ids=[c[0] for c in DEADLINE_CASES]
)
def test_the_node_is_released_before_its_deadline_even_with_work_in_flight(
    case: str, notice_s: float, after_s: float, released: bool
) -> None:
    nodes = [node(SPOT_A, "a1")]
    snap = SpotSnapshot(nodes, [rep("r1", "a1")], {"r1": ready(1)}, [notice("a1", 1000.0, notice_s)])
    d = decide(cfg(), snap, SpotState(), 1000.0 + after_s)
    assert bool(d.release) is released
    assert [x.replica_id for x in d.replace] == ["r1"]
    if released:
        assert d.unroute == ("r1",)  # the gateway sends nothing more; what is cut off it retries
        assert "cut off" in d.release[0].reason


def test_a_rebalance_recommendation_drains_without_deadline_and_an_interruption_adds_one() -> None:
    nodes = [node(SPOT_A, "a1")]
    snap = SpotSnapshot(nodes, [rep("r1", "a1")], {"r1": ready(1)}, [notice("a1", 0.0, None)])
    d = decide(cfg(), snap, SpotState(), 0.0)
    assert d.cordon == ("a1",) and [x.replica_id for x in d.replace] == ["r1"] and kinds(d)[0] == "rebalance"
    d = decide(cfg(), replace(snap, replacing={"r9": "r1"}), d.state, 10_000.0)
    assert d.release == ()  # no deadline: it waits for the replacement however long
    later = replace(snap, notices=[notice("a1", 0.0, None), notice("a1", 10_000.0, 30.0)], replacing={"r9": "r1"})
    d = decide(cfg(), later, d.state, 10_000.0)
    assert kinds(d) == ["interruption"] and d.state.drains["a1"].deadline_s == 10_030.0
    assert [x.node_id for x in decide(cfg(), later, d.state, 10_025.0).release] == ["a1"]


def test_notice_handling_ignore_does_nothing_but_report_once() -> None:
    nodes = [node(SPOT_A, "a1")]
    snap = SpotSnapshot(nodes, [rep("r1", "a1")], {"r1": ready(1)}, [notice("a1", 0.0)])
    d = decide(cfg(notice_handling="ignore"), snap, SpotState(), 0.0)
    assert (d.cordon, d.replace, d.unroute, d.release) == ((), (), (), ())
    assert kinds(d) == ["ignored"]
    d = decide(cfg(notice_handling="ignore"), snap, d.state, 119.0)
    assert d.events == () and d.release == ()


def test_a_node_under_notice_without_replicas_is_released_at_once_and_forgotten_when_gone() -> None:
    d = decide(cfg(), SpotSnapshot([node(SPOT_A, "a1", "launching")], [], {}, [notice("a1", 0.0)]), SpotState(), 0.0)
    assert d.cordon == ("a1",) and [x.node_id for x in d.release] == ["a1"] and d.state.drains["a1"].released
    assert decide(cfg(), SpotSnapshot([], [], {}, []), d.state, 1.0).state.drains == {}


# -- capacity: backoff, probes, diversification, backup, the mix -----------------------------------------------


def test_capacity_backoff_doubles_to_ten_minutes_and_a_success_clears_it() -> None:
    assert [backoff_delay_s(n, 60, 600) for n in (1, 2, 3, 4, 5, 9)] == [60, 120, 240, 480, 600, 600]
    s = SpotState()
    empty = SpotSnapshot([], [])
    d = decide(cfg(), replace(empty, launch_results=[LaunchResult("spot-a", False, 0.0)]), s, 0.0)
    assert kinds(d) == ["capacity"] and excluded(d.state, 59.0) == {"spot-a"} and excluded(d.state, 60.0) == set()
    d = decide(cfg(), replace(empty, launch_results=[LaunchResult("spot-a", False, 60.0)]), d.state, 60.0)
    assert excluded(d.state, 179.0) == {"spot-a"} and excluded(d.state, 180.0) == set()
    d = decide(cfg(), replace(empty, launch_results=[LaunchResult("spot-a", True, 180.0)]), d.state, 180.0)
    assert d.state.backoff == {} and "capacity again" in d.events[0].message


def prov(pools: Sequence[NodePool], replicas: list[ClusterReplica], out: frozenset[str]) -> tuple[Launch, ...]:
    c = ProvisioningConfig(pools=tuple(pools), consolidation=False)
    return provision(c, [], replicas, ProvisioningState(), 0.0, excluded_pools=out).launch


def launches(d: SpotDecision) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in d.launch:
        out[x.pool] = out.get(x.pool, 0) + x.count
    return out


FALLBACK_CASES: list[tuple[str, frozenset[str], SpotPreference, bool, dict[str, int], str | None]] = [
    ("spot available: spot", frozenset(), "prefer", True, {"spot-a": 1}, None),
    ("cheapest spot out: next spot pool", frozenset({"spot-a"}), "prefer", True, {"spot-b": 1}, None),
    ("every spot out, backup on: on demand", frozenset({"spot-a", "spot-b"}), "prefer", True, {"od": 1}, "fallback"),
    ("every spot out, backup off: wait", frozenset({"spot-a", "spot-b"}), "prefer", False, {}, "wait"),
    ("require never falls back", frozenset({"spot-a", "spot-b"}), "require", True, {}, None),
    ("never lands on demand anyway", frozenset(), "never", True, {"od": 1}, None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "out", "pref", "backup", "want", "event"), FALLBACK_CASES,
                         ids=[c[0] for c in FALLBACK_CASES])  # fmt: skip
def test_capacity_fallback(
    case: str, out: frozenset[str], pref: SpotPreference, backup: bool, want: dict[str, int], event: str | None
) -> None:
    reps = [rep("p1", None, spot=pref)]
    backoff = {p: LaunchResult(p, False, 0.0) for p in out}
    state = decide(cfg(), SpotSnapshot([], [], launch_results=list(backoff.values())), SpotState(), 0.0).state
    assert excluded(state, 1.0) == out
    snap = SpotSnapshot([], reps, launches=prov(POOLS, reps, excluded(state, 1.0)))
    d = decide(cfg(on_demand_backup=backup), snap, state, 1.0)
    assert launches(d) == want
    assert (event in kinds(d)) if event else not {"fallback", "wait"} & set(kinds(d))


def test_an_on_demand_launch_is_moved_to_a_spot_pool_that_has_capacity() -> None:
    # Provisioning proposed on-demand (say, spot-a was out when it ran); spot-b still has capacity.
    state = decide(cfg(), SpotSnapshot([], [], launch_results=[LaunchResult("spot-a", False, 0.0)]), SpotState(),
                   0.0).state  # fmt: skip
    reps = [rep("p1", None)]
    snap = SpotSnapshot([], reps, launches=[Launch("od", 1, ("p1",), "cheapest")])
    d = decide(cfg(), snap, state, 1.0)
    assert launches(d) == {"spot-b": 1} and "diversify" in kinds(d)


@pytest.mark.parametrize(
    ("nodes", "base", "pct", "want"),
    [(0, 0, 0, 0), (5, 0, 0, 0), (1, 2, 0, 1), (5, 2, 0, 2), (10, 2, 50, 6), (3, 0, 50, 2), (4, 1, 100, 4),
     (10, 0, 25, 3)],
)  # fmt: skip
def test_required_on_demand_follows_aws_auto_scaling(nodes: int, base: int, pct: int, want: int) -> None:
    assert required_on_demand(nodes, base, pct) == want


def test_the_mix_moves_part_of_a_spot_launch_on_demand() -> None:
    reps = [rep(f"p{i}", None) for i in range(4)]
    snap = SpotSnapshot([node(SPOT_A, "a1")], reps, launches=[Launch("spot-a", 3, tuple(x.id for x in reps), "buy")])
    # 4 nodes after the launch; base 1, then 50% of 3 rounded up = 2: 3 on demand, 1 spot.
    d = decide(cfg(on_demand_base_capacity=1, on_demand_percentage_above_base_capacity=50), snap, SpotState(), 0.0)
    assert launches(d) == {"od": 3} and "mix" in kinds(d)
    required = [rep(f"q{i}", None, spot="require") for i in range(2)]
    snap = SpotSnapshot([], required, launches=[Launch("spot-a", 2, ("q0", "q1"), "buy")])
    d = decide(cfg(on_demand_base_capacity=2), snap, SpotState(), 0.0)
    assert launches(d) == {"spot-a": 2} and "require" in str(d.reason["launches"]["mix_unmet"])


# -- spread and return ---------------------------------------------------------------------------------------


def test_spot_replicas_of_one_api_spread_over_two_pools() -> None:
    nodes = [node(SPOT_A, "a1"), node(SPOT_A, "a2")]
    reps = [rep("r1", "a1"), rep("r2", "a2")]
    loads = {"r1": ready(), "r2": ready()}
    d = decide(cfg(), SpotSnapshot(nodes, reps, loads), SpotState(), 0.0)
    assert [(x.replica_id, x.avoid_pools) for x in d.replace] == [("r2", ("spot-a",))] and "spread" in kinds(d)
    assert d.unroute == ()  # not urgent: waits for the replacement
    # provisioning buys the replacement in the other spot pool
    new = ClusterReplica("r3", "a", replace(reps[1].request, avoid_pools=("spot-a",)))
    assert [x.pool for x in prov(POOLS, [new], frozenset())] == ["spot-b"]
    # next tick: no second move while one is running; when ready, unroute then stop
    snap = SpotSnapshot(
        [*nodes, node(SPOT_B, "b1")], [*reps, replace(new, node_id="b1")], loads, replacing={"r3": "r2"}
    )
    d = decide(cfg(), snap, d.state, 1.0)
    assert d.replace == () and d.unroute == ()
    d = decide(cfg(), replace(snap, loads={**loads, "r3": ready()}), d.state, 2.0)
    assert d.unroute == ("r2",)
    d = decide(cfg(), replace(snap, loads={**loads, "r3": ready()}), d.state, 3.0)
    assert d.stop == ("r2",)


def test_no_spread_when_no_other_spot_pool_fits_or_it_is_out_of_capacity() -> None:
    nodes = [node(SPOT_A, "a1"), node(SPOT_A, "a2")]
    snap = SpotSnapshot(nodes, [rep("r1", "a1"), rep("r2", "a2")])
    only_a = SpotConfig(pools=(SPOT_A, OD))
    assert decide(only_a, snap, SpotState(), 0.0).replace == ()
    out = decide(cfg(), SpotSnapshot([], [], launch_results=[LaunchResult("spot-b", False, 0.0)]), SpotState(), 0.0)
    assert decide(cfg(), snap, out.state, 1.0).replace == ()


def test_an_on_demand_backup_returns_to_spot_after_a_successful_probe() -> None:
    c = cfg()
    # spot-a ran out at t=0, so the replica went to an on-demand node
    s = decide(c, SpotSnapshot([], [], launch_results=[LaunchResult("spot-a", False, 0.0)]), SpotState(), 0.0).state
    only_a = SpotConfig(pools=(SPOT_A, OD))
    s = decide(only_a, SpotSnapshot([], [], launch_results=[LaunchResult("spot-b", False, 0.0)]), s, 0.0).state
    nodes = [node(OD, "od1")]
    reps = [rep("r1", "od1")]
    snap = SpotSnapshot(nodes, reps, {"r1": ready()})
    d = decide(c, snap, s, 30.0)
    assert d.launch == () and d.cordon == ()  # spot-a out: wait for its probe time
    d = decide(c, snap, d.state, 60.0)
    assert [(x.pool, x.count) for x in d.launch] == [("spot-a", 1)] and kinds(d) == ["probe"]
    d = decide(c, snap, d.state, 61.0)
    assert d.launch == ()  # one probe in flight, not one a tick
    # the probe launched: spot-a is back; the backup is drained like a rebalance, replacements first
    snap = SpotSnapshot([*nodes, node(SPOT_A, "a1", "launching")], reps, {"r1": ready()},
                        launch_results=[LaunchResult("spot-a", True, 61.0)])  # fmt: skip
    d = decide(c, snap, d.state, 62.0)
    assert d.cordon == ("od1",) and [x.replica_id for x in d.replace] == ["r1"] and "return" in kinds(d)
    new = rep("r2", "a1")
    snap = SpotSnapshot([replace(nodes[0], state="cordoned"), node(SPOT_A, "a1")], [*reps, new],
                        {"r1": ready(), "r2": ReplicaLoad(ready=False)}, replacing={"r2": "r1"})  # fmt: skip
    d = decide(c, snap, d.state, 63.0)
    assert d.unroute == ()  # a return never unroutes before the replacement is ready
    d = decide(c, replace(snap, loads={"r1": ready(), "r2": ready()}), d.state, 70.0)
    assert d.unroute == ("r1",)
    d = decide(c, replace(snap, loads={"r1": ready(), "r2": ready()}), d.state, 71.0)
    assert d.stop == ("r1",) and [x.node_id for x in d.release] == ["od1"]  # its last replica stops: release
    assert d.state.drains["od1"].released


def test_a_return_whose_spot_pool_runs_out_again_is_given_up() -> None:
    c = cfg()
    nodes = [node(OD, "od1")]
    reps = [rep("r1", "od1")]
    d = decide(c, SpotSnapshot(nodes, reps, {"r1": ready()}), SpotState(), 0.0)
    assert d.cordon == ("od1",)  # spot-a has capacity as far as anyone knows
    snap = SpotSnapshot([replace(nodes[0], state="cordoned")], [*reps, rep("r2", None)], {"r1": ready()},
                        replacing={"r2": "r1"}, launch_results=[LaunchResult("spot-a", False, 1.0)])  # fmt: skip
    d = decide(c, snap, d.state, 1.0)
    assert d.uncordon == ("od1",) and d.cancel == ("r2",) and "return-abandoned" in kinds(d)
    assert d.state.drains == {}


def test_a_backup_the_mix_wants_on_demand_stays() -> None:
    snap = SpotSnapshot([node(OD, "od1")], [rep("r1", "od1")], {"r1": ready()})
    d = decide(cfg(on_demand_base_capacity=1), snap, SpotState(), 0.0)
    assert d.cordon == () and d.launch == ()


def test_from_cluster_reads_the_spot_block() -> None:
    text = """
provider: simulated
node_pools:
  - {name: cpu, instance_type: m5.large, spot: true}
  - {name: cpu-od, instance_type: m5.large}
spot: {on_demand_base_capacity: 1, on_demand_percentage_above_base_capacity: 20, on_demand_backup: false,
       notice_handling: ignore}
"""
    c = SpotConfig.from_cluster(parse_cluster_text(text, "cluster.yaml"))
    assert (c.on_demand_base_capacity, c.on_demand_percentage_above_base_capacity) == (1, 20)
    assert (c.on_demand_backup, c.notice_handling, [p.name for p in c.pools]) == (False, "ignore", ["cpu", "cpu-od"])
