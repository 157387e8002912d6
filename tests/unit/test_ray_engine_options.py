"""What a replica's actor reserves and where it is pinned, from its compute; and Ray stays optional."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thrifty.config.schema import ApiConfig
from thrifty.engines.base import ReplicaLaunch


def launch(**compute: object) -> ReplicaLaunch:
    config = ApiConfig.model_validate({"name": "echo", "compute": compute}).model_dump(mode="json", by_alias=True)
    return ReplicaLaunch("r1", "echo", "rev", config, "/project")


def test_actor_reserves_the_replicas_compute_and_is_pinned_to_its_node() -> None:
    pytest.importorskip("ray")
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from thrifty.engines.ray import RayPlacement, actor_options

    options = actor_options(launch(cpu="500m", mem="256Mi", gpu=0.25), RayPlacement("ab" * 28))
    assert options["num_cpus"] == 0.5
    assert options["num_gpus"] == 0.25
    assert options["memory"] == 256 * 2**20
    assert options["name"] == "thrifty-replica-r1" and options["lifetime"] == "detached"
    assert options["max_restarts"] == 0  # the operator replaces a lost replica
    strategy = options["scheduling_strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert strategy.node_id == "ab" * 28 and strategy.soft is False
    unpinned = actor_options(launch(cpu=1), None)
    assert "scheduling_strategy" not in unpinned and "memory" not in unpinned and unpinned["num_gpus"] == 0


def test_the_local_engine_and_the_operator_never_import_ray() -> None:
    code = (
        "import sys\n"
        "import thrifty.control.main, thrifty.control.operator, thrifty.engines.local, thrifty.engines.gpu_limits\n"
        "import thrifty.clouds.base, thrifty.clouds.local, thrifty.cli.main\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
