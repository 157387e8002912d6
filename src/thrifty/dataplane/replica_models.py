"""Multi-model requests on a replica: ``POST /<model>`` and ``POST /<model>/<version>`` (the gateway strips
``/<api>``), served from the model cache (``thrifty.models``) with the user's ``predict(payload, model)``.

A request goes through, in order:

1. the model path: one or two segments, percent-decoded and validated by ``models.parse_model_path``, the
   same reading as the gateway's (``/``, ``..``, characters outside ``[A-Za-z0-9_.-]``, more segments -> 400);
2. admission, counting the requests that wait for a model load as queued, so that overload is refused at
   once (503) instead of piling up behind a slow download;
3. the payload (400 when malformed), then the model, acquired and *pinned* for the rest of the request:
   unknown -> 404, failed load -> 500 for that model only (remembered briefly by the cache), no room
   because every cached model is in use -> 503. Waiting for a load counts against ``request_timeout``
   (504 after it);
4. admission again (a load may have taken a while) and the scheduler's queue and slots, exactly like a
   single-model request, until the same deadline: ``request_timeout`` runs from the request's arrival, so
   load wait + queue + predict together are bounded by it.

The scheduler's predictor is wrapped so that it receives a :class:`ModelCall` (payload and pinned model):
``predict(payload, model)``; with batching, ``predict_batch(payloads, models)`` gets the model of each payload
(a batch may mix models). The pin lasts until predict really returns, not until the request ends: a sync
predict that overran ``request_timeout`` (504) still uses its model, which must not be evicted meanwhile.
The replica also polls the source every ``models.poll_interval`` (new versions), preloads
``models.preload`` before it reports ready, and reports what it holds in ``/_thrifty/stats`` (``models``,
``model_stats``) and the full cache snapshot at ``/_thrifty/models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.http_messages import Request, Response, error_response, json_response
from thrifty.dataplane.payloads import PayloadError, decode_payload
from thrifty.dataplane.predictor_loading import LoadedPredictor
from thrifty.dataplane.replica_cache_dir import CacheDir
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.errors import ThriftyError
from thrifty.models import (
    LoadedModel,
    ModelCache,
    ModelCacheBusyError,
    ModelLoadError,
    ModelNameError,
    ModelNotFoundError,
    model_cache_from_config,
)
from thrifty.models.names import parse_model_path
from thrifty.policy.admission import AdmissionDecision, AdmissionLimits, admit

_log = logging.getLogger("thrifty.replica")

RETRY_ELSEWHERE = b"x-thrifty-retry-elsewhere"  # the gateway may send this request to another replica
URL_SHAPE = "POST /<api>/<model> or POST /<api>/<model>/<version>"
NOT_A_MODEL_PATH = f"this is a multi-model API: predict with {URL_SHAPE}"


class PredictRunner(Protocol):
    """What the replica application lends to a multi-model request (see ``ReplicaApp``)."""

    def rejection(self, decision: AdmissionDecision, rid: bytes) -> Response: ...

    async def run(
        self,
        scheduler: PredictScheduler,
        payload: Any,
        decision: AdmissionDecision,
        rid: bytes,
        deadline: float | None = None,
    ) -> Response: ...


_NEW, _STARTED, _ABANDONED = 0, 1, 2


class ModelCall:
    """One request's payload and pinned model, as the scheduler hands them to the predictor wrapper.

    The pin is given back exactly once: by the predict call when it returns (``start`` ... ``finish``), or by
    the request when predict never started (``abandon``, e.g. it expired in the queue); a predict that
    starts after its request gave the model up is skipped, since nobody reads its result. ``start`` runs
    on a worker thread for a sync predictor while ``abandon`` runs on the loop, hence the lock.
    """

    __slots__ = ("_lock", "_loop", "_release", "_state", "model", "payload")

    def __init__(self, payload: Any, model: Any, release: Callable[[], None], loop: asyncio.AbstractEventLoop) -> None:
        self.payload = payload
        self.model = model
        self._release = release  # call on the loop
        self._loop = loop
        self._lock = threading.Lock()
        self._state = _NEW

    def start(self) -> bool:
        """Before predict: False when the request is already over and the pin given back."""
        with self._lock:
            if self._state == _ABANDONED:
                return False
            self._state = _STARTED
            return True

    def abandon(self) -> None:
        """The request is over: give the pin back now unless a predict call holds it."""
        with self._lock:
            if self._state != _NEW:
                return
            self._state = _ABANDONED
        self._release()


def _finish(calls: list[ModelCall]) -> None:
    """On the loop: the predict call of ``calls`` (all started) returned."""
    for call in calls:
        call._release()


def _finish_threadsafe(calls: list[ModelCall]) -> None:
    if calls:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
            calls[0]._loop.call_soon_threadsafe(_finish, calls)


def _spread(calls: list[ModelCall], started: list[ModelCall], results: Any) -> Any:
    """predict_batch's results for ``started``, placed back among ``calls`` (None for the skipped ones)."""
    if len(started) == len(calls) or not isinstance(results, list | tuple) or len(results) != len(started):
        return results  # complete, or malformed: the scheduler reports a malformed result
    by_call = {id(call): result for call, result in zip(started, results, strict=True)}
    return [by_call.get(id(call)) for call in calls]


