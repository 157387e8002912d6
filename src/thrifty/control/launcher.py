"""Start and stop the local platform (the operator process, which starts the gateway and replicas).

``stop`` works whether or not the operator is alive: a live operator drains and stops what it runs; then
anything a crashed operator left running (recorded in the store, or found by command line) is stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from thrifty.client import Client, read_operator_file
from thrifty.control.home import Home
from thrifty.control.recovery import sweep
from thrifty.errors import PlatformAlreadyRunningError, PlatformNotRunningError, ThriftyError

OPERATOR_MODULE = "thrifty.control.main"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def running_pid(home: Home) -> int | None:
    info = read_operator_file(home)
    if info is None:
        return None
    pid = int(info.get("pid", 0))
    return pid if pid and pid_alive(pid) else None


def operator_args(home: Home, host: str, port: int, cluster: Path | None = None) -> list[str]:
    args = [sys.executable, "-m", OPERATOR_MODULE, "--home", str(home.root), "--host", host, "--port", str(port)]
    return [*args, "--cluster", str(cluster)] if cluster is not None else args


def start(
    home: Home, *, host: str, port: int, detach: bool, timeout_s: float = 60.0, cluster: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the operator and wait until its admin API answers."""
    home.ensure()
    pid = running_pid(home)
    if pid is not None:
        raise PlatformAlreadyRunningError(f"a thrifty platform is already running for {home.root} (pid {pid})")
    home.operator_file.unlink(missing_ok=True)
    log_offset = home.operator_log.stat().st_size if home.operator_log.exists() else 0
    log = open(home.operator_log, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            operator_args(home, host, port, cluster),
            stdin=subprocess.DEVNULL,
            stdout=log if detach else None,
            stderr=log if detach else None,
            start_new_session=detach,
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            reason = _last_error(home, log_offset) if detach else None
            why = f": {reason}" if reason else ""
            raise ThriftyError(f"the operator exited with code {code} while starting{why}; see {home.operator_log}")
        if read_operator_file(home) is not None:
            try:
                with Client(home.root, timeout_s=2.0) as client:
                    client.status()
                return proc
            except PlatformNotRunningError:
                pass
        if time.monotonic() > deadline:
            proc.kill()
            raise ThriftyError(f"the operator did not start within {timeout_s:.0f}s; see {home.operator_log}")
        time.sleep(0.1)


def _last_error(home: Home, offset: int) -> str | None:
    """The last ERROR line the operator logged since ``offset`` (why it could not start), without its prefix."""
    try:
        with open(home.operator_log, "rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line for line in lines if " ERROR " in line]
    return errors[-1].split(": ", 1)[-1] if errors else None


def stop(home: Home, *, timeout_s: float = 180.0) -> int:
    """Stop the platform; returns how many processes were running (0: nothing was).

    A live operator is asked to drain and stop. Then whatever is left (everything, when the operator had
    crashed) is stopped by ``recovery.sweep``: SIGTERM, a drain, SIGKILL.
    """
    pid = running_pid(home)
    stopped = 0
    if pid is not None:
        _stop_operator(home, pid, timeout_s)
        stopped = 1
    home.operator_file.unlink(missing_ok=True)
    return stopped + sweep(home)


def _stop_operator(home: Home, pid: int, timeout_s: float) -> None:
    try:
        with Client(home.root, timeout_s=5.0) as client:
            client.shutdown()
    except ThriftyError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
