"""Answering on an HTTP core connection: the serving loop, writes with back-pressure, chunked streams.

``ResponseWriter`` is the base of ``http_server``'s connection protocol and owns its serving half: the
loop that answers the connection's requests one at a time, in order (pipelined ones wait in ``_pending``;
reading resumes once few wait), keep-alive or close after each response, writing paused while the
transport's buffer is full (the connection's deadline then bounds a client that reads nothing).

Streamed responses (``StreamResponse``: a ``ChunkSource`` instead of a body) are sent with chunked transfer
encoding, each chunk written as the source produces it. The next chunk is asked for only once the
transport has taken the previous one (below its write buffer's high-water mark), so a slow reader slows the
producer and a stream holds at most that buffer and one chunk. A client that disconnects mid-stream cancels
the pending ``__anext__``; a source that raises cuts the stream (abort: no terminal chunk); ``aclose()`` is
called once in every case. A stream has no deadline of its own here (its source bounds the gaps between
chunks); a client that reads nothing for ``keep_alive_timeout_s`` is aborted as for any response.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from thrifty.dataplane.http_limits import IDLE, WRITE
from thrifty.dataplane.http_messages import (
    LAST_CHUNK,
    Request,
    Response,
    StreamResponse,
    encode_chunk,
    encode_response,
    encode_stream_head,
    error_response,
)

if TYPE_CHECKING:
    from thrifty.dataplane.http_server import HttpApp, HttpServer

_log = logging.getLogger("thrifty.http")


class ResponseWriter(asyncio.Protocol):
    """Answers a connection's requests in order and writes the responses (the base of the connection).

    The connection (``http_server``) sets these slots in its own ``__init__``: one constructor per
    connection, no chained call."""

    __slots__ = (
        "_app", "_closing", "_dead", "_drain", "_ignore_input", "_loop", "_parsing", "_pending", "_phase",
        "_read_paused", "_server", "_streaming", "_task", "_transport", "_write_paused", "deadline",
    )  # fmt: skip
    _server: HttpServer
    _app: HttpApp
    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport | None
    _pending: deque[Request | Response] | None
    _task: asyncio.Task[None] | None
    _closing: bool
    _parsing: bool
    _ignore_input: bool
    _dead: bool
    _read_paused: bool
    _write_paused: bool
    _streaming: bool
    _drain: asyncio.Future[None] | None
    deadline: float
    _phase: int

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def _serve(self, item: Request | Response) -> None:
        try:
            while True:
                if isinstance(item, Request):
                    try:
                        resp = await self._app.handle(item)
                    except Exception:
                        _log.exception("request handler failed")
                        resp = error_response(500, "internal", "internal server error")
                    keep = item.keep_alive and not resp.close
                else:
                    resp, keep = item, False
                if keep and self._closing and not self._pending:
                    keep = self._parsing
                if resp.__class__ is StreamResponse:
                    if not await self._send_stream(resp, keep):  # type: ignore[arg-type]
                        return
                    transport = self._transport
                    if transport is None:
                        return
                else:
                    if self._dead:
                        return
                    if self._write_paused:
                        await self._wait_writable()
                        if self._dead:
                            return
                    transport = self._transport
                    if transport is None:
                        return
                    transport.write(encode_response(resp, self._server.date.line(), keep))
                    if not keep:
                        transport.close()
                        return
                pending = self._pending
                if not pending:
                    if not self._parsing:
                        self.deadline = self._server.idle_deadline
                        self._phase = IDLE
                    return
                item = pending.popleft()
                if self._read_paused and not self._ignore_input and len(pending) < 4:
                    self._read_paused = False
                    transport.resume_reading()
        except Exception:
            _log.exception("connection failed")
            self.abort()
        finally:
            self._task = None

    async def _send_stream(self, resp: StreamResponse, keep: bool) -> bool:
        """Send ``resp`` chunk by chunk as its source produces them; True when the connection goes on."""
        chunks = resp.chunks
        try:
            if self._write_paused and not self._dead:
                await self._wait_writable()
            transport = self._transport
            if self._dead or transport is None:
                return False
            self._streaming = True
            # The head goes out with the first chunk: one write (one TCP segment) for the time to first byte.
            head = encode_stream_head(resp, self._server.date.line(), keep)
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                if self._dead:
                    return False
                if chunk:
                    if head:
                        transport.write(head + encode_chunk(chunk))
                        head = b""
                    else:
                        transport.write(encode_chunk(chunk))
                    if self._write_paused:
                        await self._wait_writable()  # back-pressure: the next chunk waits for this one
                        if self._dead:
                            return False
            self._streaming = False
            transport.write(head + LAST_CHUNK)
            if not keep:
                transport.close()
            return keep
        except asyncio.CancelledError:
            if not self._dead:
                raise  # not the client going away (the loop is stopping): let it through
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return False
        except Exception:
            # The source failed mid-stream (it logs why): cut the stream so the client sees it incomplete.
            self.abort()
            return False
        finally:
            self._streaming = False
            try:
                await chunks.aclose()
            except Exception:
                _log.exception("closing a response stream failed")

    async def _wait_writable(self) -> None:
        # A client that reads nothing of what it is sent must not hold the connection (and its buffers).
        deadline, phase = self.deadline, self._phase
        self.deadline = self._server.idle_deadline
        self._phase = WRITE
        self._drain = self._loop.create_future()
        await self._drain
        self._drain = None
        if self._phase == WRITE:  # else the next request has begun and set its own deadline
            self.deadline, self._phase = deadline, phase

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
