"""Streaming predictions: a ``predict`` that is a generator (sync or async) sends each item as a chunk.

The rule: ``predict`` may be a generator function or an async generator function (detected at load with
``inspect.isgeneratorfunction`` / ``isasyncgenfunction``), or a plain ``predict`` may return a generator or
an async generator object; either way each yielded item is one chunk of the response, sent as it comes:
``bytes`` as is, ``str`` in UTF-8, anything else as one JSON line (+ ``\\n``). The response is chunked (its
Content-Type follows the first item: text/plain, application/octet-stream or application/x-ndjson); with
``Accept: text/event-stream`` each chunk is one Server-Sent Event (``data:`` lines, one per line of the chunk;
a JSON item without its newline), a mid-stream failure is an ``event: error`` and then the end.

- A stream holds its concurrency slot (admission, ``executing``, drain) from admission to its end.
- A sync generator runs in the predictor's thread pool, one ``next()`` per chunk through the ``ThreadRunner``;
  an async one on the loop, in the connection's task.
- The next item is asked for only when the previous chunk has gone out (the HTTP core's back-pressure), so a
  slow reader slows the generator, which holds no item beyond the one in hand.
- ``request_timeout`` bounds the time to the first item (no response is sent before it: a failure or a
  timeout before it is an ordinary 500 or 504); ``stream_idle_timeout`` bounds each later wait;
  ``max_stream_duration`` (optional) the whole stream. After the first chunk a failure cuts the stream
  (chunked: no terminal chunk, so the client sees an incomplete response) or ends it with ``event: error``.
- A client that disconnects cancels the wait: an async generator gets ``CancelledError`` where it awaits and
  is closed (``aclose``); a sync one is closed (``close()``, in its thread, once a running ``next()`` returns).
  The slot is free once the generator is closed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import traceback
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import orjson

from thrifty.dataplane.deadlines import Deadlines, TaskExpiry
from thrifty.dataplane.http_messages import OCTETS, TEXT, Headers, StreamResponse
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.errors import PredictorError, ThriftyError, TimeoutExceededError

_log = logging.getLogger("thrifty.replica")

NDJSON = b"application/x-ndjson"
EVENT_STREAM = b"text/event-stream"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_SSE_HEADERS: Headers = [(b"cache-control", b"no-cache")]


class _End:
    """The generator is exhausted."""


END = _End()
_SENT = _End()  # StreamBody's first item has gone out


class StreamPredictorError(PredictorError):
    """The generator raised (``cause``: logged with its traceback, never sent) or yielded an unsendable item."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class StreamCutError(PredictorError):
    """Raised to the HTTP core to cut a chunked stream (it aborts the connection)."""


def is_stream(value: object) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


def is_stream_function(fn: object) -> bool:
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


def wants_sse(accept: bytes | None) -> bool:
    return accept is not None and EVENT_STREAM in accept.lower()


