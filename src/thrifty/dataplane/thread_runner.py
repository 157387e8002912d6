"""Run a synchronous predictor call on one of N worker threads and get the outcome back on the loop.

Lighter than ``loop.run_in_executor``: no ``concurrent.futures.Future`` with its condition variable, one C
queue hand-off to the worker and one ``call_soon_threadsafe`` back. Admission never submits more calls
than there are threads, so the queue holds at most one item per idle thread. Worker threads are daemons:
a predictor stuck forever must not keep the process alive after the grace period.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

Outcome = Callable[[bool, Any], None]  # (ok, result or exception), called on the loop thread


class ThreadRunner:
    def __init__(self, threads: int, name: str = "predict") -> None:
        self._threads = threads
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, Outcome] | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[threading.Thread] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i in range(self._threads):
            t = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def submit(self, fn: Callable[[Any], Any], arg: Any, outcome: Outcome) -> None:
        self._queue.put((fn, arg, outcome))

    def _work(self) -> None:
        loop = self._loop
        if loop is None:
            return
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fn, arg, outcome = item
            try:
                result = fn(arg)
                ok = True
            except BaseException as exc:  # the predictor's own failure, whatever it is, is a 500
                result, ok = exc, False
            try:
                loop.call_soon_threadsafe(outcome, ok, result)
            except RuntimeError:  # the loop is closed: the process is exiting
                return
            del item, fn, arg, result

    def stop(self) -> None:
        for _ in self._workers:
            self._queue.put(None)
        self._workers.clear()
