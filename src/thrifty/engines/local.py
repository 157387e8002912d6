"""The local engine: each replica is a subprocess on this machine, bound to a loopback port.

A replica's files live in ``run/replicas/<id>/`` (spec, port, status) and are removed when it ends. After
an operator crash the next operator ``adopt``s the replicas still running: they are not its children, so
they are observed by identity (pid + start time) and their port/status files, and stopped by signal.
``remove_stale_files`` then removes the run folders and model caches of replicas that are gone.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from thrifty.dataplane.platform_secret import ensured_secret_file
from thrifty.engines.base import ReplicaLaunch, ReplicaObservation
from thrifty.engines.identity import AdoptedProcess, ProcessIdentity
from thrifty.engines.process import ChildProcess, child_env, python_module_args
from thrifty.engines.replica_files import read_port, read_status

REPLICA_MODULE = "thrifty.dataplane.replica_main"
KEEP_LOGS_PER_API = 20  # log files of replicas that are gone


@dataclass
class _Replica:
    launch: ReplicaLaunch
    proc: ChildProcess | AdoptedProcess
    run_dir: Path
    started_s: float
    port: int | None = None
    ready: bool = False
    stop_task: asyncio.Task[int] | None = None


class LocalEngine:
    def __init__(self, home: Path, *, host: str = "127.0.0.1", default_grace_s: float = 30.0) -> None:
        self._home = home
        self._host = host
        self._grace_s = default_grace_s
        self._replicas: dict[str, _Replica] = {}

    def log_path(self, api: str, replica_id: str) -> Path:
        return self._home / "logs" / api / f"{replica_id}.log"

    @property
    def replicas_dir(self) -> Path:
        return self._home / "run" / "replicas"

    async def start_replica(self, launch: ReplicaLaunch) -> ProcessIdentity | None:
        run_dir = self.replicas_dir / launch.replica_id
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_file = run_dir / "spec.json"
        spec_file.write_bytes(orjson.dumps(launch.config))
        for stale in ("port", "status.json"):
            (run_dir / stale).unlink(missing_ok=True)
        args = python_module_args(
            REPLICA_MODULE,
            "--spec", str(spec_file),
            "--project-dir", launch.project_dir,
            "--replica-id", launch.replica_id,
            "--host", self._host,
            "--port", "0",
            "--port-file", str(run_dir / "port"),
            "--status-file", str(run_dir / "status.json"),
            "--grace-s", str(self._replica_grace_s(launch)),
            "--cache-dir", str(self._home / "cache" / launch.api / launch.replica_id),  # multi-model APIs
            "--secret-file", str(ensured_secret_file(self._home)),  # the replica answers the gateway only
        )  # fmt: skip
        env = child_env({**launch.env, "THRIFTY_API": launch.api, "THRIFTY_REPLICA_ID": launch.replica_id})
        proc = ChildProcess(
            args, log_path=self.log_path(launch.api, launch.replica_id), env=env, cwd=launch.project_dir
        )
        self._replicas[launch.replica_id] = _Replica(launch, proc, run_dir, time.time())
        return proc.identity

    def adopt(self, replica_id: str, api: str, revision: str, identity: ProcessIdentity, started_s: float) -> None:
        """Take over a replica a previous operator started (the caller checked ``identity.matches()``)."""
        launch = ReplicaLaunch(replica_id=replica_id, api=api, revision=revision, config={}, project_dir="")
        proc = AdoptedProcess(identity, log_path=self.log_path(api, replica_id))
        self._replicas[replica_id] = _Replica(launch, proc, self.replicas_dir / replica_id, started_s)

    def remove_stale_files(self) -> list[str]:
        """Remove the run folders and model caches of replicas this engine does not know (they are gone)."""
        removed = []
        if self.replicas_dir.is_dir():
            for folder in self.replicas_dir.iterdir():
                if folder.name not in self._replicas:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder.name)
        cache = self._home / "cache"
        if cache.is_dir():
            for folder in cache.glob("*/*"):
                if folder.is_dir() and folder.name not in self._replicas:
                    shutil.rmtree(folder, ignore_errors=True)
        return removed

    def _replica_grace_s(self, launch: ReplicaLaunch) -> float:
        """The replica's own drain: long enough for its longest allowed request."""
        timeout = float(launch.config.get("serving", {}).get("request_timeout", 0))
        return max(self._grace_s, timeout + 5.0)

    async def stop_replica(self, replica_id: str, grace_s: float) -> None:
        rep = self._replicas.get(replica_id)
        if rep is None or rep.stop_task is not None:
            return
        rep.stop_task = asyncio.create_task(rep.proc.stop(grace_s))

    def observe(self) -> list[ReplicaObservation]:
        out: list[ReplicaObservation] = []
        for rid, rep in list(self._replicas.items()):
            code = rep.proc.poll()
            if code is not None and rep.proc.stop_requested:
                self._cleanup(rid)  # asked to stop and did: nothing left to report
                continue
            if rep.port is None:
                rep.port = read_port(rep.run_dir / "port")
            status = None
            if not rep.ready or code is not None:
                status = read_status(rep.run_dir / "status.json")
                if status is not None and status.get("ready"):
                    rep.ready = True
            base = ReplicaObservation(
                replica_id=rid,
                api=rep.launch.api,
                revision=rep.launch.revision,
                state="starting",
                started_s=rep.started_s,
                host=self._host,
                port=rep.port,
                pid=rep.proc.pid,
                log_path=str(rep.proc.log_path),
            )
            if code is not None:
                error = status if status is not None and "error" in status else None
                out.append(replace(base, state="exited", exit_code=code, error=error))
            elif rep.proc.stop_requested:
                out.append(replace(base, state="stopping"))
            elif rep.ready and rep.port is not None:
                out.append(replace(base, state="ready"))
            else:
                out.append(base)
        return out

    def forget(self, replica_id: str) -> None:
        self._cleanup(replica_id)

    def _cleanup(self, replica_id: str) -> None:
        rep = self._replicas.pop(replica_id, None)
        if rep is None:
            return
        shutil.rmtree(rep.run_dir, ignore_errors=True)
        # A replica's model cache dies with it (a new replica starts its own); its log is kept for
        # `thrifty logs`, the newest few per API.
        shutil.rmtree(self._home / "cache" / rep.launch.api / replica_id, ignore_errors=True)
        self._prune_logs(rep.launch.api)

    def _prune_logs(self, api: str) -> None:
        logs = sorted((self._home / "logs" / api).glob("*.log"), key=lambda p: p.stat().st_mtime)
        live = {f"{rid}.log" for rid in self._replicas}
        for old in [p for p in logs if p.name not in live][:-KEEP_LOGS_PER_API]:
            old.unlink(missing_ok=True)

    def pids(self) -> dict[str, int]:
        return {rid: rep.proc.pid for rid, rep in self._replicas.items()}

    async def close(self, grace_s: float) -> None:
        for rid in list(self._replicas):
            await self.stop_replica(rid, grace_s)
        tasks = [rep.stop_task for rep in self._replicas.values() if rep.stop_task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.observe()
