"""The replica process: ``python -m thrifty.dataplane.replica_main --spec SPEC --project-dir DIR ...``.

Sequence (what the engine relies on):

1. bind the HTTP server (``--port 0`` picks a free port) and write the port to ``--port-file`` (atomically),
   so ``/healthz`` answers even while a slow ``__init__`` runs;
2. import and construct the predictor on a background thread;
   - failure: write ``{"error": "predictor_load_failed", "message", "where", "traceback"}`` to
     ``--status-file``, print the traceback to stderr, exit with code 3;
   - multi-model API (``models:``): open the model cache in ``--cache-dir`` and preload ``models.preload``
     (a cache that cannot be opened fails like the predictor);
   - success: ``/readyz`` turns 200 and ``{"ready": true, "port": N}`` goes to ``--status-file``;
3. on SIGTERM/SIGINT: refuse new predictions (503 + X-Thrifty-Draining), finish queued and executing ones
   (up to ``--grace-s``), close connections, exit 0.

Before anything of the project is imported: the platform secret is read from ``--secret-file`` (then every
request but ``GET /healthz`` must carry it), and the variables named in ``THRIFTY_HIDE_ENV`` (comma-separated:
those API keys are read from, set by the operator) are removed from the environment, with that list itself,
so predictor code finds neither in ``os.environ``.

Exit codes: 0 stopped, 2 unusable spec or secret file, 3 predictor failed to load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.platform_secret import SecretFileError, hide_environment, read_secret
from thrifty.dataplane.predictor_loading import LoadedPredictor, load_failure_details, load_predictor
from thrifty.dataplane.process_io import run_main, stop_event_on_signals, write_atomic
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.replica_models import ModelServing, model_predictor, open_model_serving
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.engines.gpu_limits import apply_gpu_memory_fraction

EXIT_SPEC_INVALID = 2
EXIT_LOAD_FAILED = 3
# Longer than the gateway's reuse limit for idle upstream connections (30 s): the gateway always closes
# first, so it never writes on a connection the replica is closing.
KEEP_ALIVE_TIMEOUT_S = 120.0

_log = logging.getLogger("thrifty.replica")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m thrifty.dataplane.replica_main", description=__doc__.split("\n")[0])
    p.add_argument("--spec", required=True, help="JSON file: ApiConfig.model_dump(mode='json', by_alias=True)")
    p.add_argument("--project-dir", required=True, help="the project folder (becomes the working directory)")
    p.add_argument("--replica-id", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True, help="receives the bound port once listening")
    p.add_argument("--status-file", required=True, help="receives {ready, port} or the load error")
    p.add_argument("--grace-s", type=float, default=30.0, help="longest drain on SIGTERM")
    p.add_argument("--cache-dir", default=None, help="model cache folder of this replica (multi-model APIs)")
    p.add_argument("--secret-file", default=None, help="the platform secret: requests without it get 401")
    return p.parse_args(argv)


def _load_in_thread(
    loop: asyncio.AbstractEventLoop, api: ApiConfig, project_dir: Path
) -> asyncio.Future[LoadedPredictor]:
    # A daemon thread, not the default executor: a SIGTERM during a long __init__ must not wait for it.
    fut: asyncio.Future[LoadedPredictor] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work() -> None:
        try:
            apply_gpu_memory_fraction()  # before the predictor imports torch's allocator; a bad value fails the load
            result: Any = load_predictor(api, project_dir)
            ok = True
        except BaseException as exc:
            result, ok = exc, False
        loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(target=work, name="predictor-load", daemon=True).start()
    return fut


async def serve(args: argparse.Namespace, api: ApiConfig, project_dir: Path, secret: bytes | None = None) -> int:
    loop = asyncio.get_running_loop()
    app = ReplicaApp(api, args.replica_id, secret=secret)
    server = HttpServer(app, host=args.host, port=args.port, keep_alive_timeout_s=KEEP_ALIVE_TIMEOUT_S)
    await server.start()
    write_atomic(args.port_file, f"{server.port}\n".encode())
    _log.info("listening on %s:%d; loading %s", args.host, server.port, api.predictor.path)
    stop = stop_event_on_signals(loop)
    loading = _load_in_thread(loop, api, project_dir)
    stop_wait = loop.create_task(stop.wait())
    either: list[asyncio.Future[Any]] = [loading, stop_wait]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        _log.info("stopped while the predictor was loading")
        stop_wait.cancel()
        await server.stop(1.0)
        return 0
    exc = loading.exception()
    models: ModelServing | None = None
    if exc is None and api.models is not None:
        try:
            models = open_model_serving(api, loading.result(), args.cache_dir)
            await models.cache.start()
        except Exception as error:
            exc = error
            if models is not None:
                await models.close()
    if exc is not None:
        details = load_failure_details(exc, project_dir)
        write_atomic(args.status_file, orjson.dumps(details))
        print(details["traceback"] or details["message"], file=sys.stderr, flush=True)
        _log.error("predictor failed to load: %s (at %s)", details["message"], details["where"] or "?")
        stop_wait.cancel()
        await server.stop(1.0)
        return EXIT_LOAD_FAILED
    predictor = loading.result()
    needs_threads = not predictor.predict_is_async or (
        predictor.predict_batch is not None and not predictor.predict_batch_is_async
    )
    runner = ThreadRunner(api.serving.max_concurrency) if needs_threads else None
    if runner is not None:
        runner.start(loop)
    if models is not None:
        predictor = model_predictor(predictor)
    scheduler = PredictScheduler(predictor, api.serving, runner)
    if models is not None:
        preload = loop.create_task(models.start())
        await asyncio.wait([preload, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if not preload.done():
            _log.info("stopped while preloading models")
            preload.cancel()
            await asyncio.gather(preload, return_exceptions=True)
            stop_wait.cancel()
            await server.stop(1.0)
            await models.close()
            if runner is not None:
                runner.stop()
            return 0
        preload.result()
    app.set_scheduler(scheduler, models, predictor=predictor.instance)
    write_atomic(args.status_file, orjson.dumps({"ready": True, "port": server.port}))
    _log.info("ready on port %d", server.port)

    await stop_wait
    started = loop.time()
    _log.info("draining (grace %.1fs)", args.grace_s)
    app.begin_drain()
    try:
        await asyncio.wait_for(app.wait_drained(), args.grace_s)
    except TimeoutError:
        _log.warning("grace period over with requests still in flight; stopping anyway")
    await server.stop(max(0.5, args.grace_s - (loop.time() - started)))
    scheduler.close()
    if models is not None:
        await models.close()
    if runner is not None:
        runner.stop()
    _log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s replica={args.replica_id} %(message)s",
    )
    try:
        api = ApiConfig.model_validate(orjson.loads(Path(args.spec).read_bytes()))
    except (OSError, orjson.JSONDecodeError, ValidationError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        write_atomic(
            args.status_file,
            orjson.dumps({"error": "spec_invalid", "message": message, "where": args.spec, "traceback": ""}),
        )
        print(message, file=sys.stderr, flush=True)
        return EXIT_SPEC_INVALID
    hide_environment(os.environ)
    secret = None
    if args.secret_file is not None:
        try:
            secret = read_secret(args.secret_file)
        except (OSError, SecretFileError) as exc:
            message = f"cannot read the platform secret: {exc}"
            write_atomic(
                args.status_file,
                orjson.dumps({"error": "secret_unreadable", "message": message, "where": None, "traceback": ""}),
            )
            print(message, file=sys.stderr, flush=True)
            return EXIT_SPEC_INVALID
    project_dir = Path(args.project_dir).resolve()
    os.chdir(project_dir)
    return run_main(serve(args, api, project_dir, secret))


if __name__ == "__main__":
    sys.exit(main())
