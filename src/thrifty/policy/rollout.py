"""Which replicas to start and stop so an API reaches its desired revision and count.

Pure: the operator passes what it observed (replicas of every revision and their states), the desired
revision and replica count, the update strategy, its prior state and the time; it gets back how many
replicas of the desired revision to start, which replicas to stop, and the new state. Rolling updates
follow Kubernetes' semantics: at most ``desired + max_surge`` replicas exist and at least
``desired - max_unavailable`` are ready while old replicas are retired. Crashed replicas are replaced
with exponential backoff, reset once a replica of the revision becomes ready.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from thrifty.config.units import resolve_count_or_percent

ReplicaState = Literal["starting", "ready", "stopping"]

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class ReplicaView:
    id: str
    revision: str
    state: ReplicaState
    started_s: float


@dataclass(frozen=True)
class RolloutState:
    revision: str = ""
    failures: int = 0
    start_not_before_s: float = 0.0
    last_failure: str | None = None


@dataclass(frozen=True)
class RolloutPlan:
    start: int
    stop: tuple[str, ...]
    state: RolloutState
    status: Literal["live", "updating", "error", "scaled to zero"]
    reason: dict[str, Any] = field(default_factory=dict)


def backoff_s(failures: int) -> float:
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (failures - 1)))


def record_failure(state: RolloutState, revision: str, message: str, now_s: float) -> RolloutState:
    """A replica of ``revision`` exited without being asked to: delay the next start."""
    if revision != state.revision:
        return state  # an old revision's crash does not hold back the new one
    failures = state.failures + 1
    return replace(state, failures=failures, start_not_before_s=now_s + backoff_s(failures), last_failure=message)


def plan(
    *,
    revision: str,
    desired: int,
    max_surge: int | str,
    max_unavailable: int | str,
    replicas: list[ReplicaView],
    state: RolloutState,
    now_s: float,
) -> RolloutPlan:
    if state.revision != revision:
        state = RolloutState(revision=revision)
    live = [r for r in replicas if r.state != "stopping"]
    cur = [r for r in live if r.revision == revision]
    old = [r for r in live if r.revision != revision]
    cur_ready = [r for r in cur if r.state == "ready"]
    if cur_ready and state.failures:
        state = replace(state, failures=0, start_not_before_s=0.0, last_failure=None)

    surge = resolve_count_or_percent(max_surge, desired, round_up=True)
    unavailable = resolve_count_or_percent(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # as Kubernetes: otherwise an update could never progress

    stop: list[str] = []
    start = 0
    if len(cur) > desired:
        # Retire the least useful first: not ready before ready, then the newest.
        extras = sorted(cur, key=lambda r: (r.state == "ready", -r.started_s))[: len(cur) - desired]
        stop.extend(r.id for r in extras)
    else:
        missing = desired - len(cur)
        room = desired + surge - len(live) if old else missing
        start = max(0, min(missing, room))
        if start and now_s < state.start_not_before_s:
            start = 0

    # Old revisions: not-ready ones serve nothing, stop them at once; ready ones only while enough stay ready.
    stop.extend(r.id for r in old if r.state != "ready")
    old_ready = sorted((r for r in old if r.state == "ready"), key=lambda r: r.started_s)
    min_ready = max(0, desired - unavailable)
    can_stop = max(0, len(cur_ready) + len(old_ready) - min_ready)
    if len(cur_ready) >= desired:
        can_stop = len(old_ready)  # the new revision carries the load alone
    stop.extend(r.id for r in old_ready[:can_stop])

    status: Literal["live", "updating", "error", "scaled to zero"]
    if desired == 0 and not live:
        status = "scaled to zero"
    elif state.last_failure is not None and not cur_ready:
        status = "error"
    elif len(cur_ready) >= desired and not old:
        status = "live"
    else:
        status = "updating"
    reason = {
        "revision": revision,
        "desired": desired,
        "current": len(cur),
        "current_ready": len(cur_ready),
        "old": len(old),
        "old_ready": len(old_ready),
        "max_surge": surge,
        "max_unavailable": unavailable,
        "start": start,
        "stop": list(stop),
        "backoff_until_s": state.start_not_before_s if state.failures else None,
        "failures": state.failures,
    }
    return RolloutPlan(start=start, stop=tuple(stop), state=state, status=status, reason=reason)
