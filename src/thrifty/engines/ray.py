"""The Ray engine: each replica is the same replica server process, owned by a Ray actor on a chosen node.

The actor (``ray_replica_host.ReplicaHost``) reserves the replica's ``compute`` in Ray's accounting
(``num_cpus``, ``num_gpus`` (fractions allowed), ``memory``) and is pinned to the node placement chose
(``NodeAffinitySchedulingStrategy(node_id, soft=False)``); it starts ``python -m
thrifty.dataplane.replica_main`` with the spec, port, status and secret files, and reports host, port and
status. The gateway routes to the replica over HTTP as with the local engine: Ray carries no request.
A replica with a GPU fraction sees only the GPU Ray gave its actor (``CUDA_VISIBLE_DEVICES``) and gets its
memory share in ``THRIFTY_GPU_MEMORY_FRACTION`` (``gpu_limits``).

``observe()`` is synchronous and cheap: one watcher task per replica asks its actor for its status every
``poll_interval_s`` and keeps the last answer. A dead actor, or an actor whose node died, is observed as
an exited replica with an error (``replica_actor_died``, the reason Ray gave, and ``preempted`` when the
node was drained for a spot reclaim), which the operator replaces as it does a crashed local replica.

Actors are named (``thrifty-replica-<id>``) and detached in the ``thrifty`` namespace, so when the
operator crashes the replicas keep serving on a cluster that outlives it (``address:``), and ``adopt``
takes them back by name.

On this machine (a head started here, simulated nodes) paths are shared: the project folder, the secret
file, the run folder and the log are the platform home's. A cluster of several machines would need thrifty
installed on every node, the project shipped as its archive through the object store (``ray.put`` of
``thrifty.project_archive``'s bytes, unpacked by the actor into a node-local folder), the platform secret
delivered to each node out of band (not as a task argument: those are visible in Ray's state), logs
streamed back, and the replica bound to the node's address rather than loopback (``replica_host=None``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from thrifty.dataplane.platform_secret import ensured_secret_file
from thrifty.engines.base import NodePlacement, ReplicaLaunch, ReplicaObservation
from thrifty.engines.gpu_limits import gpu_memory_fraction
from thrifty.engines.identity import UNKNOWN_EXIT_CODE, ProcessIdentity
from thrifty.engines.process import python_module_args
from thrifty.engines.ray_cluster import NAMESPACE
from thrifty.engines.ray_replica_host import ReplicaHost, ReplicaProcessSpec

REPLICA_MODULE = "thrifty.dataplane.replica_main"
ACTOR_PREFIX = "thrifty-replica-"
ACTOR_DIED = "replica_actor_died"


RayPlacement = NodePlacement  # the Ray node id, and the memory of one GPU there (for its GPU cap)


@dataclass
class _Replica:
    launch: ReplicaLaunch
    actor: Any  # ray.actor.ActorHandle
    started_s: float
    node_id: str | None
    status: dict[str, Any] | None = None
    died: str | None = None  # Ray's account of the actor's death
    preempted: bool = False  # its node was drained for preemption (a spot reclaim), not a crash
    stop_requested: bool = False
    done: bool = False  # stopped on request and gone: dropped at the next observe
    watcher: asyncio.Task[None] | None = None


def actor_name(replica_id: str) -> str:
    return f"{ACTOR_PREFIX}{replica_id}"


_ACTOR_FIELDS = ("class_name:", "actor_id:", "pid:", "namespace:", "ip:", "name:")


def _death_message(exc: BaseException) -> str:
    """Ray's account in one line, without the actor's id fields (the replica id says which)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(_ACTOR_FIELDS)]
    return " ".join(kept) or type(exc).__name__


def _release(actor: Any) -> None:
    """The replica process has exited: its files go, then its actor (after that call, in order), freeing
    what it reserved."""
    actor.remove_files.remote()
    actor.__ray_terminate__.remote()


