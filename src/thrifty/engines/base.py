"""The Engine seam: start, stop and observe replica processes, wherever they run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from thrifty.engines.identity import ProcessIdentity

ObservedState = Literal["starting", "ready", "stopping", "exited"]


@dataclass(frozen=True)
class ReplicaLaunch:
    replica_id: str
    api: str
    revision: str
    config: dict[str, Any]  # ApiConfig.model_dump(mode="json", by_alias=True)
    project_dir: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaObservation:
    replica_id: str
    api: str
    revision: str
    state: ObservedState
    started_s: float
    host: str = "127.0.0.1"
    port: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    error: dict[str, Any] | None = None  # the replica's own account of why it failed (status file)
    log_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.replica_id,
            "api": self.api,
            "revision": self.revision,
            "state": self.state,
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "started": self.started_s,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True, slots=True)
class NodePlacement:
    """Where placement put a replica: the engine's node id, and the memory of one GPU there (its GPU cap)."""

    node_id: str
    gpu_mem_bytes: int = 0


class Engine(Protocol):
    async def start_replica(self, launch: ReplicaLaunch) -> ProcessIdentity | None:
        """Start it; returns the process's identity (for the store), or None where there is no local process."""

    async def stop_replica(self, replica_id: str, grace_s: float) -> None:
        """Ask the replica to drain and exit; kill it after ``grace_s``."""

    def observe(self) -> list[ReplicaObservation]:
        """Current state of every replica the engine knows, including exits not yet forgotten."""

    def forget(self, replica_id: str) -> None:
        """The operator has handled this replica's unexpected exit."""

    async def close(self, grace_s: float) -> None:
        """Stop every replica."""


class PlacingEngine(Engine, Protocol):
    """An engine that runs replicas on the node placement chose (the Ray engine; the fake one for tests)."""

    async def start_replica(
        self, launch: ReplicaLaunch, placement: NodePlacement | None = None
    ) -> ProcessIdentity | None:
        """Start it on ``placement``'s node (anywhere when None)."""