def model_predictor(loaded: LoadedPredictor) -> LoadedPredictor:
    """The predictor as the scheduler calls it for a multi-model API: each payload is a :class:`ModelCall`."""
    instance = loaded.instance
    predict: Callable[[Any], Any]
    if loaded.predict_is_async:

        async def predict_async(call: ModelCall) -> Any:
            if not call.start():
                return None
            try:
                return await instance.predict(call.payload, call.model)
            finally:
                _finish([call])

        predict = predict_async
    else:

        def predict_sync(call: ModelCall) -> Any:
            if not call.start():
                return None
            try:
                return instance.predict(call.payload, call.model)
            finally:
                _finish_threadsafe([call])

        predict = predict_sync
    batch: Callable[[list[Any]], Any] | None = None
    if loaded.predict_batch is not None:
        if loaded.predict_batch_is_async:

            async def batch_async(calls: list[ModelCall]) -> Any:
                started = [call for call in calls if call.start()]
                if not started:
                    return [None] * len(calls)
                try:
                    results = await instance.predict_batch([c.payload for c in started], [c.model for c in started])
                finally:
                    _finish(started)
                return _spread(calls, started, results)

            batch = batch_async
        else:

            def batch_sync(calls: list[ModelCall]) -> Any:
                started = [call for call in calls if call.start()]
                if not started:
                    return [None] * len(calls)
                try:
                    results = instance.predict_batch([c.payload for c in started], [c.model for c in started])
                finally:
                    _finish_threadsafe(started)
                return _spread(calls, started, results)

            batch = batch_sync
    return LoadedPredictor(
        instance=instance,
        predict=predict,
        predict_is_async=loaded.predict_is_async,
        predict_batch=batch,
        predict_batch_is_async=loaded.predict_batch_is_async,
    )


