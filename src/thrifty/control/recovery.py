"""What a crashed operator left behind: which processes to adopt, which to stop, who holds a port.

The operator records every process it starts in the store with its identity (pid + start time + token,
see ``thrifty.engines.identity``). After a crash:

- ``thrifty up`` adopts the recorded gateway and replicas that still match their identity (they keep
  serving: no restart, no failed request) and stops the rest: records that match nothing are dropped, and
  *stragglers* (platform processes of this home that are not recorded, e.g. started a moment before the
  crash) are stopped;
- ``thrifty down`` with no operator running stops all of them (``sweep``).

Stragglers are found by command line: every gateway and replica names a file under ``<home>/run/``.
A process is signalled only after its start time was checked again, so a reused pid is never hit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from thrifty.control.home import Home
from thrifty.control.store import ProcessRecord, Store
from thrifty.engines.identity import PROC, ProcessIdentity, cmdline, environ_token, start_ticks, stop_processes
from thrifty.errors import ThriftyError

DATAPLANE_MARK = "thrifty.dataplane."
SWEEP_GRACE_S = 60.0  # replicas drain (up to their request_timeout) before they are killed


class PortInUseError(ThriftyError):
    code = "port_in_use"


@dataclass
class Survey:
    """The store's process records, sorted: what still runs as recorded, and what does not."""

    gateway: ProcessRecord | None = None
    replicas: list[ProcessRecord] = field(default_factory=list)
    gone: list[ProcessRecord] = field(default_factory=list)  # dead, reused pid, or no identity recorded


def survey(records: list[ProcessRecord], proc: Path = PROC) -> Survey:
    out = Survey()
    for record in records:
        ident = record.identity
        if ident is None or not ident.matches(proc):
            out.gone.append(record)
        elif record.kind == "gateway":
            out.gateway = record
        elif record.kind == "replica" and record.api and record.revision:
            out.replicas.append(record)
        else:
            out.gone.append(record)
    return out


def _marks(home: Home) -> tuple[str, ...]:
    run = str(home.run_dir)
    resolved = str(home.run_dir.resolve())
    return tuple({run + "/", resolved + "/"})


def belongs_to(cmd: str, home: Home) -> bool:
    """A gateway or replica of this home (each names a file under ``<home>/run/`` on its command line)."""
    return DATAPLANE_MARK in cmd and any(mark in cmd for mark in _marks(home))


def stragglers(home: Home, exclude: set[int], proc: Path = PROC) -> list[ProcessIdentity]:
    """Live gateway and replica processes of this home, other than the pids in ``exclude``."""
    out = []
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in exclude or pid == me:
            continue
        ticks = start_ticks(pid, proc)
        if ticks is not None and belongs_to(cmdline(pid, proc), home):
            out.append(ProcessIdentity(pid, ticks, environ_token(pid, proc) or ""))
    return out


def remove_run_files(home: Home, keep: set[str]) -> None:
    """Remove the run folders of replicas that are gone (all but ``keep``)."""
    if home.replicas_run_dir.is_dir():
        for folder in home.replicas_run_dir.iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)


def sweep(home: Home, grace_s: float = SWEEP_GRACE_S) -> int:
    """Stop every process this home's platform left running, with no operator alive; returns how many.

    Takes the home's lock first (so no operator starts meanwhile); raises PlatformAlreadyRunningError when
    an operator holds it.
    """
    if not home.root.is_dir():
        return 0
    lock_fd = home.lock()
    try:
        recorded: list[ProcessIdentity] = []
        if home.db_path.exists():
            store = Store(home.db_path)
            try:
                for record in store.processes():
                    if record.identity is not None and record.identity.matches():
                        recorded.append(record.identity)
                    store.delete_process(record.id)
            finally:
                store.close()
        victims = recorded + stragglers(home, {i.pid for i in recorded})
        stop_processes(victims, grace_s)
        remove_run_files(home, keep=set())
        home.gateway_file.unlink(missing_ok=True)
        home.operator_file.unlink(missing_ok=True)
        return len(victims)
    finally:
        os.close(lock_fd)


# Who holds a port ---------------------------------------------------------------------------------------
def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    return inodes


def port_holder(port: int, proc: Path = PROC) -> int | None:
    """The pid of a process listening on ``port`` (any address), if one is visible to us."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port, proc)}
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    return int(entry.name)
            except OSError:
                continue
    return None


def describe_holder(pid: int, proc: Path = PROC) -> str:
    """'thrifty gateway of HOME' for a gateway (found by its --port-file), else its command line."""
    args = cmdline(pid, proc).split()
    if any(a.endswith("thrifty.dataplane.gateway_main") for a in args) and "--port-file" in args:
        i = args.index("--port-file")
        if i + 1 < len(args):
            return f"thrifty gateway of {Path(args[i + 1]).parent.parent}"
    text = " ".join(args)
    return text[:80] + ("..." if len(text) > 80 else "") if text else "unknown program"


def check_port_free(port: int, proc: Path = PROC) -> None:
    """Raise PortInUseError, naming the holder and how to stop it, when something listens on ``port``."""
    if port == 0 or not _listening_inodes(port, proc):
        return
    holder = port_holder(port, proc)
    if holder is None:
        raise PortInUseError(f"port {port} is in use by a process of another user; choose another port with --port")
    what = describe_holder(holder, proc)
    if what.startswith("thrifty gateway of "):
        how = f"run `thrifty --home {what.removeprefix('thrifty gateway of ')} down` or kill {holder}"
    else:
        how = f"stop it (kill {holder}) or choose another port with --port"
    raise PortInUseError(f"port {port} is held by pid {holder} ({what}); {how}")
