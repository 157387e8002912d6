"""A child process started by the platform, with its log file, and a stop that escalates to SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path


class ChildProcess:
    def __init__(self, args: list[str], *, log_path: Path, env: dict[str, str], cwd: str | None = None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            # A new session: Ctrl-C in the terminal reaches only the operator, which drains children in order.
            self.popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.stop_requested = False

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
        self.terminate()
        code = await self.wait(grace_s)
        if code is None:
            self.kill()
            code = await self.wait(5.0)
        return code if code is not None else -9


def python_module_args(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
