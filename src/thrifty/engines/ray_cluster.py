"""The connection to a Ray cluster: join one (``address:``) or start a small head on this machine.

One per operator process (Ray allows one driver connection per process); the Ray engine and the simulated
provider share it. Blocking calls (``start``, ``nodes``, ``drain``, ``close``): callers on the event loop
run them in a thread. Only ``engine: ray`` imports this module, so the local engine never loads Ray.

The head this module starts is sized for a small machine: a 100 MB object store (replicas exchange no
objects, only their port and status), no dashboard, no usage reporting, and by default no CPUs, so no
replica lands on it unless the head is the one node (``head_cpus``). Its node death detection is tightened
(about ``node_death_timeout_s``), so a lost simulated node is observed in seconds, not Ray's ~30 s default.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray

NAMESPACE = "thrifty"
DEFAULT_OBJECT_STORE_BYTES = 100 * 1024 * 1024
HEALTH_CHECK_PERIOD_MS = 500
# Ray puts Unix sockets under <temp dir>/session_<date>_<pid>/sockets/: a path longer than this would pass
# the 107-byte limit of a socket address (the session name is ~45 characters, the socket names ~20).
MAX_TEMP_DIR_CHARS = 36

DrainReason = Literal["preemption", "idle"]
_DRAIN_REASONS = {"preemption": "DRAIN_NODE_REASON_PREEMPTION", "idle": "DRAIN_NODE_REASON_IDLE_TERMINATION"}


@dataclass(frozen=True, slots=True)
class RayNode:
    node_id: str
    alive: bool
    labels: dict[str, str]
    resources: dict[str, float]
    address: str
    death_reason: str = ""


def ray_temp_dir(home: Path) -> Path:
    """Where Ray keeps its session (sockets, logs): under the home when the path is short enough."""
    wanted = home / "ray"
    if len(str(wanted)) <= MAX_TEMP_DIR_CHARS:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    # Too long for Ray's socket paths: a short folder in the system's temp dir, named in the home for finding.
    short = Path(tempfile.mkdtemp(prefix="thrifty-ray-"))
    (home / "run").mkdir(parents=True, exist_ok=True)
    (home / "run" / "ray-temp-dir").write_text(f"{short}\n")
    return short


class RayCluster:
    def __init__(self, address: str, *, started_head: bool, temp_dir: Path | None) -> None:
        self.address = address  # the GCS address ("host:port") that worker nodes join
        self.started_head = started_head
        self.temp_dir = temp_dir

    @classmethod
    def connect(
        cls,
        home: Path,
        *,
        address: str | None = None,
        head_cpus: int = 0,
        head_gpus: int = 0,
        object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
        node_death_timeout_s: float = 2.0,
    ) -> RayCluster:
        """Join the cluster at ``address``, or start a head on this machine when it is None (blocking)."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting from a platform's machines
        api: Any = ray  # Ray's typing is partial (untyped functions, a context without address_info)
        common: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "configure_logging": False}
        if address is not None:
            ctx = api.init(address=address, **common)
            return cls(str(ctx.address_info["gcs_address"]), started_head=False, temp_dir=None)
        temp_dir = ray_temp_dir(home)
        threshold = max(2, round(node_death_timeout_s * 1000 / HEALTH_CHECK_PERIOD_MS))
        ctx = api.init(
            num_cpus=head_cpus,
            num_gpus=head_gpus,
            include_dashboard=False,
            object_store_memory=object_store_bytes,
            _temp_dir=str(temp_dir),
            _system_config={
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": HEALTH_CHECK_PERIOD_MS,
                "health_check_failure_threshold": threshold,
            },
            **common,
        )
        return cls(str(ctx.address_info["gcs_address"]), started_head=True, temp_dir=temp_dir)

    def head_node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def nodes(self) -> list[RayNode]:
        """Every node the cluster has known, dead ones included (blocking, a few ms)."""
        api: Any = ray
        return [
            RayNode(
                node_id=str(n["NodeID"]),
                alive=bool(n["Alive"]),
                labels={str(k): str(v) for k, v in (n.get("Labels") or {}).items()},
                resources={str(k): float(v) for k, v in (n.get("Resources") or {}).items()},
                address=str(n.get("NodeManagerAddress", "")),
                death_reason=str(n.get("DeathReasonMessage", "") or ""),
            )
            for n in api.nodes()
        ]

    def drain(self, node_id: str, reason: DrainReason, message: str, deadline_unix_s: float | None) -> bool:
        """Tell Ray the node is going (its GCS DrainNode, the path Ray's own autoscaler takes for spot).

        Ray stops placing work on it; actors that die with it report ``preempted``. Ray does not kill the
        node at the deadline: the provider does. Returns whether Ray accepted the request.
        """
        from ray.core.generated import autoscaler_pb2

        deadline_ms = 0 if deadline_unix_s is None else int(deadline_unix_s * 1000)
        generated: Any = autoscaler_pb2  # protobuf code, without stubs
        raylet: Any = ray._raylet  # a private module: `ray drain-node` (hidden CLI) makes this same call
        client = raylet.GcsClient(address=self.address)
        accepted, _rejection = client.drain_node(
            node_id, generated.DrainNodeReason.Value(_DRAIN_REASONS[reason]), message, deadline_ms
        )
        return bool(accepted)

    def close(self) -> None:
        """Disconnect; a head this process started stops with it."""
        if ray.is_initialized():
            ray.shutdown()
