"""What runs inside a replica's Ray actor: it owns the replica server process and reports on it.

The actor holds the replica's CPU, memory and GPU share in Ray's accounting; the process does the work.
The process is started from a thread that lives exactly as long as it does, with ``PR_SET_PDEATHSIG``:
when the actor dies (killed, or its node lost) the kernel kills the replica too, so nothing outlives the
reservation that paid for it. It leads its own process group (its predictor's subprocesses stop with it)
but stays in the node's session, so stopping a simulated node stops its replicas.

This module must import nothing of Ray at module level: the engine wraps ``ReplicaHost`` with
``ray.remote`` itself, and the class is pickled by reference (thrifty is installed on every node).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thrifty.engines.gpu_limits import GPU_MEMORY_FRACTION_ENV
from thrifty.engines.replica_files import read_port, read_status

_PR_SET_PDEATHSIG = 1


def _prepare_child() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # Ray runs its workers at nice 15 (its `worker_niceness`); the replica is the node's real work, so it
    # runs at the normal priority where it may (raising priority needs CAP_SYS_NICE on a foreign cluster).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


@dataclass(frozen=True)
class ReplicaProcessSpec:
    """Everything the actor needs to start the replica server; paths are on the actor's node."""

    args: list[str]  # python -m thrifty.dataplane.replica_main ... (spec, port and status files in run_dir)
    run_dir: str
    spec_json: bytes  # written to run_dir/spec.json before the start
    cwd: str
    log_path: str
    env: dict[str, str] = field(default_factory=dict)
    gpu_memory_fraction: float | None = None
    scratch_dirs: list[str] = field(default_factory=list)  # removed with the replica (its model cache)


def _gpu_ids() -> list[str]:
    import ray  # only ever called inside the actor

    return [str(i) for i in ray.get_gpu_ids()]


class ReplicaHost:
    def __init__(self, spec: ReplicaProcessSpec, host: str | None) -> None:
        import ray

        api: Any = ray  # get_node_ip_address is untyped
        self._spec = spec
        self._run_dir = Path(spec.run_dir)
        self._run_dir.mkdir(parents=True, exist_ok=True)
        (self._run_dir / "spec.json").write_bytes(spec.spec_json)
        for stale in ("port", "status.json"):
            (self._run_dir / stale).unlink(missing_ok=True)
        self._host = host or str(api.util.get_node_ip_address())
        self._node_id = str(ray.get_runtime_context().get_node_id())
        self._gpu_ids = _gpu_ids()
        env = dict(os.environ)
        env.update(spec.env)
        # Only the GPUs Ray gave this actor (none: none at all); Ray sets it too, this makes it explicit.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self._gpu_ids)
        if spec.gpu_memory_fraction is not None and self._gpu_ids:
            env[GPU_MEMORY_FRACTION_ENV] = f"{spec.gpu_memory_fraction:.6g}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        args = [*spec.args, "--host", self._host]
        self._popen: subprocess.Popen[bytes] | None = None
        self._start_error: str | None = None
        self._exit_code: int | None = None
        self._stop_requested = False
        started = threading.Event()

        def own() -> None:
            try:
                Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
                with open(spec.log_path, "ab") as log:
                    self._popen = subprocess.Popen(
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=spec.cwd,
                        process_group=0,
                        preexec_fn=_prepare_child,
                    )
            except OSError as exc:
                self._start_error = f"{type(exc).__name__}: {exc}"
                return
            finally:
                started.set()
            # PDEATHSIG follows the thread that forked: this one, which lives until the process has exited.
            self._exit_code = self._popen.wait()

        threading.Thread(target=own, name="replica-owner", daemon=True).start()
        started.wait()

    def status(self) -> dict[str, Any]:
        """The replica's state as the engine reports it: host, port, pid, ready, exit code, its error."""
        out: dict[str, Any] = {
            "host": self._host,
            "node_id": self._node_id,
            "gpu_ids": self._gpu_ids,
            "pid": self._popen.pid if self._popen is not None else None,
            "port": read_port(self._run_dir / "port"),
            "ready": False,
            "exit_code": self._exit_code,
            "error": None,
        }
        if self._start_error is not None:
            out["exit_code"] = -1
            out["error"] = {"error": "replica_start_failed", "message": self._start_error, "where": "", "traceback": ""}
            return out
        status = read_status(self._run_dir / "status.json")
        if status is not None:
            out["ready"] = bool(status.get("ready"))
            if "error" in status:
                out["error"] = status
        return out

    def begin_stop(self, grace_s: float) -> None:
        """SIGTERM (the replica drains), then SIGKILL after ``grace_s`` if it is still there."""
        if self._popen is None or self._stop_requested:
            return
        self._stop_requested = True
        self._signal(signal.SIGTERM)
        timer = threading.Timer(grace_s, self._signal, (signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def _signal(self, sig: signal.Signals) -> None:
        if self._popen is None or self._exit_code is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def remove_files(self) -> None:
        """The run folder and model cache go with the replica (its log stays, for ``thrifty logs``)."""
        for folder in (self._run_dir, *map(Path, self._spec.scratch_dirs)):
            shutil.rmtree(folder, ignore_errors=True)
