"""Streaming test predictors: generators (sync and async) whose progress the tests observe and gate."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any


class AsyncSteps:
    """Async generator: yields "tok0 ", "tok1 ", ... (payload {"n"}); before each item after the first it waits
    for the test to ``step()``; ``produced`` counts items yielded, ``closed`` is set when it ends in any way."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.produced = 0
        self.closed = asyncio.Event()
        self.cancelled = False
        self._steps: asyncio.Queue[None] = asyncio.Queue()

    def step(self) -> None:
        self._steps.put_nowait(None)

    async def predict(self, payload: Any) -> AsyncIterator[str]:
        try:
            for i in range(int(payload.get("n", 3))):
                if i:
                    await self._steps.get()
                self.produced += 1
                yield f"tok{i} "
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed.set()


class SyncSteps:
    """Sync generator (runs on the predictor's threads): like AsyncSteps, gated with threading primitives."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.produced = 0
        self.closed = threading.Event()
        self.exited_by_close = False
        self._steps = threading.Semaphore(0)

    def step(self) -> None:
        self._steps.release()

    def predict(self, payload: Any) -> Iterator[str]:
        try:
            for i in range(int(payload.get("n", 3))):
                # Bounded wait so that a test that forgets a step cannot hang the thread forever.
                if i and not self._steps.acquire(timeout=30):
                    return
                self.produced += 1
                yield f"tok{i} "
        except GeneratorExit:
            self.exited_by_close = True
            raise
        finally:
            self.closed.set()


class Endless:
    """Yields a small chunk every ``interval`` seconds forever; sync or async per payload {"sync": bool}."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.produced = 0
        self.sync_closed = threading.Event()
        self.async_closed = asyncio.Event()
        self.first = asyncio.Event()

    def predict(self, payload: Any) -> Any:
        if payload.get("sync"):
            return self._sync(float(payload.get("interval", 0.01)))
        return self._async(float(payload.get("interval", 0.01)))

    def _sync(self, interval: float) -> Iterator[str]:
        try:
            while True:
                self.produced += 1
                yield "x"
                time.sleep(interval)
        finally:
            self.sync_closed.set()

    async def _async(self, interval: float) -> AsyncIterator[str]:
        try:
            while True:
                self.produced += 1
                self.first.set()
                yield "x"
                await asyncio.sleep(interval)
        finally:
            self.async_closed.set()


class Firehose:
    """Async generator of 64 KiB chunks, as fast as it is asked: ``produced`` shows how far a reader let it run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.produced = 0
        self.closed = asyncio.Event()
        self.chunk = b"z" * 65536

    async def predict(self, payload: Any) -> AsyncIterator[bytes]:
        try:
            while True:
                self.produced += 1
                yield self.chunk
        finally:
            self.closed.set()


class Shapes:
    """Items of every kind: payload {"items": [...]} yielded as they are, {"lines": true} a multi-line str."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    async def predict(self, payload: Any) -> AsyncIterator[Any]:
        for item in payload["items"]:
            yield item


class FailsMidway:
    """Yields payload {"good"} items, then raises (sync or async per {"sync"}); {"before": true}: raises first."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.closed = threading.Event()

    def predict(self, payload: Any) -> Any:
        return self._sync(payload) if payload.get("sync") else self._async(payload)

    def _sync(self, payload: Any) -> Iterator[str]:
        try:
            for i in range(int(payload.get("good", 2))):
                yield f"ok{i}\n"
            raise RuntimeError("generator broke")
        finally:
            self.closed.set()

    async def _async(self, payload: Any) -> AsyncIterator[str]:
        try:
            for i in range(int(payload.get("good", 2))):
                yield f"ok{i}\n"
            raise RuntimeError("generator broke")
        finally:
            self.closed.set()


class Stalls:
    """Yields one chunk, then waits ``stall`` seconds (payload; sync or async per {"sync"}) before the next."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.closed = threading.Event()

    def predict(self, payload: Any) -> Any:
        return self._sync(payload) if payload.get("sync") else self._async(payload)

    def _sync(self, payload: Any) -> Iterator[str]:
        try:
            if payload.get("first_stall"):
                time.sleep(float(payload["first_stall"]))
            yield "first "
            time.sleep(float(payload.get("stall", 0)))
            yield "second "
        finally:
            self.closed.set()

    async def _async(self, payload: Any) -> AsyncIterator[str]:
        try:
            if payload.get("first_stall"):
                await asyncio.sleep(float(payload["first_stall"]))
            yield "first "
            await asyncio.sleep(float(payload.get("stall", 0)))
            yield "second "
        finally:
            self.closed.set()


class ReturnsGenerator:
    """A plain predict (sync) that returns a generator object: streamed too."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict(self, payload: Any) -> Iterator[str]:
        return (f"{i}," for i in range(int(payload["n"])))