def actor_options(launch: ReplicaLaunch, placement: RayPlacement | None) -> dict[str, Any]:
    """The replica's reservation and pinning, from its ``compute`` (pure; for tests and the benchmark)."""
    compute = launch.config.get("compute", {})
    options: dict[str, Any] = {
        "name": actor_name(launch.replica_id),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "num_cpus": float(compute.get("cpu", 1.0)),
        "num_gpus": float(compute.get("gpu", 0) or 0),
        "max_restarts": 0,  # a lost replica is replaced by the operator, with a new id and its own reason
    }
    mem = compute.get("mem")
    if mem:
        options["memory"] = int(mem)
    if placement is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placement.node_id, soft=False)
    return options


class RayEngine:
    def __init__(
        self,
        home: Path,
        *,
        replica_host: str | None = "127.0.0.1",
        default_grace_s: float = 30.0,
        poll_interval_s: float = 0.25,
    ) -> None:
        """``ray`` must be connected (``RayCluster.connect``). ``replica_host``: the address replicas bind;
        None binds the node's address as Ray knows it (needed when nodes are other machines)."""
        self._home = home
        self._host = replica_host
        self._grace_s = default_grace_s
        self._poll_s = poll_interval_s
        self._replicas: dict[str, _Replica] = {}
        self._remote_host = ray.remote(ReplicaHost)

    def log_path(self, api: str, replica_id: str) -> Path:
        return self._home / "logs" / api / f"{replica_id}.log"

    def _cache_dir(self, launch: ReplicaLaunch) -> Path:
        return self._home / "cache" / launch.api / launch.replica_id  # multi-model APIs

    def _args(self, launch: ReplicaLaunch, run_dir: Path) -> list[str]:
        timeout = float(launch.config.get("serving", {}).get("request_timeout", 0))
        return python_module_args(
            REPLICA_MODULE,
            "--spec", str(run_dir / "spec.json"),
            "--project-dir", launch.project_dir,
            "--replica-id", launch.replica_id,
            "--port", "0",
            "--port-file", str(run_dir / "port"),
            "--status-file", str(run_dir / "status.json"),
            "--grace-s", str(max(self._grace_s, timeout + 5.0)),
            "--cache-dir", str(self._cache_dir(launch)),
            "--secret-file", str(ensured_secret_file(self._home)),
        )  # fmt: skip

    async def start_replica(
        self, launch: ReplicaLaunch, placement: RayPlacement | None = None
    ) -> ProcessIdentity | None:
        """Create the replica's actor (pinned to ``placement``'s node when given). No local process: None."""
        run_dir = self._home / "run" / "replicas" / launch.replica_id
        compute = launch.config.get("compute", {})
        fraction = gpu_memory_fraction(
            float(compute.get("gpu", 0) or 0),
            compute.get("gpu_mem"),
            placement.gpu_mem_bytes if placement is not None else 0,
        )
        spec = ReplicaProcessSpec(
            args=self._args(launch, run_dir),
            run_dir=str(run_dir),
            spec_json=orjson.dumps(launch.config),
            cwd=launch.project_dir,
            log_path=str(self.log_path(launch.api, launch.replica_id)),
            env={**launch.env, "THRIFTY_API": launch.api, "THRIFTY_REPLICA_ID": launch.replica_id},
            gpu_memory_fraction=fraction,
            scratch_dirs=[str(self._cache_dir(launch))],
        )
        actor = self._remote_host.options(**actor_options(launch, placement)).remote(spec, self._host)
        node_id = placement.node_id if placement is not None else None
        rep = _Replica(launch, actor, time.time(), node_id)
        self._replicas[launch.replica_id] = rep
        self._watch(rep)
        return None

    def adopt(self, replica_id: str, api: str, revision: str, started_s: float) -> bool:
        """Take over the named actor a previous operator started; False when it is gone."""
        try:
            actor = ray.get_actor(actor_name(replica_id), namespace=NAMESPACE)
        except ValueError:
            return False
        launch = ReplicaLaunch(replica_id=replica_id, api=api, revision=revision, config={}, project_dir="")
        rep = _Replica(launch, actor, started_s, None)
        self._replicas[replica_id] = rep
        self._watch(rep)
        return True

    def _watch(self, rep: _Replica) -> None:
        rep.watcher = asyncio.get_running_loop().create_task(self._watch_forever(rep))

    async def _watch_forever(self, rep: _Replica) -> None:
        """Ask the actor for its status every ``poll_interval_s`` until it has ended.

        One task per replica: an actor still waiting for room on its node (its first answer comes when it
        is scheduled) delays no other replica's observation.
        """
        while not rep.done and rep.died is None:
            try:
                status = await rep.actor.status.remote()
            except RayError as exc:  # the actor died, its node did, or it could never be scheduled
                rep.died = _death_message(exc)
                rep.preempted = bool(getattr(exc, "preempted", False))
                rep.done = rep.stop_requested
                return
            rep.status = status
            rep.node_id = status.get("node_id") or rep.node_id
            if rep.stop_requested and status.get("exit_code") is not None:
                rep.done = True
                _release(rep.actor)
                return
            await asyncio.sleep(self._poll_s)

    async def stop_replica(self, replica_id: str, grace_s: float) -> None:
        rep = self._replicas.get(replica_id)
        if rep is None or rep.stop_requested:
            return
        rep.stop_requested = True
        if rep.died is not None:
            rep.done = True
        elif rep.status is None:
            # Not started yet (e.g. still waiting for room on its node): nothing to drain.
            rep.done = True
            ray.kill(rep.actor)
        else:
            # Not awaited: the watcher sees the process exit (or the actor die) and releases the actor.
            rep.actor.begin_stop.remote(grace_s)

    def observe(self) -> list[ReplicaObservation]:
        out: list[ReplicaObservation] = []
        for rid, rep in list(self._replicas.items()):
            if rep.done:
                del self._replicas[rid]  # asked to stop and did: nothing left to report
                continue
            st = rep.status or {}
            base = ReplicaObservation(
                replica_id=rid,
                api=rep.launch.api,
                revision=rep.launch.revision,
                state="starting",
                started_s=rep.started_s,
                host=st.get("host") or "127.0.0.1",
                port=st.get("port"),
                pid=st.get("pid"),
                log_path=str(self.log_path(rep.launch.api, rid)),
            )
            if rep.died is not None:
                error = {
                    "error": ACTOR_DIED,
                    "message": rep.died,
                    "where": rep.node_id or "",
                    "traceback": "",
                    "preempted": rep.preempted,
                }
                out.append(replace(base, state="exited", exit_code=UNKNOWN_EXIT_CODE, error=error))
            elif st.get("exit_code") is not None:
                out.append(replace(base, state="exited", exit_code=st["exit_code"], error=st.get("error")))
            elif rep.stop_requested:
                out.append(replace(base, state="stopping"))
            elif st.get("ready") and st.get("port") is not None:
                out.append(replace(base, state="ready"))
            else:
                out.append(base)
        return out

    def node_of(self, replica_id: str) -> str | None:
        """The Ray node the replica runs on (as its actor reports it), if known."""
        rep = self._replicas.get(replica_id)
        return rep.node_id if rep is not None else None

    def forget(self, replica_id: str) -> None:
        rep = self._replicas.pop(replica_id, None)
        if rep is None:
            return
        if rep.watcher is not None:
            rep.watcher.cancel()
        if rep.died is None:
            _release(rep.actor)  # the process has exited: give back what its actor reserves

    async def close(self, grace_s: float) -> None:
        """Stop every replica (drain up to ``grace_s``), then kill the actors that are left."""
        for rid in list(self._replicas):
            await self.stop_replica(rid, grace_s)
        watchers = [r.watcher for r in self._replicas.values() if r.watcher is not None]
        if watchers:
            await asyncio.wait(watchers, timeout=grace_s + 5.0)
        for rep in self._replicas.values():
            if rep.watcher is not None:
                rep.watcher.cancel()
            if not rep.done and rep.died is None:
                ray.kill(rep.actor)  # past its grace: the replica goes with it (PDEATHSIG)
        self._replicas.clear()
