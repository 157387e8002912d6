"""A replica's admission, FIFO queue, execution slots, timeouts and server-side batching.

Decisions come from the pure policies (``policy.admission.admit``, ``policy.batching.decide_flush``);
this module is the I/O around them: futures, timers, the worker threads.

- Without batching, a request holds one of ``max_concurrency`` slots while its ``predict`` runs. A request
  that finds no free slot waits in a FIFO queue; a finishing request hands its slot straight to the oldest
  waiter. Async predictors run on the loop in the request's own task; sync ones on a worker thread.
- With batching, requests wait in a FIFO; a batch of up to ``max_batch_size`` fires when full, or when
  ``batch_interval`` has passed since its first request, and takes one slot for one ``predict_batch`` call.
- A streaming predict (a generator, ``replica_streaming``) holds its slot until its stream ends: ``run``
  returns a ``PredictStream`` that frees the slot when it is closed.
- ``request_timeout`` covers queue + predict (or ends at the ``deadline`` given to ``run``, which a multi-model
  request takes before it waits for its model to load). A sync predict that overruns still holds its slot (and its
  thread) until it really returns — the slot counts threads, not requests — while the client gets 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from types import AsyncGeneratorType, GeneratorType
from typing import Any

from thrifty.config.schema import ServingConfig
from thrifty.dataplane.deadlines import Deadlines, TaskExpiry
from thrifty.dataplane.predictor_loading import LoadedPredictor
from thrifty.dataplane.replica_streaming import PredictStream
from thrifty.dataplane.thread_runner import ThreadRunner
from thrifty.errors import PredictorError, ThriftyError, TimeoutExceededError
from thrifty.policy.admission import RUN_NOW, AdmissionDecision, AdmissionLimits, admit
from thrifty.policy.batching import BatchingLimits, decide_flush


class PredictorFailedError(PredictorError):
    """The predictor raised; ``cause`` is its exception (logged with the traceback, never sent)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class BatchResultError(PredictorError):
    """predict_batch returned something other than one result per payload."""


_STREAM_TYPES = (GeneratorType, AsyncGeneratorType)


def _timeout(timeout_s: float) -> TimeoutExceededError:
    return TimeoutExceededError(f"the request took longer than request_timeout ({timeout_s:g}s)")


class _Job:
    """A request waiting for, or in, a batch."""

    __slots__ = ("arrival_s", "fut", "payload", "running")

    def __init__(self, payload: Any, fut: asyncio.Future[Any], arrival_s: float) -> None:
        self.payload = payload
        self.fut = fut
        self.arrival_s = arrival_s
        self.running = False


