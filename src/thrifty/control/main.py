"""The operator process: `python -m thrifty.control.main --home DIR` (started by `thrifty up` / `thrifty run`).

It owns the platform: writes the admin token, starts the gateway, restores deployed APIs from SQLite
(stopping any process a crashed predecessor left behind), serves the admin API on loopback, and on
SIGTERM/SIGINT or `thrifty down` drains and stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path

import orjson

from thrifty.control.admin import MAX_UPLOAD_BYTES, UNAUTHORIZED_BODY_BYTES, AdminApi
from thrifty.control.gateway_link import GatewayLink
from thrifty.control.home import Home
from thrifty.control.launcher import pid_alive
from thrifty.control.operator import Operator
from thrifty.control.store import Store
from thrifty.dataplane.http_messages import Request, Response
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.process_io import run_main, write_atomic
from thrifty.engines.local import LocalEngine
from thrifty.errors import PlatformAlreadyRunningError, ThriftyError

log = logging.getLogger("thrifty.operator")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


async def reap_leftovers(store: Store, home: Home) -> None:
    """Stop processes that a crashed operator started (checked by command line, so a reused pid is safe)."""
    victims = []
    gateway_mark = str(home.run_dir / "gateway.json")  # the gateway's --port-file names this home
    for proc_id, kind, _api, pid in store.processes():
        cmd = _cmdline(pid)
        ours = proc_id in cmd if kind == "replica" else gateway_mark in cmd
        if pid_alive(pid) and "thrifty.dataplane" in cmd and ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            victims.append(pid)
            log.warning("stopping %s %s (pid %d) left by a previous operator", kind, proc_id, pid)
        store.delete_process(proc_id)
    deadline = time.monotonic() + 10
    while victims and time.monotonic() < deadline:
        victims = [p for p in victims if pid_alive(p)]
        await asyncio.sleep(0.05)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _write_operator_file(home: Home, admin_port: int, gateway: GatewayLink) -> None:
    info = {
        "pid": os.getpid(),
        "admin_port": admin_port,
        "gateway_host": gateway.host if gateway.host not in ("0.0.0.0", "::") else "127.0.0.1",
        "gateway_port": gateway.port,
        "started": time.time(),
    }
    write_atomic(home.operator_file, orjson.dumps(info))


class _AdminApp:
    """Adapts the admin API to the lean HTTP core."""

    def __init__(self, admin: AdminApi) -> None:
        self._admin = admin

    def body_limit(self, request: Request) -> int:
        authorization = request.headers.get(b"authorization", b"").decode("latin-1")
        return MAX_UPLOAD_BYTES if self._admin.authorized(authorization) else UNAUTHORIZED_BODY_BYTES

    async def handle(self, req: Request) -> Response:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in req.headers.items()}
        out = await self._admin.handle(req.method.decode(), req.path.decode(), req.query.decode(), headers, req.body)
        return Response(out.status, out.body, out.content_type.encode())


def _lock_home(home: Home) -> int:
    """One operator per home: an exclusive lock held for the operator's whole life (released at exit)."""
    fd = os.open(home.root / "operator.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PlatformAlreadyRunningError(f"another operator is running for {home.root}") from None
    return fd


async def serve(home: Home, host: str, port: int) -> None:
    home.ensure()
    lock_fd = _lock_home(home)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # from the start: a Ctrl-C during start-up still cleans up
        loop.add_signal_handler(sig, stop.set)
    token = home.new_token()
    store = Store(home.db_path)
    await reap_leftovers(store, home)
    engine = LocalEngine(home.root)
    gateway = GatewayLink(
        run_dir=home.run_dir, log_path=home.logs_dir / "gateway.log", token_path=home.token_path, host=host, port=port
    )
    await gateway.start()
    operator = Operator(home, store, engine, gateway)
    operator.record_gateway()
    admin = AdminApi(operator, token, on_shutdown=stop.set)

    server = HttpServer(_AdminApp(admin), host="127.0.0.1", port=0)
    await server.start()
    await operator.start()
    _write_operator_file(home, server.port, gateway)
    log.info("operator ready: admin 127.0.0.1:%d, gateway %s", server.port, gateway.url)
    try:
        await stop.wait()
        log.info("shutting down: draining replicas")
    finally:
        try:
            await operator.stop()
            await server.stop(5.0)
            store.delete_process("gateway")
            store.close()
        finally:
            home.operator_file.unlink(missing_ok=True)  # last: until here `thrifty up` must see us running
            os.close(lock_fd)
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="thrifty-operator")
    parser.add_argument("--home", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        run_main(serve(Home(Path(args.home)), args.host, args.port))
    except ThriftyError as exc:
        log.error("%s", exc.message)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
