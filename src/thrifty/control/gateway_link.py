"""The operator's handle on the gateway process: start it, push the routing table, read its counters.

The gateway saves each pushed table in ``run/gateway-routes.json`` and a restarted gateway loads it before it
listens, so it routes at once. Its counters restart from zero with each process (a new ``boot_id``):
``stats`` carries them over (``traffic.CounterCarry``), so they stay cumulative for the operator.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

import httpx
import orjson

from thrifty.control.traffic import CounterCarry
from thrifty.engines.identity import AdoptedProcess, ProcessIdentity
from thrifty.engines.process import ChildProcess, child_env, python_module_args
from thrifty.errors import ThriftyError

GATEWAY_MODULE = "thrifty.dataplane.gateway_main"


class Gateway(Protocol):
    """What the operator needs from the gateway (GatewayLink runs the real process; tests use a fake)."""

    generation: int

    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def identity(self) -> ProcessIdentity | None: ...

    def alive(self) -> bool: ...

    async def start(self, timeout_s: float = 20.0) -> None: ...

    async def push_routes(self, table: dict[str, Any]) -> None: ...

    async def stats(self) -> dict[str, Any]: ...

    async def stop(self, grace_s: float) -> None: ...


class GatewayStartError(ThriftyError):
    code = "gateway_start_failed"


class GatewayLink:
    def __init__(
        self, *, run_dir: Path, log_path: Path, token_path: Path, host: str, port: int, secret_path: Path | None = None
    ) -> None:
        self._run_dir = run_dir
        self._secret_path = secret_path  # the platform secret the gateway shows replicas
        self._log_path = log_path
        self._token_path = token_path
        self.host = host
        self.port = port
        self.admin_port: int | None = None
        self.proc: ChildProcess | AdoptedProcess | None = None
        self._client: httpx.AsyncClient | None = None
        self.generation = 0  # bumped at each (re)start: the routes must be pushed again
        self.routes_path = run_dir / "gateway-routes.json"
        self._counters = CounterCarry()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def identity(self) -> ProcessIdentity | None:
        """pid + start time + token, recorded in the store so that a later operator can adopt the gateway."""
        return self.proc.identity if self.proc is not None else None

    def adopt(self, identity: ProcessIdentity) -> None:
        """Take over a gateway a crashed operator started (still serving): its ports come from its port file."""
        info = orjson.loads((self._run_dir / "gateway.json").read_bytes())
        self.proc = AdoptedProcess(identity, log_path=self._log_path)
        self._connect(info)

    async def start(self, timeout_s: float = 20.0) -> None:
        port_file = self._run_dir / "gateway.json"
        port_file.unlink(missing_ok=True)
        args = python_module_args(
            GATEWAY_MODULE,
            "--host", self.host,
            "--port", str(self.port),
            "--admin-port", "0",
            "--port-file", str(port_file),
            "--token-file", str(self._token_path),
            "--routes-file", str(self.routes_path),
            *(("--secret-file", str(self._secret_path)) if self._secret_path is not None else ()),
        )  # fmt: skip
        self.proc = ChildProcess(args, log_path=self._log_path, env=child_env({}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self._log_tail()
                raise GatewayStartError(
                    f"the gateway exited with code {code} while starting on {self.host}:{self.port}"
                    f" (is the port in use?). Last log lines:\n{tail}"
                )
            try:
                info = orjson.loads(port_file.read_bytes())
                break
            except (OSError, orjson.JSONDecodeError):
                pass
            if loop.time() > deadline:
                self.proc.kill()
                raise GatewayStartError(f"the gateway did not start within {timeout_s:.0f}s; see {self._log_path}")
            await asyncio.sleep(0.05)
        old = self._connect(info)
        if old is not None:  # swapped first: a concurrent stats() never meets a closed client
            await old.aclose()

    def _connect(self, info: dict[str, Any]) -> httpx.AsyncClient | None:
        """Point the admin client at the gateway's ports; returns the previous client, to be closed."""
        self.port = int(info["port"])
        self.admin_port = int(info["admin_port"])
        token = self._token_path.read_text().strip()
        old, self._client = (
            self._client,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{self.admin_port}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5.0,
            ),
        )
        self.generation += 1
        return old

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def push_routes(self, table: dict[str, Any]) -> None:
        if self._client is None:
            return
        resp = await self._client.put("/_thrifty/routes", content=orjson.dumps(table))
        resp.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        if self._client is None:
            return {}
        resp = await self._client.get("/_thrifty/stats")
        resp.raise_for_status()
        data = orjson.loads(resp.content)
        return self._counters.carry(data) if isinstance(data, dict) else {}

    async def stop(self, grace_s: float) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            await self.proc.stop(grace_s)