class PredictScheduler:
    def __init__(
        self,
        predictor: LoadedPredictor,
        serving: ServingConfig,
        runner: ThreadRunner | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._p = predictor
        self._runner = runner
        self._clock = clock
        self._limits = AdmissionLimits.from_serving(serving)
        self._max_calls = serving.max_concurrency
        self._timeout_s = float(serving.request_timeout)
        self._idle_timeout_s = float(serving.stream_idle_timeout)
        self._max_stream_s = float(serving.max_stream_duration) if serving.max_stream_duration is not None else None
        self._batching = BatchingLimits.from_config(serving.batching) if serving.batching is not None else None
        if self._batching is None and predictor.predict is None:
            raise ValueError("a predictor without predict() needs serving.batching (load_predictor refuses it)")
        # Without batching every request calls predict; a batch-only predictor never reaches these paths.
        self._predict: Callable[[Any], Any] = predictor.predict or _no_predict
        self._waiters: deque[asyncio.Future[None]] = deque()  # without batching: requests waiting for a slot
        self._jobs: deque[_Job] = deque()  # with batching: requests waiting for a batch
        self._executing = 0  # requests executing
        self._calls = 0  # predict_batch calls executing (batching only)
        self._batch_timer: asyncio.TimerHandle | None = None
        self._batch_timer_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self._deadlines = Deadlines(clock)
        self.draining = False

    # -- figures ------------------------------------------------------------------------------------------
    @property
    def executing(self) -> int:
        return self._executing

    @property
    def queued(self) -> int:
        return len(self._waiters) + len(self._jobs)

    def admission(self) -> AdmissionDecision:
        return admit(self._limits, self._executing, len(self._waiters) + len(self._jobs), self.draining)

    async def wait_idle(self) -> None:
        """Until nothing is queued or executing (call after setting ``draining``)."""
        while self._executing or self._waiters or self._jobs:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def _check_idle(self) -> None:
        if self._idle is not None and not (self._executing or self._waiters or self._jobs):
            self._idle.set()

    def deadline(self) -> float:
        """``request_timeout`` from now on the scheduler's clock, for ``run(..., deadline=)``."""
        return self._clock() + self._timeout_s

    def seconds_until(self, deadline: float) -> float:
        return deadline - self._clock()

    # -- one request per call -------------------------------------------------------------------------------
    async def run(self, payload: Any, decision: AdmissionDecision, deadline: float | None = None) -> Any:
        """Run one admitted request until ``deadline`` (default: ``request_timeout`` from now); raises
        TimeoutExceededError, PredictorFailedError or BatchResultError. A streaming predict gives a
        ``PredictStream`` holding the request's slot: the caller must ``aclose()`` it."""
        if deadline is None:
            deadline = self._clock() + self._timeout_s
        if self._batching is not None:
            return await self._run_batched(payload, deadline)
        loop = asyncio.get_running_loop()
        if decision is RUN_NOW:
            self._executing += 1
        else:
            await self._wait_for_slot(loop, deadline)
        if self._clock() >= deadline:
            self._release()
            raise _timeout(self._timeout_s)
        if self._p.predict_streams:
            try:
                gen = self._predict(payload)  # a generator function: no user code runs until the first item
            except Exception as exc:
                self._release()
                raise PredictorFailedError(exc) from exc
            return self._stream(gen, deadline)
        if self._p.predict_is_async:
            return await self._run_async(payload, deadline)
        return await self._run_sync(loop, payload, deadline)

    def _stream(self, gen: Any, deadline: float) -> PredictStream:
        """A generator that holds a slot (taken already) until the stream is closed."""
        return PredictStream(
            gen,
            release=self._release,
            runner=self._runner,
            deadlines=self._deadlines,
            clock=self._clock,
            first_deadline=deadline,
            request_timeout_s=self._timeout_s,
            idle_timeout_s=self._idle_timeout_s,
            max_duration_s=self._max_stream_s,
        )

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self._deadlines.add(waiter, deadline, functools.partial(self._expire_waiter, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # a slot was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                self._check_idle()
            raise
        finally:
            self._deadlines.discard(waiter)

    def _expire_waiter(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            waiter.set_exception(_timeout(self._timeout_s))
            self._check_idle()

    def _release(self) -> None:
        """A slot frees up: hand it to the oldest waiter, or count it free."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._executing -= 1
        if self._idle is not None:
            self._check_idle()

    async def _run_async(self, payload: Any, deadline: float) -> Any:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("no current task")
        expiry = TaskExpiry(task)
        # Registered only around the predictor's await: whenever the sweep runs and finds it, the task is
        # suspended inside predict(), so the cancellation lands there and nowhere else.
        self._deadlines.add(expiry, deadline, expiry.fire)
        streams = False
        try:
            result = await self._predict(payload)
            if result.__class__ in _STREAM_TYPES:  # returned a generator: it keeps the slot
                streams = True
                return self._stream(result, deadline)
            return result
        except asyncio.CancelledError:
            if expiry.fired:
                task.uncancel()
                raise _timeout(self._timeout_s) from None
            raise
        except Exception as exc:
            raise PredictorFailedError(exc) from exc
        finally:
            self._deadlines.discard(expiry)
            if not streams:
                self._release()

    async def _run_sync(self, loop: asyncio.AbstractEventLoop, payload: Any, deadline: float) -> Any:
        fut: asyncio.Future[Any] = loop.create_future()
        release = self._release

        def outcome(ok: bool, value: Any) -> None:
            if ok and value.__class__ in _STREAM_TYPES:  # returned a generator: it keeps the slot
                stream = self._stream(value, deadline)
                if fut.done():  # timed out meanwhile: nobody will read it
                    loop.create_task(stream.aclose())
                else:
                    fut.set_result(stream)
                return
            release()  # the thread is done: only now is its slot free
            if not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(PredictorFailedError(value))

        if self._runner is None:
            raise RuntimeError("a sync predictor needs a ThreadRunner")
        self._runner.submit(self._predict, payload, outcome)
        self._deadlines.add(fut, deadline, functools.partial(_expire_future, fut, self._timeout_s))
        try:
            return await fut
        finally:
            self._deadlines.discard(fut)

    # -- batching -----------------------------------------------------------------------------------------
    async def _run_batched(self, payload: Any, deadline: float) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(payload, loop.create_future(), self._clock())
        self._jobs.append(job)
        self._deadlines.add(job, deadline, functools.partial(self._expire_job, job))
        self._pump_batches()
        try:
            return await job.fut
        finally:
            self._deadlines.discard(job)

    def _expire_job(self, job: _Job) -> None:
        if job.fut.done():
            return
        if not job.running:
            with contextlib.suppress(ValueError):
                self._jobs.remove(job)
        job.fut.set_exception(_timeout(self._timeout_s))
        self._check_idle()

    def _pump_batches(self) -> None:
        limits = self._batching
        if limits is None:
            return
        jobs = self._jobs
        while True:
            oldest = jobs[0].arrival_s if jobs else None
            d = decide_flush(limits, len(jobs), oldest, self._max_calls - self._calls, self._clock())
            if d.batch_size > 0:
                self._start_batch([jobs.popleft() for _ in range(d.batch_size)])
                continue
            if d.wake_at_s is not None:
                self._arm_batch_timer(d.wake_at_s)
            return

    def _arm_batch_timer(self, at_s: float) -> None:
        if self._batch_timer is not None:
            if self._batch_timer_at <= at_s:
                return  # an earlier wake-up will ask again
            self._batch_timer.cancel()
        loop = asyncio.get_running_loop()
        self._batch_timer_at = at_s
        self._batch_timer = loop.call_later(max(0.0, at_s - self._clock()), self._on_batch_timer)

    def _on_batch_timer(self) -> None:
        self._batch_timer = None
        self._pump_batches()

    def _start_batch(self, batch: list[_Job]) -> None:
        self._calls += 1
        self._executing += len(batch)
        for job in batch:
            job.running = True
        payloads = [job.payload for job in batch]
        fn = self._p.predict_batch
        if fn is None:
            raise RuntimeError("batching without predict_batch")

        def outcome(ok: bool, value: Any) -> None:
            self._finish_batch(batch, ok, value)

        if self._p.predict_batch_is_async:
            task = asyncio.get_running_loop().create_task(_call_async(fn, payloads, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._runner is not None:
            self._runner.submit(fn, payloads, outcome)

    def _finish_batch(self, batch: list[_Job], ok: bool, value: Any) -> None:
        self._calls -= 1
        self._executing -= len(batch)
        if ok and isinstance(value, list | tuple) and len(value) == len(batch):
            for job, result in zip(batch, value, strict=True):
                if not job.fut.done():
                    job.fut.set_result(result)
        else:
            if not ok:
                err: ThriftyError = PredictorFailedError(value)
            elif not isinstance(value, list | tuple):
                err = BatchResultError(f"predict_batch must return a list, it returned a {type(value).__name__}")
            else:
                err = BatchResultError(
                    f"predict_batch returned {len(value)} results for {len(batch)} payloads (must be equal)"
                )
            for job in batch:
                if not job.fut.done():
                    job.fut.set_exception(err)
        self._pump_batches()
        self._check_idle()

    def close(self) -> None:
        self._deadlines.close()
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None


def _no_predict(payload: Any) -> Any:
    raise RuntimeError("this predictor has only predict_batch")


def _expire_future(fut: asyncio.Future[Any], timeout_s: float) -> None:
    if not fut.done():
        fut.set_exception(_timeout(timeout_s))


async def _call_async(
    fn: Callable[[list[Any]], Any], payloads: list[Any], outcome: Callable[[bool, Any], None]
) -> None:
    try:
        result = await fn(payloads)
    except Exception as exc:
        outcome(False, exc)
        return
    outcome(True, result)
