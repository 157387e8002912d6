"""Spot instances with graceful failover, on a real local Ray cluster with the simulated provider.

Under continuous load, two interruptions with notice and one hard kill lose no client request and capacity
comes back to the target; a spot shortage falls back to on-demand and returns to spot when capacity is back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Platform
from e2e_helpers import Load, wait_until

from thrifty.client import Client

pytest.importorskip("ray")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

CLUSTER = """
engine: ray
provider: simulated
launch_delay: 0.5s
node_idle_timeout: 2s
consolidation: {enabled: false}
node_pools:
  - {name: spot-a, instance_type: m5.large, spot: true, max_nodes: 3}
  - {name: spot-b, instance_type: m5.large, spot: true, max_nodes: 3}
  - {name: od, instance_type: m5.large, max_nodes: 3, priority: 1}
spot: {on_demand_backup: true, notice_handling: drain, probe_after: 3s}
"""

PROJECT = """
apis:
  - name: echo
    predictor: {path: predictor.py}
    compute: {cpu: 1.5, mem: 256Mi}
    serving: {max_concurrency: 4, request_timeout: 30s}
    autoscaling: {min_replicas: 2, max_replicas: 2}
"""

PREDICTOR = """
import time


class Predictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        time.sleep(0.01)
        return {"ok": True}
"""


@pytest.fixture(scope="module")
def spot_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("home")
    p = Platform(home, {**os.environ, "THRIFTY_HOME": str(home)})
    cluster = home.parent / "cluster.yaml"
    cluster.write_text(CLUSTER)
    p.cli("up", "--port", "0", "--cluster", str(cluster))
    try:
        yield p
    finally:
        p.cli("down", check=False)
        log = home / "logs" / "operator.log"
        if log.exists() and os.environ.get("THRIFTY_E2E_SHOW_LOGS"):
            print(log.read_text())


def nodes(p: Platform) -> list[dict[str, Any]]:
    """``cluster info -o json``'s nodes, read over the admin API: the waits poll it every 0.1 s, and a CLI
    process per poll (about a second each on a loaded 2-core box) was most of this test's time."""
    with Client(p.home, timeout_s=10) as c:
        return list(c.cluster_info()["nodes"])


def serving(p: Platform) -> list[dict[str, Any]]:
    """The live nodes that hold a replica, when the API has its two replicas ready (else empty)."""
    with Client(p.home, timeout_s=10) as c:
        ready = [r for r in c.get("echo")["replica_list"] if r["state"] == "ready"]
    if len(ready) != 2:
        return []
    live = [n for n in nodes(p) if n["state"] == "ready" and n["replicas"]]
    return live if sum(len(n["replicas"]) for n in live) == 2 else []


def settled(p: Platform) -> list[dict[str, Any]]:
    """``serving`` when the cluster has no other node (idle, launching, cordoned or terminating)."""
    live = serving(p)
    return live if live and len(nodes(p)) == len(live) else []


def test_interruptions_lose_no_request_and_a_shortage_falls_back_to_on_demand(
    spot_platform: Platform, tmp_path: Path
) -> None:
    p = spot_platform
    project = tmp_path / "echo"
    project.mkdir()
    (project / "thrifty.yaml").write_text(PROJECT)
    (project / "predictor.py").write_text(PREDICTOR)
    p.cli("deploy", str(project), timeout=120)
    wait_until(lambda: serving(p), 60, "two replicas ready on spot nodes")

    with Load(f"{p.gateway}/echo", clients=8) as load:
        wait_until(lambda: load.completed() > 50, 30, "the API to serve")
        for notice in ("8s", "8s", "0"):
            victim = wait_until(lambda: serving(p), 60, "two ready replicas")[0]
            assert victim["capacity"] == "spot"
            p.cli("cluster", "preempt", victim["id"], "--notice", notice)
            wait_until(lambda v=victim["id"]: all(n["id"] != v for n in nodes(p)), 30, f"{victim['id']} to go")
            wait_until(lambda: serving(p), 60, "capacity back to two ready replicas")
            done = load.completed()
            wait_until(lambda d=done: load.completed() > d + 50, 30, "the API to keep serving")
        assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])

        # Spot shortage: both spot pools out; the next interruption's replacement lands on demand.
        p.cli("cluster", "capacity", "spot-a", "0")
        p.cli("cluster", "capacity", "spot-b", "0")
        # Settled first (no idle, launching or leaving node): a spare spot node left by a move would take the
        # replacement, and the fallback would not be exercised.
        victim = wait_until(lambda: settled(p), 60, "two ready replicas and no other node")[0]
        p.cli("cluster", "preempt", victim["id"], "--notice", "8s")
        wait_until(lambda: any(n["capacity"] == "on-demand" and n["replicas"] for n in serving(p)), 60,
                   "an on-demand node to back spot up")  # fmt: skip
        p.cli("cluster", "capacity", "spot-a", "unlimited")
        p.cli("cluster", "capacity", "spot-b", "unlimited")
        wait_until(lambda: (s := serving(p)) and all(n["capacity"] == "spot" for n in s), 75,
                   "the replicas back on spot nodes")  # fmt: skip
        done = load.completed()
        wait_until(lambda: load.completed() > done + 50, 30, "the API to keep serving")
    assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])

    kinds = {e["kind"] for e in p.json("cluster", "events", "--limit", "500")}  # type: ignore[attr-defined]
    for kind in ("spot_interruption", "spot_replacement", "spot_release", "spot_capacity", "spot_fallback",
                 "spot_return", "node_lost"):  # fmt: skip
        assert kind in kinds, kinds
    info = p.json("cluster", "info")
    assert info["spot"]["spot_nodes"] >= 2 and info["spot"]["savings_per_hour"] > 0  # type: ignore[index]
    text = p.cli("cluster", "info").stdout
    assert "spot saves" in text and "on-demand nodes" in text


def test_preempt_on_a_platform_without_a_cluster_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    p = Platform(home, {**os.environ, "THRIFTY_HOME": str(home)})
    out = p.cli("cluster", "preempt", "x-1", "--notice", "0", check=False)
    assert out.returncode != 0