class ModelServing:
    """One replica's model cache and the multi-model request path. Call from the replica's event loop."""

    def __init__(
        self,
        api: ApiConfig,
        cache: ModelCache,
        *,
        cache_dir: CacheDir | None = None,
    ) -> None:
        if api.models is None:
            raise ValueError(f"API {api.name!r} has no models: section")
        self.config = api.models
        self.cache = cache
        self._cache_dir = cache_dir
        self._limits = AdmissionLimits.from_serving(api.serving)
        self._timeout_s = float(api.serving.request_timeout)
        self._poller: asyncio.Task[None] | None = None
        self.waiting = 0  # requests waiting for their model to load
        self._no_waiting: asyncio.Event | None = None
        self.preload_failures: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Prepare the cache folder, preload ``models.preload``, start polling. Preload failures are logged
        (and kept in ``preload_failures``): a model that cannot load answers 500, the replica still serves."""
        await self.cache.start()
        if self.config.preload:
            failures = await self.cache.preload(self.config.preload)
            for ref, exc in failures.items():
                _log.warning("preload of model %s failed: %s", ref, exc.message)
            self.preload_failures = {ref: exc.message for ref, exc in failures.items()}
            _log.info("preloaded %d of %d models", len(self.config.preload) - len(failures), len(self.config.preload))
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.cache.close()
        if self._cache_dir is not None:
            await asyncio.to_thread(self._cache_dir.remove)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.cache.poll()
            except Exception:  # the loop must outlive a bad poll; the cache keeps source errors itself
                _log.exception("model source poll failed")

    # -- figures -------------------------------------------------------------------------------------------
    def held(self) -> list[str]:
        """``name/version`` of every model in memory, least recently used first."""
        return [str(key) for key in self.cache.held()]

    def stats_fields(self) -> dict[str, Any]:
        """What ``/_thrifty/stats`` adds: held models (the gateway routes on them) and per-model counters."""
        snap = self.cache.snapshot()
        return {
            "slots": self._limits.max_executing,  # the gateway's load bound allows at least this many
            "models": [f"{h['model']}/{h['version']}" for h in snap["held"]],
            "model_stats": snap["models"],
            "model_cache": {"memory": snap["memory"], "disk": snap["disk"], "waiting": self.waiting},
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.cache.snapshot(),
            "waiting": self.waiting,
            "cache_dir": self._cache_dir.path if self._cache_dir is not None else None,
            "preload_failures": self.preload_failures,
            "config": self.config.model_dump(mode="json"),
        }

    # -- requests ------------------------------------------------------------------------------------------
    async def handle(
        self, request: Request, rid: bytes, scheduler: PredictScheduler | None, runner: PredictRunner
    ) -> Response:
        if scheduler is None:
            return error_response(503, "not_ready", "the predictor is still loading", rid, [(b"retry-after", b"1")])
        deadline = scheduler.deadline()
        try:
            name, version = parse_model_path(request.path)
        except ModelNameError as exc:
            return error_response(400, exc.code, exc.message, rid)
        decision = admit(self._limits, scheduler.executing, scheduler.queued + self.waiting, scheduler.draining)
        if not decision.admitted:
            return runner.rejection(decision, rid)
        try:
            payload = decode_payload(request.headers.get(b"content-type"), request.body)
        except PayloadError as exc:
            return error_response(400, "invalid_payload", str(exc), rid)
        try:
            loaded = await self._pin(name, version, scheduler.seconds_until(deadline))
        except _LoadTimeoutError:
            return error_response(
                504, "timeout", f"model {name!r} did not load within request_timeout ({self._timeout_s:g}s)", rid
            )
        except (ModelNameError, ModelNotFoundError, ModelLoadError, ModelCacheBusyError) as exc:
            return _model_error(exc, rid)
        call = ModelCall(payload, loaded.model, functools.partial(self.cache.unpin, loaded), asyncio.get_running_loop())
        try:
            # Overload again (the load may have taken a while), but not draining: the drain waits for
            # requests admitted before it (``wait_loads``), so they are served, not turned away now.
            decision = admit(self._limits, scheduler.executing, scheduler.queued, False)
            if not decision.admitted:
                return runner.rejection(decision, rid)
            return await runner.run(scheduler, call, decision, rid, deadline)
        finally:
            call.abandon()

    async def _pin(self, name: str, version: int | None, timeout_s: float) -> LoadedModel:
        """The model, pinned in the cache (the caller unpins it); the wait is bounded by ``timeout_s``."""
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout_s):
                return await self.cache.pin(name, version)
        except TimeoutError:
            raise _LoadTimeoutError from None
        finally:
            self.waiting -= 1
            if not self.waiting and self._no_waiting is not None:
                self._no_waiting.set()

    async def wait_loads(self) -> None:
        """Until no request waits for its model to load (with the drain begun, none starts waiting)."""
        while self.waiting:
            self._no_waiting = asyncio.Event()
            await self._no_waiting.wait()

    def not_a_model_path(self, rid: bytes) -> Response:
        return error_response(400, "model_required", NOT_A_MODEL_PATH, rid)

    def snapshot_response(self) -> Response:
        return json_response(200, self.snapshot())


MODEL_FAILED = "the model could not be served; the reason is in the replica log under this request id"


class _LoadTimeoutError(Exception):
    pass


def _model_error(exc: ThriftyError, rid: bytes) -> Response:
    # Busy means every model in this replica's memory is in use: another replica may well have room.
    headers = [(b"retry-after", b"1"), (RETRY_ELSEWHERE, b"1")] if isinstance(exc, ModelCacheBusyError) else None
    message = exc.message
    if exc.http_status >= 500 and not isinstance(exc, ModelCacheBusyError):
        _log.warning("request_id=%s %s", rid.decode("latin-1"), exc.message)
        # The load's exception (load_model's text, source paths) goes to the log only, like a predictor's.
        message = MODEL_FAILED
    return error_response(exc.http_status, exc.code, message, rid, headers)


def open_model_serving(api: ApiConfig, predictor: LoadedPredictor, cache_dir: str | None) -> ModelServing:
    """The cache over ``api.models`` in ``cache_dir`` (a private temporary folder when None).

    Raises PredictorLoadError (no ``load_model``) or ConfigError (unusable source): the replica reports
    them like a predictor that failed to load.
    """
    folder = CacheDir.open(cache_dir)
    try:
        if api.models is None:
            raise ValueError(f"API {api.name!r} has no models: section")
        cache = model_cache_from_config(api.models, predictor.instance, folder.path, clock=time.monotonic)
    except BaseException:
        folder.remove()
        raise
    return ModelServing(api, cache, cache_dir=folder)
