"""The replica server's HTTP application: runs one API's predictor.

Endpoints: ``POST /`` predicts (the gateway strips the ``/<api>`` prefix); for a multi-model API,
``POST /<model>[/<version>]`` predicts with that model (``replica_models``) and ``POST /`` is a 400;
an API with ``serving.protocol: v2`` answers the Open Inference Protocol at ``/v2/models/<api>/...``
(``replica_v2``: tensors are decoded here, not in the gateway) and refuses ``POST /``;
``GET /healthz`` (alive), ``GET /readyz`` (predictor constructed), ``GET /_thrifty/stats`` (the figures the
operator, the gateway and tests read), ``GET /_thrifty/models`` (the model cache, multi-model APIs).

With a platform secret (``platform_secret``), every request but ``GET /healthz`` must carry it in
``X-Thrifty-Secret`` (the gateway adds it): without it, 401 once the headers are in, before the body is read.

Errors are JSON ``{"error", "message", "request_id"}``: 400 malformed payload, 401 no platform secret, 404
unknown path, 413 body over ``max_payload`` (the HTTP core), 500 predictor failure (the code and the request
id only: the exception and its traceback go to the log, tagged with the request id, never to the client),
503 queue full or draining (``Retry-After``; draining adds ``X-Thrifty-Draining: 1`` so that the gateway
retries elsewhere), 504 over ``request_timeout``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thrifty.config.schema import ApiConfig
from thrifty.dataplane.http_messages import Headers, Request, RequestIds, Response, error_response, json_response
from thrifty.dataplane.payloads import PayloadError, decode_payload, encode_result
from thrifty.dataplane.platform_secret import HEADER as SECRET_HEADER
from thrifty.dataplane.platform_secret import presented_matches
from thrifty.dataplane.replica_scheduler import BatchResultError, PredictorFailedError, PredictScheduler
from thrifty.dataplane.replica_streaming import (
    PredictStream,
    StreamPredictorError,
    log_failure,
    stream_response,
    wants_sse,
)
from thrifty.dataplane.replica_v2 import V2Serving, v2_error
from thrifty.errors import TimeoutExceededError
from thrifty.policy.admission import AdmissionDecision, Verdict

if TYPE_CHECKING:
    from thrifty.dataplane.replica_models import ModelServing

_log = logging.getLogger("thrifty.replica")

_OK = json_response(200, {"status": "ok"})
_NOT_MULTI_MODEL = "this API is not a multi-model API: POST to the API itself"
# What a client sees of a predictor failure: the code and the request id; the details are in the log.
PREDICTOR_FAILED = "the predictor failed; its error is in the replica log under this request id"


class ReplicaApp:
    def __init__(self, api: ApiConfig, replica_id: str, *, secret: bytes | None = None) -> None:
        self.api = api
        self._secret = secret
        self.replica_id = replica_id
        self._max_payload = int(api.serving.max_payload)
        self._retry_after = [(b"retry-after", b"1")]
        self._draining_headers: Headers = [(b"retry-after", b"1"), (b"x-thrifty-draining", b"1")]
        self._scheduler: PredictScheduler | None = None
        self._counts = [0, 0, 0, 0, 0, 0]  # predict responses by status // 100
        self._request_ids = RequestIds(replica_id.encode("latin-1", "replace") + b"-")
        self.draining = False
        self.models: ModelServing | None = None  # set for a multi-model API
        self.predictor_instance: Any = None  # the predictor object (V2 metadata reads its inputs/outputs)
        self._v2 = V2Serving(api.name) if api.serving.protocol == "v2" else None
        # POST /: the thrifty protocol's predict; a V2 API points callers at its V2 path instead.
        self._post_root = self._predict if self._v2 is None else self._v2_only

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._scheduler is not None and not self.draining

    @property
    def scheduler(self) -> PredictScheduler | None:
        return self._scheduler

    def set_scheduler(
        self, scheduler: PredictScheduler, models: ModelServing | None = None, *, predictor: Any = None
    ) -> None:
        """The predictor is constructed (and ``models`` preloaded): start serving predictions."""
        self.models = models
        self.predictor_instance = predictor
        scheduler.draining = self.draining
        self._scheduler = scheduler

    def begin_drain(self) -> None:
        """Refuse new predictions (503 + X-Thrifty-Draining); queued and executing ones carry on."""
        self.draining = True
        if self._scheduler is not None:
            self._scheduler.draining = True

    async def wait_drained(self) -> None:
        if self._scheduler is not None:
            if self.models is not None:
                # Requests admitted before the drain that still wait for their model; each one reaches the
                # scheduler without yielding once its model is in, so wait_idle below counts it.
                await self.models.wait_loads()
            await self._scheduler.wait_idle()

    def stats(self) -> dict[str, Any]:
        s = self._scheduler
        queued = s.queued if s is not None else 0
        executing = s.executing if s is not None else 0
        c = self._counts
        waiting = self.models.waiting if self.models is not None else 0  # for a model to load
        out = {
            "replica_id": self.replica_id,
            "ready": self.ready,
            "draining": self.draining,
            "in_flight": queued + executing + waiting,
            "queued": queued,
            "executing": executing,
            "requests": {"2xx": c[2], "4xx": c[4], "5xx": c[5]},
        }
        if self.models is not None:
            out.update(self.models.stats_fields())
        return out

    # -- HTTP -----------------------------------------------------------------------------------------------
    def body_limit(self, request: Request) -> int | Response:
        if not self._admitted_caller(request):
            return self._unauthorized(request)  # refused before its body is read
        return self._max_payload

    def _admitted_caller(self, request: Request) -> bool:
        if self._secret is None or (request.path == b"/healthz" and request.method == b"GET"):
            return True
        return presented_matches(request.headers.get(SECRET_HEADER), self._secret)

    def _unauthorized(self, request: Request) -> Response:
        return error_response(
            401, "unauthorized", "replicas take requests from the gateway only", self._request_id(request)
        )

    async def handle(self, request: Request) -> Response:
        path = request.path
        method = request.method
        if not self._admitted_caller(request):  # body_limit refused it already; kept for any other caller
            return self._unauthorized(request)
        if path == b"/":
            if method == b"POST":
                if self.models is not None:
                    resp = self.models.not_a_model_path(self._request_id(request))
                else:
                    resp = await self._post_root(request)
            else:
                resp = error_response(
                    405, "method_not_allowed", "predict with POST", self._request_id(request), [(b"allow", b"POST")]
                )
            self._counts[resp.status // 100] += 1
            return resp
        if self._v2 is not None and path.startswith(b"/v2/"):
            resp = await self._v2.handle(request, self._request_id(request), self)
            self._counts[resp.status // 100] += 1
            return resp
        if method == b"GET":
            if path == b"/healthz":
                return _OK
            if path == b"/readyz":
                if self.ready:
                    return _OK
                return error_response(503, "not_ready", "the predictor is not ready", headers=self._retry_after)
            if path == b"/_thrifty/stats":
                return json_response(200, self.stats())
            if path == b"/_thrifty/models" and self.models is not None:
                return self.models.snapshot_response()
        if method == b"POST":
            if self.models is not None:
                resp = await self.models.handle(request, self._request_id(request), self._scheduler, self)
                self._counts[resp.status // 100] += 1
                return resp
            resp = error_response(404, "not_found", _NOT_MULTI_MODEL, self._request_id(request))
            self._counts[4] += 1
            return resp
        return error_response(
            404, "not_found", f"no such endpoint: {path.decode('latin-1')}", self._request_id(request)
        )

    def _request_id(self, request: Request) -> bytes:
        return self._request_ids.of(request)

    async def _predict(self, request: Request) -> Response:
        rid = self._request_id(request)
        scheduler = self._scheduler
        if scheduler is None:
            return error_response(503, "not_ready", "the predictor is still loading", rid, self._retry_after)
        decision = scheduler.admission()
        if not decision.admitted:
            return self.rejection(decision, rid)
        try:
            payload = decode_payload(request.headers.get(b"content-type"), request.body)
        except PayloadError as exc:
            return error_response(400, "invalid_payload", str(exc), rid)
        return await self.run(scheduler, payload, decision, rid, accept=request.headers.get(b"accept"))

    async def _v2_only(self, request: Request) -> Response:
        name = self.api.name
        return v2_error(
            404, f"this API speaks the Open Inference Protocol: POST /v2/models/{name}/infer", self._request_id(request)
        )

    def rejection(self, decision: AdmissionDecision, rid: bytes) -> Response:
        """The 503 for a request that admission refused."""
        if decision.verdict is Verdict.REJECT_DRAINING:
            return error_response(
                503, "draining", "this replica is shutting down", rid, self._draining_headers, close=True
            )
        return error_response(503, "overloaded", "the replica's queue is full", rid, self._retry_after)

    async def run(
        self,
        scheduler: PredictScheduler,
        payload: Any,
        decision: AdmissionDecision,
        rid: bytes,
        deadline: float | None = None,
        encode: Callable[[Any, bytes], Response] | None = None,
        *,
        accept: bytes | None = None,
    ) -> Response:
        """Run one admitted request through the scheduler and turn the outcome into a response (by ``encode``
        when given: the V2 protocol's tensors). A generator's is streamed (``replica_streaming``): SSE when
        ``accept`` asks for text/event-stream."""
        try:
            result = await scheduler.run(payload, decision, deadline)
        except PredictorFailedError as exc:
            _log.error(
                "request_id=%s predictor raised %s\n%s",
                rid.decode("latin-1"),
                exc.message,
                "".join(traceback.format_exception(exc.cause)).rstrip(),
            )
            return error_response(500, "predictor_error", PREDICTOR_FAILED, rid)
        except BatchResultError as exc:
            _log.error("request_id=%s %s", rid.decode("latin-1"), exc.message)
            return error_response(500, "predictor_error", PREDICTOR_FAILED, rid)
        except TimeoutExceededError as exc:
            return error_response(504, "timeout", exc.message, rid)
        if result.__class__ is PredictStream:
            return await _start_stream(result, rid, wants_sse(accept))
        if encode is not None:
            return encode(result, rid)
        try:
            body, content_type = encode_result(result)
        except TypeError as exc:
            _log.error("request_id=%s %s", rid.decode("latin-1"), exc)
            return error_response(500, "predictor_error", PREDICTOR_FAILED, rid)
        return Response(200, body, content_type, [(b"x-request-id", rid)])


async def _start_stream(stream: PredictStream, rid: bytes, sse: bool) -> Response:
    """Wait for the first item (within request_timeout) before answering: until then a failure is a plain
    500 or 504 (and the gateway may still retry a cut-off), after it the response has started."""
    try:
        first = await stream.first()
    except (StreamPredictorError, TimeoutExceededError) as exc:
        await stream.aclose()
        log_failure(rid, exc)
        if isinstance(exc, TimeoutExceededError):
            return error_response(504, "timeout", exc.message, rid)
        return error_response(500, "predictor_error", PREDICTOR_FAILED, rid)
    except BaseException:
        await stream.aclose()
        raise
    return stream_response(stream, first, sse, rid)
