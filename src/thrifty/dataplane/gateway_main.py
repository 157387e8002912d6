"""The gateway process: ``python -m thrifty.dataplane.gateway_main --host H --port P --admin-port 0
--port-file FILE --token-file FILE [--routes-file FILE] [--public-url URL] [--grace-s 30]``.

Loads the routing table saved in ``--routes-file`` (by the previous gateway process, at each push), then
binds the public listener and the admin listener (loopback), then writes ``{"port": N, "admin_port": M}``
to ``--port-file`` atomically. Until the operator's first push, an API missing from the loaded table gets
503 + Retry-After (not 404). ``--public-url`` (default ``http://HOST:PORT`` of the public listener) is the
base of the endpoint that ``GET /<api>`` shows. For multi-model APIs it polls the replicas for the models
they hold (every ``--model-poll-s``) and routes each request to a replica that holds its model;
``--model-routing off`` (or ``THRIFTY_MODEL_ROUTING=0`` in the environment, which ``thrifty up`` passes on)
routes them like any other request, the baseline of ``benchmarks/multimodel``. On SIGTERM/SIGINT: stops
accepting, lets in-flight requests finish (up to ``--grace-s``), exits 0.

Caps of the public listener (flag, or the environment variable, else the default; see ``http_server``):
``--max-connections`` / ``THRIFTY_MAX_CONNECTIONS`` (10000), ``--head-timeout-s`` / ``THRIFTY_HEAD_TIMEOUT_S``
(10), ``--body-timeout-s`` / ``THRIFTY_BODY_TIMEOUT_S`` (60), ``--keep-alive-timeout-s`` /
``THRIFTY_KEEP_ALIVE_TIMEOUT_S`` (75). Exit code 2: the token or secret file is unreadable or a port
cannot be bound.

``--secret-file``: the platform secret, sent to replicas with every request (``platform_secret``).
``THRIFTY_METRICS_KEY`` in the environment: ``GET /metrics`` then requires ``Authorization: Bearer <it>``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import orjson

from thrifty.dataplane.api_key_hashes import hash_key, new_salt
from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.gateway_admin import AdminApp
from thrifty.dataplane.gateway_models import POLL_INTERVAL_S, ModelPoller
from thrifty.dataplane.gateway_routes import RoutesFile
from thrifty.dataplane.gateway_stats import HttpServerCollector
from thrifty.dataplane.http_server import (
    BODY_TIMEOUT_S,
    HEAD_TIMEOUT_S,
    KEEP_ALIVE_TIMEOUT_S,
    MAX_CONNECTIONS,
    HttpServer,
)
from thrifty.dataplane.platform_secret import METRICS_KEY_ENV, SecretFileError, read_secret
from thrifty.dataplane.process_io import run_main, stop_event_on_signals, write_atomic
from thrifty.dataplane.upstream import UpstreamPool

EXIT_STARTUP_FAILED = 2

_log = logging.getLogger("thrifty.gateway")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m thrifty.dataplane.gateway_main", description="thrifty gateway")
    p.add_argument("--host", default="127.0.0.1", help="public listener address")
    p.add_argument("--port", type=int, default=8888, help="public listener port (0: any free port)")
    p.add_argument("--admin-host", default="127.0.0.1", help="admin listener address (keep it loopback)")
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--port-file", required=True, help='receives {"port": N, "admin_port": M} once listening')
    p.add_argument("--token-file", required=True, help="file holding the admin bearer token")
    p.add_argument("--secret-file", default=None, help="file holding the platform secret replicas require")
    p.add_argument("--routes-file", help="where the routing table is saved at each push and loaded at start")
    p.add_argument("--public-url", help="base URL of the APIs' endpoints (default: http://HOST:PORT)")
    p.add_argument("--grace-s", type=float, default=30.0, help="longest wait for in-flight requests on SIGTERM")
    _add_cap(p, "--max-connections", "THRIFTY_MAX_CONNECTIONS", MAX_CONNECTIONS, "most open client connections")
    _add_cap(p, "--head-timeout-s", "THRIFTY_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S, "request head time limit")
    _add_cap(p, "--body-timeout-s", "THRIFTY_BODY_TIMEOUT_S", BODY_TIMEOUT_S, "request body time limit")
    _add_cap(p, "--keep-alive-timeout-s", "THRIFTY_KEEP_ALIVE_TIMEOUT_S", KEEP_ALIVE_TIMEOUT_S, "idle time limit")
    routing_env = os.environ.get("THRIFTY_MODEL_ROUTING", "1").strip().lower()
    p.add_argument(
        "--model-routing",
        choices=("on", "off"),
        default="off" if routing_env in ("0", "off", "false") else "on",
        help="multi-model APIs: prefer replicas that hold the model (default on; env THRIFTY_MODEL_ROUTING=0: off)",
    )
    p.add_argument("--model-poll-s", type=float, default=POLL_INTERVAL_S, help="how often replicas report models")
    return p.parse_args(argv)


def _add_cap(p: argparse.ArgumentParser, flag: str, env: str, default: float, help_text: str) -> None:
    """A positive limit of the public listener: ``flag``, else ``env`` in the environment, else ``default``."""
    kind = int if isinstance(default, int) else float

    def positive(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} (from {flag} or {env}): expected a positive {kind.__name__}")
        return value

    # argparse converts a string default with ``type``, so a bad environment value is reported like a bad flag.
    p.add_argument(flag, type=positive, default=os.environ.get(env, str(default)), help=f"{help_text}; env {env}")


async def serve(
    args: argparse.Namespace, token: str, secret: bytes | None = None, metrics_keys: tuple[str, ...] = ()
) -> int:
    loop = asyncio.get_running_loop()
    pool = UpstreamPool()
    gateway = GatewayApp(
        pool, model_routing=args.model_routing == "on", replica_secret=secret, metrics_key_hashes=metrics_keys
    )
    routes_file = RoutesFile(args.routes_file) if args.routes_file else None
    saved = routes_file.load() if routes_file is not None else None
    if saved is not None:  # before listening: a restarted gateway routes at once
        gateway.set_routes(saved, pushed=False)
        _log.info("loaded the saved routing table (%d APIs) from %s", len(saved.apis), args.routes_file)
    poller = ModelPoller(pool, lambda: list(gateway.routes.values()), interval_s=args.model_poll_s, secret=secret)
    public = HttpServer(
        gateway,
        host=args.host,
        port=args.port,
        max_connections=args.max_connections,
        head_timeout_s=args.head_timeout_s,
        body_timeout_s=args.body_timeout_s,
        keep_alive_timeout_s=args.keep_alive_timeout_s,
    )
    gateway.registry.register(HttpServerCollector(public.stats))
    admin = HttpServer(AdminApp(gateway, token, routes_file), host=args.admin_host, port=args.admin_port)
    try:
        await public.start()
        await admin.start()
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr, flush=True)
        await public.stop(0)
        return EXIT_STARTUP_FAILED
    gateway.public_url = (args.public_url or f"http://{_url_host(args.host)}:{public.port}").rstrip("/")
    stop = stop_event_on_signals(loop)
    write_atomic(args.port_file, orjson.dumps({"port": public.port, "admin_port": admin.port}))
    _log.info("listening on %s:%d (admin %s:%d)", args.host, public.port, args.admin_host, admin.port)
    poller.start()
    await stop.wait()
    await poller.stop()
    _log.info("stopping (grace %.1fs)", args.grace_s)
    await public.stop(args.grace_s)
    await admin.stop(1.0)
    await gateway.shadow.close()
    pool.close()
    _log.info("stopped")
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s gateway %(message)s")
    try:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        print(f"cannot read the token file: {exc}", file=sys.stderr, flush=True)
        return EXIT_STARTUP_FAILED
    if not token:
        print(f"the token file {args.token_file} is empty", file=sys.stderr, flush=True)
        return EXIT_STARTUP_FAILED
    secret = None
    if args.secret_file is not None:
        try:
            secret = read_secret(args.secret_file)
        except (OSError, SecretFileError) as exc:
            print(f"cannot read the platform secret: {exc}", file=sys.stderr, flush=True)
            return EXIT_STARTUP_FAILED
    metrics_key = os.environ.pop(METRICS_KEY_ENV, "").strip()
    metrics_keys = (hash_key(metrics_key, new_salt()),) if metrics_key else ()
    return run_main(serve(args, token, secret, metrics_keys))


if __name__ == "__main__":
    sys.exit(main())