def encode_item(item: Any, sse: bool) -> bytes:
    """One chunk's bytes; raises StreamPredictorError for an item that cannot be sent."""
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    try:
        data = orjson.dumps(item, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise StreamPredictorError(
            f"the predictor yielded a {type(item).__name__}, which is not JSON-serialisable: {exc}"
        ) from exc
    return data if sse else data + b"\n"


def sse_event(data: bytes, event: bytes | None = None) -> bytes:
    """One Server-Sent Event: a ``data:`` line per line of ``data`` (CR, LF and CRLF all end a line)."""
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    head = b"event: " + event + b"\n" if event else b""
    return head + b"".join([b"data: " + line + b"\n" for line in lines]) + b"\n"


def content_type_of(first: Any) -> bytes:
    if isinstance(first, bytes | bytearray | memoryview):
        return OCTETS
    if isinstance(first, str) or first is END:
        return TEXT
    return NDJSON


def _next_or_end(gen: Generator[Any, None, Any]) -> Any:
    return next(gen, END)


def _close(gen: Generator[Any, None, Any]) -> None:
    gen.close()


class PredictStream:
    """One streaming ``predict``: its generator and the concurrency slot it holds until ``aclose``."""

    def __init__(
        self,
        gen: Generator[Any, None, Any] | AsyncGenerator[Any, None],
        *,
        release: Callable[[], None],
        runner: ThreadRunner | None,
        deadlines: Deadlines,
        clock: Callable[[], float],
        first_deadline: float,
        request_timeout_s: float,
        idle_timeout_s: float,
        max_duration_s: float | None,
    ) -> None:
        self._gen = gen
        self._is_async = inspect.isasyncgen(gen)
        self._release = release
        self._runner = runner
        self._deadlines = deadlines
        self._clock = clock
        self.first_deadline = first_deadline
        self._request_timeout_s = request_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._max_duration_s = max_duration_s
        self._end_at = clock() + max_duration_s if max_duration_s is not None else float("inf")
        self._stepping = False  # a sync next() runs in a worker thread
        self._close_after_step = False
        self._finished = False  # exhausted or raised: nothing to close
        self._closed = False

    async def first(self) -> Any:
        """The first item (or END), within ``request_timeout``."""
        return await self._next(min(self.first_deadline, self._end_at), True)

    async def next(self) -> Any:
        """The next item (or END), within ``stream_idle_timeout`` (and ``max_stream_duration``)."""
        return await self._next(min(self._clock() + self._idle_timeout_s, self._end_at), False)

    def _timeout(self, first: bool) -> TimeoutExceededError:
        if self._clock() >= self._end_at:
            return TimeoutExceededError(
                f"the stream lasted longer than max_stream_duration ({self._max_duration_s:g}s)"
            )
        if first:
            return TimeoutExceededError(f"no first chunk within request_timeout ({self._request_timeout_s:g}s)")
        return TimeoutExceededError(f"no chunk within stream_idle_timeout ({self._idle_timeout_s:g}s)")

    async def _next(self, deadline: float, first: bool) -> Any:
        if self._finished or self._closed:
            return END
        if self._is_async:
            return await self._next_async(deadline, first)
        return await self._next_sync(deadline, first)

    async def _next_async(self, deadline: float, first: bool) -> Any:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("no current task")
        gen: AsyncGenerator[Any, None] = self._gen  # type: ignore[assignment]
        expiry = TaskExpiry(task)
        # Registered only around the generator's await: whenever the sweep fires, the task is suspended in it.
        self._deadlines.add(expiry, deadline, expiry.fire)
        try:
            return await gen.__anext__()
        except StopAsyncIteration:
            self._finished = True
            return END
        except asyncio.CancelledError:
            if expiry.fired:
                task.uncancel()
                raise self._timeout(first) from None
            raise
        except Exception as exc:
            self._finished = True
            raise StreamPredictorError(f"{type(exc).__name__}: {exc}", exc) from exc
        finally:
            self._deadlines.discard(expiry)

    async def _next_sync(self, deadline: float, first: bool) -> Any:
        runner = self._runner
        if runner is None:
            raise RuntimeError("a sync generator needs a ThreadRunner")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def outcome(ok: bool, value: Any) -> None:
            self._stepping = False
            if not ok or value is END:
                self._finished = True
            if self._close_after_step:  # closed while next() ran: close (and free the slot) now
                self._close_sync()
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(StreamPredictorError(f"{type(value).__name__}: {value}", value))

        self._stepping = True
        runner.submit(_next_or_end, self._gen, outcome)
        self._deadlines.add(fut, deadline, functools.partial(self._expire, fut, first))
        try:
            return await fut
        finally:
            self._deadlines.discard(fut)

    def _expire(self, fut: asyncio.Future[Any], first: bool) -> None:
        if not fut.done():
            fut.set_exception(self._timeout(first))

    async def aclose(self) -> None:
        """Close the generator (cancelled/closed if it had not ended) and free the slot; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._is_async:
            try:
                if not self._finished:
                    await self._gen.aclose()  # type: ignore[union-attr]
            except Exception:
                _log.exception("closing the predictor's async generator failed")
            finally:
                self._release()
        elif self._stepping:
            self._close_after_step = True  # a thread runs next(): close once it returns
        else:
            self._close_sync()

    def _close_sync(self) -> None:
        if self._finished or self._runner is None:
            self._release()
            return
        self._finished = True
        release = self._release

        def closed(ok: bool, value: Any) -> None:
            if not ok:
                _log.error("closing the predictor's generator failed: %s: %s", type(value).__name__, value)
            release()  # the thread is done with it: only now is the slot free

        self._runner.submit(_close, self._gen, closed)


class StreamBody:
    """The ``ChunkSource`` of a replica's streamed response: items of a ``PredictStream``, encoded."""

    __slots__ = ("_ended", "_pending", "_rid", "_sse", "_stream")

    def __init__(self, stream: PredictStream, first: Any, sse: bool, rid: bytes) -> None:
        self._stream = stream
        self._pending = first  # the first item, fetched before the response head (_SENT once sent)
        self._sse = sse
        self._rid = rid
        self._ended = False

    def __aiter__(self) -> StreamBody:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        try:
            item = self._pending
            if item is _SENT:
                item = await self._stream.next()
            else:
                self._pending = _SENT
            if item is END:
                self._ended = True
                raise StopAsyncIteration
            data = encode_item(item, self._sse)
        except (StreamPredictorError, TimeoutExceededError) as exc:
            self._ended = True
            log_failure(self._rid, exc)
            if not self._sse:
                raise StreamCutError(exc.message) from exc
            await self._stream.aclose()  # before the error event goes out: the slot is free when it arrives
            return sse_error(exc, self._rid)
        return sse_event(data) if self._sse else data

    async def aclose(self) -> None:
        await self._stream.aclose()


def sse_error(exc: ThriftyError, rid: bytes) -> bytes:
    """What a client sees of a mid-stream failure: the code and the request id (details go to the log)."""
    if isinstance(exc, TimeoutExceededError):
        body = {"error": "timeout", "message": exc.message}
    else:
        body = {"error": "predictor_error", "message": STREAM_FAILED}
    body["request_id"] = rid.decode("latin-1")
    return sse_event(orjson.dumps(body), b"error")


STREAM_FAILED = "the predictor failed mid-stream; its error is in the replica log under this request id"


def log_failure(rid: bytes, exc: ThriftyError) -> None:
    cause = exc.cause if isinstance(exc, StreamPredictorError) else None
    if cause is not None:
        _log.error(
            "request_id=%s predictor stream raised %s\n%s",
            rid.decode("latin-1"),
            exc.message,
            "".join(traceback.format_exception(cause)).rstrip(),
        )
    else:
        _log.error("request_id=%s stream ended: %s", rid.decode("latin-1"), exc.message)


def stream_response(stream: PredictStream, first: Any, sse: bool, rid: bytes) -> StreamResponse:
    headers: Headers = [(b"x-request-id", rid)]
    if sse:
        headers += _SSE_HEADERS
    body = StreamBody(stream, first, sse, rid)
    return StreamResponse(200, body, EVENT_STREAM if sse else content_type_of(first), headers)
