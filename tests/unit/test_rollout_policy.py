"""Rolling updates and crash backoff, tick by tick (no clock, no sleeping)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from thrifty.policy.rollout import ReplicaView, RolloutPlan, RolloutState, backoff_s, plan, record_failure


def rv(rid: str, rev: str, state: str = "ready", t: float = 0.0) -> ReplicaView:
    return ReplicaView(rid, rev, state, t)  # type: ignore[arg-type]


def run(
    replicas: list[ReplicaView],
    desired: int = 1,
    surge: int | str = "25%",
    unavail: int | str = "25%",
    state: RolloutState | None = None,
    now: float = 100.0,
    rev: str = "B",
) -> RolloutPlan:
    return plan(
        revision=rev,
        desired=desired,
        max_surge=surge,
        max_unavailable=unavail,
        replicas=replicas,
        state=state or RolloutState(revision=rev),
        now_s=now,
    )


def test_fresh_deploy_starts_desired() -> None:
    p = run([], desired=3)
    assert p.start == 3 and p.stop == () and p.status == "updating"


def test_live_when_all_ready() -> None:
    p = run([rv("a", "B"), rv("b", "B")], desired=2)
    assert p.start == 0 and p.stop == () and p.status == "live"


def test_scale_down_stops_not_ready_then_newest() -> None:
    reps = [rv("old", "B", t=1), rv("new", "B", t=5), rv("starting", "B", "starting", t=6)]
    p = run(reps, desired=1)
    assert set(p.stop) == {"starting", "new"}


def test_single_replica_update_surges_then_retires_old() -> None:
    # 25% of 1: surge rounds up to 1, unavailable rounds down to 0 -> never fewer than 1 ready.
    p = run([rv("a1", "A")], desired=1)
    assert p.start == 1 and p.stop == ()
    p = run([rv("a1", "A"), rv("b1", "B", "starting")], desired=1)
    assert p.start == 0 and p.stop == ()
    p = run([rv("a1", "A"), rv("b1", "B")], desired=1)
    assert p.stop == ("a1",) and p.start == 0


def test_rolling_update_respects_surge_and_unavailable() -> None:
    old = [rv(f"a{i}", "A", t=i) for i in range(4)]
    p = run(old, desired=4, surge=1, unavail=1)
    assert p.start == 1 and len(p.stop) == 1  # one extra, one down: 4 -> 3 ready + 1 starting
    # Simulate the rollout to the end and check the invariants at every tick.
    replicas = list(old)
    for tick in range(20):
        p = run(replicas, desired=4, surge=1, unavail=1)
        replicas = [r for r in replicas if r.id not in p.stop]
        live = len(replicas) + p.start
        assert live <= 5
        replicas = [replace(r, state="ready") if r.revision == "B" else r for r in replicas]
        replicas += [rv(f"b{tick}-{i}", "B", "starting", t=10 + tick) for i in range(p.start)]
        ready = sum(r.state == "ready" for r in replicas)
        assert ready >= 3  # max_unavailable=1 of 4: never fewer than 3 ready, from the first tick on
        if all(r.revision == "B" and r.state == "ready" for r in replicas) and len(replicas) == 4:
            break
    else:
        pytest.fail("rollout did not finish")
    assert run(replicas, desired=4, surge=1, unavail=1).status == "live"


def test_not_ready_old_replicas_stop_at_once() -> None:
    p = run([rv("a1", "A", "starting"), rv("b1", "B", "starting")], desired=1)
    assert p.stop == ("a1",)


def test_crash_backoff_grows_and_resets_on_ready() -> None:
    s = RolloutState(revision="B")
    s = record_failure(s, "B", "boom", now_s=100)
    assert s.failures == 1 and s.start_not_before_s == 100 + backoff_s(1)
    assert run([], desired=1, state=s, now=100.1).start == 0
    assert run([], desired=1, state=s, now=100 + backoff_s(1)).start == 1
    s = record_failure(s, "B", "boom", now_s=200)
    assert s.start_not_before_s - 200 == backoff_s(2) > backoff_s(1)
    p = run([], desired=1, state=s, now=200.1)
    assert p.status == "error"
    p = run([rv("b", "B")], desired=1, state=s, now=300)
    assert p.state.failures == 0 and p.status == "live"


def test_backoff_is_capped() -> None:
    assert backoff_s(0) == 0
    assert backoff_s(100) == 30.0


def test_old_revision_crash_does_not_delay_new() -> None:
    s = record_failure(RolloutState(revision="B"), "A", "old one died", now_s=100)
    assert s.failures == 0


def test_scaled_to_zero() -> None:
    assert run([], desired=0).status == "scaled to zero"
    p = run([rv("b", "B")], desired=0)
    assert p.stop == ("b",)
