"""A child process started by the platform, with its log file, its identity, and a stop that escalates to SIGKILL.

Each child leads its own session (so its process group is its pid): Ctrl-C in the operator's terminal
reaches only the operator, which drains children in order, and a later operator can stop a child
together with anything it spawned (``identity.signal_group``). Each child carries a random token in
its environment; with its pid and start time it makes the identity recorded in the store, by which
an operator started after a crash adopts it (``identity.ProcessIdentity``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from thrifty.engines.identity import TOKEN_ENV, ProcessIdentity, stop_with_grace


class ChildProcess:
    def __init__(self, args: list[str], *, log_path: Path, env: dict[str, str], cwd: str | None = None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.token = secrets.token_hex(16)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, TOKEN_ENV: self.token},
                cwd=cwd,
                start_new_session=True,
            )
        self.stop_requested = False
        # Read at once: the start time is the fork's, so it is right even before the child has exec'd.
        self.identity = ProcessIdentity.of(self.popen.pid, self.token)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        self.stop_requested = True
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    async def wait(self, timeout_s: float) -> int | None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.popen.poll() is None:
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return self.popen.returncode

    async def stop(self, grace_s: float) -> int:
        """SIGTERM, wait up to ``grace_s`` for a graceful exit, then SIGKILL."""
        return await stop_with_grace(self, grace_s)


def python_module_args(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
