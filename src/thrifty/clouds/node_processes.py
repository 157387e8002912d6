"""The processes of a simulated node: everything in the session its ``ray start`` leads.

``ray start --block`` starts the raylet and Ray's agents, the raylet starts the actor workers, and each
actor starts its replica (own process group, same session): one session holds the whole "machine". Ending
every process of that session is what an instance being terminated or reclaimed looks like to the rest of
the cluster (``ray stop`` would end every Ray process on this machine, other clusters' too).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

PROC = Path("/proc")


def session_members(sid: int, proc: Path = PROC) -> list[int]:
    """Pids of the live processes whose session id is ``sid`` (zombies left out)."""
    out = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # fields[0] is the state (field 3); fields[3] is the session id (field 6).
        if len(fields) > 3 and fields[0] not in ("Z", "X") and fields[3] == str(sid):
            out.append(int(entry.name))
    return out


def kill_session(sid: int, sig: signal.Signals = signal.SIGKILL, proc: Path = PROC) -> int:
    """Send ``sig`` to every process of the session; how many there were."""
    members = session_members(sid, proc)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    return len(members)
