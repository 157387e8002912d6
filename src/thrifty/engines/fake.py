"""An in-memory engine for tests and the cost simulator: replicas start, become ready and stop on a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thrifty.engines.base import NodePlacement, ObservedState, ReplicaLaunch, ReplicaObservation
from thrifty.engines.identity import ProcessIdentity


@dataclass
class _FakeReplica:
    launch: ReplicaLaunch
    started_s: float
    port: int
    ready_after_s: float = 0.0
    stop_at_s: float | None = None
    exit_code: int | None = None
    error: dict[str, Any] | None = None
    seen: ReplicaObservation | None = None  # the last observation, reported again while nothing changed


class FakeEngine:
    def __init__(self, clock: Callable[[], float], *, ready_after_s: float = 1.0, stop_after_s: float = 0.0) -> None:
        self._clock = clock
        self.ready_after_s = ready_after_s
        self.ready_after_by_api: dict[str, float] = {}  # per-API cold starts (the cost simulator), taken at start
        self.stop_after_s = stop_after_s
        self._replicas: dict[str, _FakeReplica] = {}
        self._next_port = 20000
        self.started: list[ReplicaLaunch] = []
        self.stopped: list[str] = []
        self.fail_next_start: dict[str, Any] | None = None
        self.placements: dict[str, NodePlacement | None] = {}  # replica id -> the node it was started on

    async def start_replica(
        self, launch: ReplicaLaunch, placement: NodePlacement | None = None
    ) -> ProcessIdentity | None:
        self._next_port += 1
        ready_after = self.ready_after_by_api.get(launch.api, self.ready_after_s)
        rep = _FakeReplica(launch, self._clock(), self._next_port, ready_after)
        if self.fail_next_start is not None:
            rep.exit_code, rep.error = 3, self.fail_next_start
        self._replicas[launch.replica_id] = rep
        self.started.append(launch)
        self.placements[launch.replica_id] = placement
        return None

    async def stop_replica(self, replica_id: str, grace_s: float) -> None:
        rep = self._replicas.get(replica_id)
        if rep is not None and rep.stop_at_s is None:
            rep.stop_at_s = self._clock() + self.stop_after_s
            self.stopped.append(replica_id)

    def crash(self, replica_id: str, exit_code: int = 1, error: dict[str, Any] | None = None) -> None:
        rep = self._replicas[replica_id]
        rep.exit_code, rep.error, rep.seen = exit_code, error, None

    def observe(self) -> list[ReplicaObservation]:
        now = self._clock()
        out = []
        gone = []
        for rid, rep in self._replicas.items():
            if rep.stop_at_s is not None and now >= rep.stop_at_s:
                gone.append(rid)
                continue
            state: ObservedState
            exit_code, error = None, None
            if rep.exit_code is not None:
                state, exit_code, error = "exited", rep.exit_code, rep.error
            elif rep.stop_at_s is not None:
                state = "stopping"
            elif now - rep.started_s >= rep.ready_after_s:
                state = "ready"
            else:
                state = "starting"
            seen = rep.seen
            if seen is None or seen.state != state:
                launch = rep.launch
                seen = rep.seen = ReplicaObservation(rid, launch.api, launch.revision, state, rep.started_s,
                                                     port=rep.port, exit_code=exit_code, error=error)  # fmt: skip
            out.append(seen)
        for rid in gone:
            del self._replicas[rid]
        return out

    def running(self) -> list[str]:
        """Replicas starting or ready (what ``observe`` reports as such), without building observations."""
        return [rid for rid, rep in self._replicas.items()
                if rep.exit_code is None and rep.stop_at_s is None]  # fmt: skip

    def forget(self, replica_id: str) -> None:
        self._replicas.pop(replica_id, None)

    async def close(self, grace_s: float) -> None:
        self._replicas.clear()
