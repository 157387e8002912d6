"""The operator process: `python -m thrifty.control.main --home DIR` (started by `thrifty up` / `thrifty run`).

It owns the platform: restores deployed APIs from SQLite, starts the gateway, serves the admin API on
loopback, and on SIGTERM/SIGINT or `thrifty down` drains and stops everything it started. After a crash
(the previous operator was killed) it is crash-only: it *adopts* the gateway and replicas still running
(checked by pid + start time + token, see ``thrifty.control.recovery``), keeping the gateway's port,
routes and admin token, and starts only what is dead or unknown; they keep serving throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import orjson

from thrifty.config.loader import load_cluster
from thrifty.control.admin import MAX_UPLOAD_BYTES, UNAUTHORIZED_BODY_BYTES, AdminApi
from thrifty.control.cluster_setup import build, check_supported
from thrifty.control.gateway_link import GatewayLink
from thrifty.control.home import Home
from thrifty.control.operator import Operator
from thrifty.control.recovery import check_port_free, stragglers, survey
from thrifty.control.store import Store
from thrifty.dataplane.http_messages import Request, Response
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.platform_secret import ensure_secret
from thrifty.dataplane.process_io import run_main, write_atomic
from thrifty.engines.base import Engine
from thrifty.engines.identity import cmdline, stop_processes
from thrifty.engines.local import LocalEngine
from thrifty.errors import ThriftyError

log = logging.getLogger("thrifty.operator")


async def recover(store: Store, home: Home, engine: LocalEngine | None, gateway: GatewayLink, port: int) -> str:
    """Adopt what a crashed predecessor left running and stop the rest; returns the admin token to use.

    Adopted: the recorded gateway and replicas whose identity (pid + start time + token) still matches.
    The gateway keeps its port, routes and admin token (so the token file is kept too). Stopped: recorded
    processes that fail the check are only dropped from the store; unrecorded gateway/replica processes
    of this home are stopped. Then the run folders of gone replicas are removed. ``engine`` None (a cluster
    engine): no replica is adopted. Simulated nodes a crashed operator left are stopped (their Ray head died
    with it), and forgotten with the nodes it had bought.
    """
    nodes = [r.identity for r in store.processes() if r.kind == "node" and r.identity is not None]
    await asyncio.to_thread(stop_processes, [i for i in nodes if i.matches()], 10.0)
    for node in store.nodes():
        store.delete_node(node.id)
    found = survey(store.processes())
    token = home.read_token() if found.gateway is not None else None
    adopted_gateway = None
    if found.gateway is not None and found.gateway.identity is not None and token is not None:
        try:
            gateway.adopt(found.gateway.identity)
            await gateway.stats()  # the admin listener answers with our token: really ours, really alive
            adopted_gateway = found.gateway.identity
            log.info("adopted the running gateway (pid %d) on port %d", adopted_gateway.pid, gateway.port)
            if port not in (0, gateway.port):
                log.warning(
                    "the adopted gateway keeps port %d (not %d): `thrifty down` then `up` to move it",
                    gateway.port,
                    port,
                )
        except (OSError, ValueError, KeyError, httpx.HTTPError) as exc:
            log.warning("could not adopt the gateway (pid %d): %s; starting a new one", found.gateway.identity.pid, exc)
            await gateway.stop(5.0)
    for record in found.gone:
        store.delete_process(record.id)
    keep = set()
    for record in found.replicas:
        if engine is None:
            continue  # a cluster engine's replicas are not local processes: what is left of them is stopped
        if record.identity is not None and record.api is not None and record.revision is not None:  # survey's promise
            engine.adopt(record.id, record.api, record.revision, record.identity, record.started_s)
            keep.add(record.identity.pid)
            log.info("adopted replica %s (pid %d)", record.id, record.identity.pid)
    if adopted_gateway is not None:
        keep.add(adopted_gateway.pid)
    else:
        store.delete_process("gateway")
    leftovers = stragglers(home, keep)
    for ident in leftovers:
        log.warning("stopping pid %d: %s, left by a previous operator", ident.pid, cmdline(ident.pid)[:120])
    await asyncio.to_thread(stop_processes, leftovers, 10.0)
    if engine is not None:
        engine.remove_stale_files()
    if adopted_gateway is not None and token is not None:
        return token
    token = home.new_token()  # before the gateway starts: it reads the token file once
    check_port_free(port)  # a clear message rather than the gateway's bind error
    await gateway.start()
    return token


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


async def serve(home: Home, host: str, port: int, cluster_file: Path | None = None) -> None:
    os.umask(0o077)  # what the platform writes (state, logs, projects, replicas' files) is the owner's only
    home.ensure()
    ensure_secret(home.secret_path)  # kept across restarts: an adopted gateway and replicas still hold it
    lock_fd = home.lock()  # one operator per home, held for the operator's whole life (released at exit)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # from the start: a Ctrl-C during start-up still cleans up
        loop.add_signal_handler(sig, stop.set)
    store = Store(home.db_path)
    try:  # a bad cluster file: a clear error, and nothing has started
        cluster_config = load_cluster(cluster_file) if cluster_file is not None else None
        if cluster_config is not None:
            check_supported(cluster_config, str(cluster_file))
    except BaseException:
        os.close(lock_fd)
        raise
    local = LocalEngine(home.root) if cluster_config is None or cluster_config.engine == "local" else None
    gateway = GatewayLink(
        run_dir=home.run_dir, log_path=home.logs_dir / "gateway.log", token_path=home.token_path, host=host, port=port,
        secret_path=home.secret_path,
    )  # fmt: skip
    try:
        token = await recover(store, home, local, gateway, port)
        setup = None
        if cluster_config is not None:
            setup = await build(cluster_config, home.root, store, time.time)
            log.info("cluster: engine %s, provider %s", cluster_config.engine, cluster_config.provider.value)
    except BaseException:
        await gateway.stop(5.0)
        os.close(lock_fd)
        raise
    engine: Engine = setup.engine if setup is not None else local if local is not None else LocalEngine(home.root)
    operator = Operator(
        home, store, engine, gateway,
        cluster=setup.cluster if setup is not None else None, placing=setup.placing if setup is not None else None,
    )  # fmt: skip
    operator.record_gateway()
    admin = AdminApi(operator, token, on_shutdown=stop.set)

    server = HttpServer(_AdminApp(admin), host="127.0.0.1", port=0)
    await server.start()
    await operator.start()
    if setup is not None and cluster_config is not None and cluster_config.spot_chaos is not None:
        setup.cluster.start_chaos(cluster_config.spot_chaos)  # the cluster file's random spot market
    _write_operator_file(home, server.port, gateway)
    log.info("operator ready: admin 127.0.0.1:%d, gateway %s", server.port, gateway.url)
    try:
        await stop.wait()
        log.info("shutting down: draining replicas")
    finally:
        try:
            await operator.stop()
            if setup is not None:
                await setup.close()
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
    parser.add_argument("--cluster", type=Path, default=None, help="the cluster file (engine, provider, node pools)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        run_main(serve(Home(Path(args.home)), args.host, args.port, args.cluster))
    except ThriftyError as exc:
        log.error("%s", exc.message)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
