"""The deployments step: each API's desired revision and count vs its replicas → replicas to start and stop.

It calls the pure rollout policy (``policy.rollout``) per API with what the engine observed (plus, on a
cluster, the replicas still waiting for a node, which count as starting), records status changes and
replica exits as events, and builds the launch of each new replica. It starts and stops nothing itself:
the engine actions step does, after placement (on a cluster) and after the gateway knows who drains.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from thrifty.control.api_state import ApiRuntime
from thrifty.control.store import Store
from thrifty.control.stored_keys import key_env_names
from thrifty.dataplane.platform_secret import HIDE_ENV, METRICS_KEY_ENV
from thrifty.engines.base import ReplicaLaunch, ReplicaObservation
from thrifty.policy.rollout import ReplicaView, plan, record_failure


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    starts: tuple[ReplicaLaunch, ...]
    stops: tuple[str, ...]


def random_suffix() -> str:
    """Six hex digits from the OS's randomness: the default end of a replica id."""
    return secrets.token_hex(3)


class DeploymentsStep:
    def __init__(
        self,
        apis: dict[str, ApiRuntime],
        store: Store,
        wall: Callable[[], float],
        suffix: Callable[[], str] = random_suffix,
    ) -> None:
        self.apis = apis  # the operator's own dict: deploys and deletes show here at once
        self.store = store
        self.wall = wall
        self.suffix = suffix  # injected so a simulation with a seed gets the same replica ids every run
        self._seen: dict[str, tuple[ReplicaObservation, ReplicaView]] = {}  # last tick's views, by replica

    def update(
        self,
        now: float,
        observed: list[ReplicaObservation],
        waiting: Callable[[str], list[ReplicaView]] | None = None,
        hidden: set[str] | frozenset[str] = frozenset(),
    ) -> DeploymentPlan:
        """``waiting(api)``: replicas asked for that run nowhere yet; ``hidden``: replicas not to count (a
        consolidation's replacements, while the replica they replace still serves)."""
        stops: list[str] = []
        starts: list[ReplicaLaunch] = []
        by_api: dict[str, list[ReplicaView]] = {}
        seen: dict[str, tuple[ReplicaObservation, ReplicaView]] = {}
        for o in observed:
            if o.replica_id in hidden:
                continue
            known = self._seen.get(o.replica_id)
            if known is not None and known[0] is o:  # the engine reports the same observation: the same view
                view = known[1]
            else:
                view = ReplicaView(o.replica_id, o.revision, o.state, o.started_s)  # type: ignore[arg-type]
            seen[o.replica_id] = (o, view)
            by_api.setdefault(o.api, []).append(view)
        self._seen = seen
        for name, rt in self.apis.items():
            views = by_api.get(name, [])
            if waiting is not None:
                views.extend(waiting(name))
            strategy = rt.spec.config.update_strategy
            p = plan(
                revision=rt.revision,
                desired=rt.desired,
                max_surge=strategy.max_surge,
                max_unavailable=strategy.max_unavailable,
                replicas=views,
                state=rt.rollout,
                now_s=now,
            )
            rt.rollout = p.state
            rt.last_plan = p.reason
            if p.status != rt.status:
                self.store.add_event(name, "status", f"{rt.status} -> {p.status}", self.wall())
                rt.status = p.status
            stops.extend(p.stop)
            starts.extend(self.launch(rt) for _ in range(p.start))
        stops.extend(o.replica_id for o in observed if o.api not in self.apis and o.state != "stopping")
        return DeploymentPlan(tuple(starts), tuple(stops))

    def launch(self, rt: ApiRuntime) -> ReplicaLaunch:
        spec = rt.spec
        rid = f"{spec.name}-{rt.revision[:6]}-{self.suffix()}"
        hidden = key_env_names(r.spec.config for r in self.apis.values()) | {METRICS_KEY_ENV}
        return ReplicaLaunch(
            replica_id=rid,
            api=spec.name,
            revision=rt.revision,
            # The predictor has no business with the API keys: the gateway checks them.
            config={**spec.config_json, "auth": {"api_keys": []}},
            project_dir=spec.project_dir,
            # ... nor with the variables they are read from, inherited from the operator: the replica drops them.
            env={**spec.config.predictor.env, HIDE_ENV: ",".join(sorted(hidden - spec.config.predictor.env.keys()))},
        )

    def replacement(self, api: str) -> ReplicaLaunch | None:
        """A new replica of the API's current revision (a consolidation move's replacement)."""
        rt = self.apis.get(api)
        return self.launch(rt) if rt is not None else None

    def on_exit(self, obs: ReplicaObservation, now: float) -> None:
        """A replica exited without being asked to: an event, a crash backoff, the API's last error."""
        rt = self.apis.get(obs.api)
        if obs.error:
            message = obs.error.get("message", "the predictor failed to load")
            where = obs.error.get("where")
            text = f"{message}" + (f" (at {where})" if where else "")
        else:
            text = f"replica exited unexpectedly with code {obs.exit_code}"
        self.store.add_event(
            obs.api,
            "replica_exited",
            f"{obs.replica_id}: {text}",
            self.wall(),
            {"exit_code": obs.exit_code, "error": obs.error, "log": obs.log_path},
        )
        if rt is None:
            return
        rt.rollout = record_failure(rt.rollout, obs.revision, text, now)
        if obs.revision == rt.revision:
            rt.last_error = {
                "message": text,
                "replica": obs.replica_id,
                "exit_code": obs.exit_code,
                "where": (obs.error or {}).get("where"),
                "log": obs.log_path,
                "traceback": (obs.error or {}).get("traceback"),
                "at": self.wall(),
            }
