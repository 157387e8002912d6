"""What the operator knows of one deployed API, and the views built from it: its row in the routing
table and the answer to `thrifty get`. Plain functions of that state, kept out of the reconcile loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thrifty.engines.base import ReplicaObservation
from thrifty.policy.rollout import RolloutState
from thrifty.spec import ApiSpec


@dataclass
class ApiRuntime:
    spec: ApiSpec
    created_s: float
    updated_s: float
    desired: int
    refresh_nonce: str = ""
    rollout: RolloutState = field(default_factory=RolloutState)
    status: str = "updating"
    last_error: dict[str, Any] | None = None
    last_plan: dict[str, Any] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        return self.spec.revision + self.refresh_nonce


def adopt_runtime(rt: ApiRuntime, running: list[ReplicaObservation]) -> int:
    """Fit a restored API to the replicas adopted after an operator crash, so that none is restarted.

    A `thrifty refresh` gave them a revision suffix that the store does not keep: take it back from them.
    The autoscaler's choice is not kept either: the number running (within min/max) stands in for it.
    Returns how many of them serve the current revision.
    """
    suffixes = {o.revision[len(rt.spec.revision) :] for o in running if o.revision.startswith(rt.spec.revision)}
    if len(suffixes) == 1:
        rt.refresh_nonce = suffixes.pop()
    current = sum(1 for o in running if o.revision == rt.revision)
    if current:
        scaling = rt.spec.config.autoscaling
        rt.desired = min(max(current, scaling.min_replicas), scaling.max_replicas)
    return current


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """An API config with its keys hidden (state.db holds only their salted hashes; answers not even those)."""
    keys = config.get("auth", {}).get("api_keys", [])
    return {**config, "auth": {**config["auth"], "api_keys": ["(redacted)"] * len(keys)}} if keys else config


def route_entry(
    rt: ApiRuntime, replicas: list[ReplicaObservation], stopping: set[str], key_hashes: list[str]
) -> dict[str, Any]:
    """The API's row in the gateway's routing table."""
    serving = rt.spec.config.serving
    scaling = rt.spec.config.autoscaling
    return {
        # Replicas being stopped stay listed as draining until they exit: the gateway sends them
        # nothing new, and retries elsewhere a request that their exit cuts off.
        "replicas": [
            {
                "id": o.replica_id,
                "host": o.host,
                "port": o.port,
                "draining": o.state == "stopping" or o.replica_id in stopping,
            }
            for o in replicas
            if o.port and (o.state == "ready" or o.state == "stopping")
        ],
        "api_keys_sha256": key_hashes,
        "max_payload": serving.max_payload,
        "request_timeout_s": serving.request_timeout,
        "stream_idle_timeout_s": serving.stream_idle_timeout,
        "hold_when_empty": scaling.min_replicas == 0,
        "cold_start_timeout_s": scaling.cold_start_timeout,
        "max_cold_queue": scaling.max_cold_queue,
        "multi_model": rt.spec.config.models is not None,
        "keep_warm_s": rt.spec.config.models.keep_warm if rt.spec.config.models is not None else 0.0,
        "protocol": rt.spec.config.serving.protocol,
    }


def api_summary(rt: ApiRuntime, replicas: list[ReplicaObservation], traffic: dict[str, Any]) -> dict[str, Any]:
    """One row of `thrifty get`: status, replicas, traffic figures."""
    return {
        "name": rt.spec.name,
        "status": rt.status,
        "revision": rt.revision,
        "replicas": {
            "ready": sum(1 for r in replicas if r.state == "ready" and r.revision == rt.revision),
            "requested": rt.desired,
            "total": len(replicas),
        },
        **{k: v for k, v in traffic.items() if k != "replicas"},
        "last_update": rt.updated_s,
        "created": rt.created_s,
        "error": rt.last_error,
    }


def replica_rows(replicas: list[ReplicaObservation], traffic: dict[str, Any]) -> list[dict[str, Any]]:
    per_replica = traffic.get("replicas", {})
    return [
        {**r.to_dict(), "in_flight": per_replica.get(r.replica_id, {}).get("in_flight", 0), "log": r.log_path}
        for r in replicas
    ]
