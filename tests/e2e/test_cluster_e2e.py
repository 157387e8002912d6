"""The platform on a real local Ray cluster with the simulated provider, through the CLI.

Two APIs at gpu 0.5 share one GPU node; scaling one up launches a node from the cheapest pool that fits;
deleting the APIs gives the idle nodes back; predictions from a few client threads never fail meanwhile.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, Platform
from e2e_helpers import Load, wait_until

pytest.importorskip("ray")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]

CLUSTER = """
engine: ray
provider: simulated
launch_delay: 0.5s
node_idle_timeout: 2s
consolidation: {enabled: false}
node_pools:
  - {name: cpu, instance_type: m5.large, spot: true}
  - {name: gpu-od, instance_type: g4dn.xlarge, cpu: 2, priority: 1}
  - {name: gpu, instance_type: g4dn.xlarge, cpu: 2, spot: true}
"""


@pytest.fixture(scope="module")
def cluster_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "THRIFTY_HOME": str(home)}
    p = Platform(home, env)
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


def rows(p: Platform, *args: str) -> list[dict[str, Any]]:
    out = p.json(*args)
    assert isinstance(out, list)
    return out


def nodes(p: Platform) -> list[dict[str, Any]]:
    return p.json("cluster", "info")["nodes"]  # type: ignore[index,no-any-return]


def test_bad_cluster_file_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    p = Platform(home, {**os.environ, "THRIFTY_HOME": str(home)})
    bad = tmp_path / "cluster.yaml"
    bad.write_text("engine: ray\nprovider: simulated\nnode_pools:\n  - {name: gpu, instance_type: g4dn.xlarge2}\n")
    out = p.cli("up", "--port", "0", "--cluster", str(bad), check=False)
    assert out.returncode != 0
    assert "node_pools[0].instance_type" in out.stderr and "g4dn.xlarge" in out.stderr
    assert not (home / "operator.json").exists()


def test_apis_share_a_gpu_node_scale_onto_the_cheapest_pool_and_idle_nodes_go(
    cluster_platform: Platform, tmp_path: Path
) -> None:
    p = cluster_platform
    project = tmp_path / "apis"
    shutil.copytree(EXAMPLES / "cluster" / "apis", project)
    p.cli("deploy", str(project), timeout=120)

    (node,) = nodes(p)  # both 0.5-GPU replicas on one GPU of one node, bought from the cheapest pool
    assert (node["pool"], node["capacity"], node["gpu"]) == ("gpu", "spot", {"used": 1.0, "total": 1})
    assert len(node["replicas"]) == 2

    with Load(f"{p.gateway}/summarize", clients=2) as load_s, Load(f"{p.gateway}/classify", clients=2) as load_c:
        wait_until(lambda: load_s.completed() > 20 and load_c.completed() > 20, 30, "both APIs to serve")
        config = project / "thrifty.yaml"
        config.write_text(config.read_text().replace("min_replicas: 1", "min_replicas: 2", 1))
        p.cli("deploy", str(project), timeout=120)  # the GPU is full: a second node, again the cheapest pool
        pools = sorted(n["pool"] for n in nodes(p))
        assert pools == ["gpu", "gpu"], pools
        served = load_s.completed()
        wait_until(lambda: load_s.completed() > served + 20, 30, "summarize to keep serving on two nodes")
    for load in (load_s, load_c):
        assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])

    costs = {a["name"]: a["cost"] for a in rows(p, "get")}
    assert costs["summarize"]["per_hour"] > costs["classify"]["per_hour"] > 0
    assert costs["summarize"]["per_million_requests"] is not None
    info = p.json("cluster", "info")
    assert info["cost"]["per_hour"] == pytest.approx(2 * node["price_per_hour"])  # type: ignore[index]

    p.cli("delete", "summarize")
    p.cli("delete", "classify")
    wait_until(lambda: not nodes(p), 60, "the idle nodes to be released")
    kinds = [e["kind"] for e in rows(p, "cluster", "events")]
    assert kinds.count("node_launch") == 2 and kinds.count("node_release") == 2, kinds
    releases = [e for e in rows(p, "events") if e["kind"] == "node_release"]
    assert all("node_idle_timeout" in e["message"] for e in releases)
