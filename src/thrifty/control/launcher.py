"""Start and stop the local platform (the operator process, which starts the gateway and replicas)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from thrifty.client import Client, read_operator_file
from thrifty.control.home import Home
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


def operator_args(home: Home, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", OPERATOR_MODULE, "--home", str(home.root), "--host", host, "--port", str(port)]


def start(home: Home, *, host: str, port: int, detach: bool, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """Start the operator and wait until its admin API answers."""
    home.ensure()
    pid = running_pid(home)
    if pid is not None:
        raise PlatformAlreadyRunningError(f"a thrifty platform is already running for {home.root} (pid {pid})")
    home.operator_file.unlink(missing_ok=True)
    log = open(home.operator_log, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            operator_args(home, host, port),
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
            raise ThriftyError(f"the operator exited with code {code} while starting; see {home.operator_log}")
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


def stop(home: Home, *, timeout_s: float = 180.0) -> bool:
    """Ask the operator to drain and stop; returns False when nothing was running."""
    pid = running_pid(home)
    if pid is None:
        home.operator_file.unlink(missing_ok=True)
        return False
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
    return True
