"""Malformed requests (``http_fuzz_corpus``) as raw bytes to real servers, the gateway's and a replica's.

Each entry draws exactly one well-formed 4xx (or 505) after the answers to its well-formed prefix, or a
close; never two answers, never a 2xx for garbage. Meanwhile ``/healthz`` on another connection keeps
answering within 50 ms.

How the 50 ms bound is checked: this box's two cores are shared with other work, so a single check can be
late because the whole process was descheduled, not because the server stalled. Every check must be
answered, none may take over a second (a stalled loop or a dropped connection fails this), and at most 5%
may exceed 50 ms (a server that spends real time on garbage would miss it on most entries).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator

import httptools
import pytest
from dataplane_helpers import PREDICTORS, api_config
from http_fuzz_corpus import CORPUS, Case

from thrifty.dataplane.gateway import GatewayApp
from thrifty.dataplane.http_server import HttpServer
from thrifty.dataplane.predictor_loading import load_predictor
from thrifty.dataplane.replica import ReplicaApp
from thrifty.dataplane.replica_scheduler import PredictScheduler
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.dataplane.upstream import UpstreamPool

HEALTHZ_BOUND_S = 0.050
CAPS = {"head_timeout_s": 0.3, "body_timeout_s": 0.3, "keep_alive_timeout_s": 30.0}


class Responses:
    """Complete responses parsed from a byte stream; ``error`` says why the stream is not well-formed."""

    def __init__(self, data: bytes) -> None:
        self.statuses: list[int] = []
        self.error: str | None = None
        parser = httptools.HttpResponseParser(self)
        self._parser = parser
        self._in_message = False
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = f"not HTTP: {exc}"
        if self._in_message and self.error is None:
            self.error = "a response cut short"

    def on_message_begin(self) -> None:
        self._in_message = True

    def on_message_complete(self) -> None:
        self._in_message = False
        self.statuses.append(self._parser.get_status_code())


@pytest.fixture(params=["gateway", "replica"])
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[HttpServer]:
    if request.param == "gateway":
        pool = UpstreamPool()
        server = HttpServer(GatewayApp(pool, rng=random.Random(7)), **CAPS)  # type: ignore[arg-type]
        await server.start()
        yield server
        await server.stop(0.5)
        pool.close()
        return
    api = api_config("Echo")
    runner = ThreadRunner(api.serving.max_concurrency)
    runner.start(asyncio.get_running_loop())
    app = ReplicaApp(api, "r1")
    server = HttpServer(app, **CAPS)  # type: ignore[arg-type]
    await server.start()
    app.set_scheduler(PredictScheduler(load_predictor(api, PREDICTORS), api.serving, runner))
    yield server
    await server.stop(0.5)
    runner.stop()


class Healthz:
    """One keep-alive connection that asks ``GET /healthz`` and times each answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.latencies_s: list[float] = []

    async def check(self) -> None:
        started = time.perf_counter()
        self.writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(self.reader.readexactly(length), 5)
        self.latencies_s.append(time.perf_counter() - started)
        assert head.startswith(b"HTTP/1.1 200 ")


async def send_case(port: int, case: Case, healthz: Healthz) -> tuple[bytes, bool] | None:
    """Write the case, check /healthz meanwhile, read until the server closes: (what it sent, reset), or
    None if the server neither answered and closed in time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(case.data)
    await healthz.check()
    received = bytearray()
    reset = False
    try:
        async with asyncio.timeout(5):  # an answer or a close is due within the 0.3 s head/body timeouts
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        reset = True  # closed with unread input: what came before the reset is all the server said
    except TimeoutError:
        return None
    finally:
        writer.close()
    return bytes(received), reset


async def test_malformed_requests_get_one_4xx_or_a_close_and_healthz_keeps_answering(edge: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    healthz = Healthz(reader, writer)
    failures: list[str] = []
    for case in CORPUS:
        sent = await send_case(edge.port, case, healthz)
        if sent is None:
            failures.append(f"{case.name}: the connection was left open")
            continue
        data, reset = sent
        parsed = Responses(data)
        statuses = parsed.statuses
        garbage = statuses[case.leading :]
        if parsed.error is not None and not (reset and not garbage):
            failures.append(f"{case.name}: {parsed.error}: {data[:200]!r}")
        elif statuses[: case.leading] != [200] * case.leading:
            failures.append(f"{case.name}: the well-formed prefix got {statuses}")
        elif len(garbage) > 1:
            failures.append(f"{case.name}: {len(garbage)} answers to one malformed request: {statuses}")
        elif garbage and not (400 <= garbage[0] < 500 or garbage[0] == 505):
            failures.append(f"{case.name}: answered {garbage[0]}")
    await healthz.check()  # still serving after the whole corpus
    writer.close()
    assert not failures, "\n".join(failures)
    latencies = healthz.latencies_s
    late = [s for s in latencies if s > HEALTHZ_BOUND_S]
    assert len(latencies) == len(CORPUS) + 1
    assert max(latencies) < 1.0, f"/healthz stalled: {max(latencies):.3f}s"
    assert statistics.median(latencies) < HEALTHZ_BOUND_S
    assert len(late) <= 0.05 * len(latencies), f"/healthz over 50 ms on {len(late)} of {len(latencies)} checks"
    assert edge.stats.open_connections == 1  # only the /healthz connection: every fuzz connection was closed
