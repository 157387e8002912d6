"""Who a process is, beyond its pid: pid + start time + a per-process token.

The OS reuses pids, so a pid recorded by a crashed operator may name an unrelated process by now. A
process started by the platform is known by its pid, its start time (field 22 of ``/proc/<pid>/stat``,
in clock ticks since boot: two processes with the same pid never share it) and a random token the
platform put in its environment (``THRIFTY_PROCESS_TOKEN``). Only a process that matches all three is
adopted or signalled. Linux only, like the local engine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TOKEN_ENV = "THRIFTY_PROCESS_TOKEN"
UNKNOWN_EXIT_CODE = -1  # an adopted process is not our child: its exit code cannot be collected
PROC = Path("/proc")


def start_ticks(pid: int, proc: Path = PROC) -> int | None:
    """The process's start time in clock ticks since boot; None when it is gone or a zombie."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])  # field 22; fields[0] is field 3 (the state)
    except ValueError:
        return None


def environ_token(pid: int, proc: Path = PROC) -> str | None:
    """The token in the process's environment (as it was when it started), if any."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = TOKEN_ENV.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def cmdline(pid: int, proc: Path = PROC) -> str:
    try:
        return (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int
    token: str

    @classmethod
    def of(cls, pid: int, token: str, proc: Path = PROC) -> ProcessIdentity | None:
        """The identity of a live process (read right after it was started); None if it is already gone."""
        ticks = start_ticks(pid, proc)
        return None if ticks is None else cls(pid, ticks, token)

    def alive(self, proc: Path = PROC) -> bool:
        """Still running, and still the same process (a reused pid has another start time)."""
        return start_ticks(self.pid, proc) == self.start_ticks

    def matches(self, proc: Path = PROC) -> bool:
        """Alive and carrying our token: safe to adopt or to signal."""
        return self.alive(proc) and environ_token(self.pid, proc) == self.token


def signal_group(identity: ProcessIdentity, sig: signal.Signals) -> bool:
    """Signal the process and the process group it leads (its own children: a predictor's subprocesses).

    Every platform process leads its own session, so its group is its pid; the identity is checked
    first, so a reused pid is never signalled. Returns False when the process is not ours any more.
    """
    if not identity.alive():
        return False
    try:
        if os.getpgid(identity.pid) == identity.pid:
            os.killpg(identity.pid, sig)
        else:
            os.kill(identity.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def stop_processes(identities: list[ProcessIdentity], grace_s: float, poll_s: float = 0.05) -> None:
    """SIGTERM each (with its group), wait up to ``grace_s`` for all to exit, then SIGKILL the rest.

    Blocking: for the CLI (``thrifty down`` without an operator) and for start-up clean-up.
    """
    live = [i for i in identities if signal_group(i, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = [i for i in live if i.alive()]
        if live:
            time.sleep(poll_s)
    for identity in live:
        signal_group(identity, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while live and time.monotonic() < deadline:
        live = [i for i in live if i.alive()]
        if live:
            time.sleep(poll_s)


class Stoppable(Protocol):
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    async def wait(self, timeout_s: float) -> int | None: ...


async def stop_with_grace(proc: Stoppable, grace_s: float) -> int:
    """SIGTERM, wait up to ``grace_s`` for a graceful exit, then SIGKILL; the exit code (-9 when even that
    was not seen)."""
    proc.terminate()
    code = await proc.wait(grace_s)
    if code is None:
        proc.kill()
        code = await proc.wait(5.0)
    return code if code is not None else -9


class AdoptedProcess:
    """A platform process that a previous operator started: observed by identity, stopped by signal.

    It is not our child, so there is no exit code to collect (``poll`` reports ``UNKNOWN_EXIT_CODE``).
    Same interface as ``ChildProcess`` where the engine and the gateway link use it.
    """

    def __init__(self, identity: ProcessIdentity, *, log_path: Path) -> None:
        self.identity = identity
        self.log_path = log_path
        self.stop_requested = False

    @property
    def pid(self) -> int:
        return self.identity.pid

    def poll(self) -> int | None:
        return None if self.identity.alive() else UNKNOWN_EXIT_CODE

    def terminate(self) -> None:
        self.stop_requested = True
        signal_group(self.identity, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.identity, signal.SIGKILL)

    async def wait(self, timeout_s: float) -> int | None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.identity.alive():
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return UNKNOWN_EXIT_CODE

    async def stop(self, grace_s: float) -> int:
        """SIGTERM, wait up to ``grace_s`` for a graceful exit, then SIGKILL."""
        return await stop_with_grace(self, grace_s)
