"""The engine actions step: stop what the other steps retire, start what they launch (pinned on a cluster).

Stops go first (each replica drains for its longest allowed request, plus a margin); a start is skipped
when its API was deleted or redeployed while the tick waited on the gateway. A started replica's process
is recorded at once, so an operator crash from then on leaves it adoptable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from thrifty.control.api_state import ApiRuntime
from thrifty.control.store import ProcessRecord, Store
from thrifty.engines.base import Engine, NodePlacement, PlacingEngine, ReplicaLaunch


class EngineActions:
    def __init__(
        self,
        engine: Engine,
        apis: dict[str, ApiRuntime],
        store: Store,
        wall: Callable[[], float],
        *,
        placing: PlacingEngine | None = None,
    ) -> None:
        self.engine = engine
        self.placing = placing  # the same engine, when it can pin replicas to nodes
        self.apis = apis
        self.store = store
        self.wall = wall
        self.recorded: set[str] = set()  # replicas whose process is in the store

    async def update(
        self,
        stops: Sequence[tuple[str, float]],
        starts: Sequence[tuple[ReplicaLaunch, NodePlacement | None, str | None]],
    ) -> None:
        """``stops``: (replica, grace); ``starts``: (launch, pinning, node shown in the event)."""
        for rid, grace_s in stops:
            await self.engine.stop_replica(rid, grace_s)
        for launch, placement, node in starts:
            current = self.apis.get(launch.api)
            if current is None or current.revision != launch.revision:
                continue  # deleted or redeployed while this tick was waiting on the gateway
            if self.placing is not None and placement is not None:
                identity = await self.placing.start_replica(launch, placement)
            else:
                identity = await self.engine.start_replica(launch)
            if identity is not None:
                self.store.put_process(
                    ProcessRecord(launch.replica_id, "replica", launch.api, launch.revision, identity, self.wall())
                )
                self.recorded.add(launch.replica_id)
            where = f" on {node}" if node else ""
            self.store.add_event(launch.api, "replica", f"starting {launch.replica_id}{where}", self.wall())
