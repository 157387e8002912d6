"""Memory cache over a disk cache over a model source, with single-flight loads and pinning.

A request does ``async with cache.acquire(name, version) as loaded: predict(payload, loaded.model)``.

- **Hit**: the version is in memory; it is pinned for the duration of the ``async with`` block.
- **Miss**: one load task per version (single flight): make room on disk (evict first), download to a
  temporary folder and rename it into place, make room in memory (evict first), run the user's
  ``load_model(path)`` in a worker thread, then hand the model to every request that waited for it.
- **Budgets** (count and/or bytes per tier) are enforced before each download and load by
  :func:`thrifty.policy.eviction.plan_eviction`, on books that include reservations of loads in flight.
  An evicted disk copy is deleted before the download that needed its room begins.
- **Pins**: a model in use by a request, and a disk copy being loaded, are never evicted. When only pinned
  entries could make room, the load waits for an unpin up to ``room_wait_s`` and then fails with
  :class:`ModelCacheBusyError` (503, retryable elsewhere): waiting a little absorbs short requests,
  failing after that keeps a replica that is full of slow requests from queueing without bound.
- **Memory size** of a model is ``size_fn(model)`` when given (the predictor's ``model_size``), else the
  size of its files on disk. The first load of a version with ``size_fn`` is admitted on its disk size and
  corrected (evicting more) once the model is built; later loads of that version use the measured size.
- **Failures** (a broken download or load, an unknown model or version) are remembered for
  ``failure_ttl_s`` of ``clock`` and answered from memory meanwhile; other models are unaffected.
- **Versions**: "latest" resolves through an index of known versions that :meth:`ModelCache.poll`
  refreshes; an unknown name or version triggers one on-demand listing (single flight, failures remembered).

All methods must be called from one event loop; blocking I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from thrifty.errors import ThriftyError
from thrifty.models.disk_store import DiskStore
from thrifty.models.errors import ModelCacheBusyError, ModelLoadError, ModelNotFoundError, ModelTooLargeError
from thrifty.models.failures import FailureMemory, copy_error, retrieve_outcome
from thrifty.models.frequency import RequestFrequency
from thrifty.models.names import ModelKey, parse_model_ref
from thrifty.models.room import Tiers, set_size
from thrifty.models.source import ModelSource
from thrifty.models.stats import ModelStats
from thrifty.models.tier import CacheTier, Slot
from thrifty.models.versions import VersionIndex
from thrifty.policy.eviction import CacheBudget

log = logging.getLogger(__name__)

LoadFn = Callable[[str], Any]  # the predictor's load_model(path); sync or async
SizeFn = Callable[[Any], int]  # the predictor's model_size(model)
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    name: str
    version: int
    model: Any
    size_bytes: int


@dataclass(eq=False)
class _Flight:
    task: asyncio.Task[None] = field(repr=False)
    waiters: int = 0
    committed: bool = False  # the waiters' pins were handed to the memory slot


class ModelCache:
    def __init__(
        self,
        source: ModelSource,
        cache_dir: str,
        load_fn: LoadFn,
        *,
        clock: Clock,
        cache_size: int | None = None,
        cache_bytes: int | None = None,
        disk_cache_size: int | None = None,
        disk_cache_bytes: int | None = None,
        size_fn: SizeFn | None = None,
        failure_ttl_s: float = 10.0,
        room_wait_s: float = 10.0,
    ) -> None:
        self._source = source
        self._load_fn = load_fn
        self._size_fn = size_fn
        self._clock = clock
        # Popularity for eviction: counts age every few dozen cache-fulls of requests.
        self._frequency = RequestFrequency(max(256, 32 * (cache_size or 32)))
        self._tiers = Tiers(
            DiskStore(cache_dir),
            CacheBudget(cache_size, cache_bytes),
            CacheBudget(disk_cache_size, disk_cache_bytes),
            room_wait_s=room_wait_s,
            on_evict=self._count_eviction,
            frequency=self._frequency,
        )
        self._memory = self._tiers.memory
        self._disk = self._tiers.disk
        self._failures = FailureMemory(clock, failure_ttl_s)
        self._versions = VersionIndex(source, self._failures)
        self._flights: dict[ModelKey, _Flight] = {}
        self._measured_bytes: dict[ModelKey, int] = {}
        self._stats: dict[str, ModelStats] = {}
        self._started: asyncio.Task[None] | None = None
        self._polls = 0
        self._last_poll_error: str | None = None

    # -- public interface ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the cache folder (clean leftovers, adopt complete versions). Idempotent."""
        if self._started is None:
            self._started = asyncio.create_task(self._adopt_disk())
        await asyncio.shield(self._started)

    async def close(self) -> None:
        """Cancel loads and listings in flight (work already in a thread finishes there)."""
        tasks: list[asyncio.Task[Any]] = [f.task for f in self._flights.values()]
        tasks += self._versions.tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @asynccontextmanager
    async def acquire(self, name: str, version: str | int | None = None) -> AsyncIterator[LoadedModel]:
        """The model, loaded and pinned in memory while the block runs. ``version`` None/"latest" = highest.

        Raises ModelNameError (400), ModelNotFoundError (404), ModelLoadError (500), ModelCacheBusyError (503).
        """
        loaded = await self.pin(name, version)
        try:
            yield loaded
        finally:
            self.unpin(loaded)

    async def pin(self, name: str, version: str | int | None = None) -> LoadedModel:
        """Like :meth:`acquire` for a pin that outlives a block (the replica hands it to a worker thread):
        the model stays pinned until :meth:`unpin` is called with it, exactly once."""
        await self.start()
        key = await self._versions.resolve(name, version)
        return await self._pin(key)

    def unpin(self, loaded: LoadedModel) -> None:
        self._unpin(ModelKey(loaded.name, loaded.version))

    async def preload(self, refs: Sequence[str]) -> dict[str, ThriftyError]:
        """Load ``name`` or ``name/version`` refs one by one; returns the failures by ref (empty = all loaded)."""
        failures: dict[str, ThriftyError] = {}
        for ref in refs:
            try:
                name, version = parse_model_ref(ref)
                async with self.acquire(name, version):
                    pass
            except ThriftyError as exc:
                failures[ref] = exc
        return failures

    async def poll(self) -> None:
        """Refresh the versions of the models with a copy in memory or on disk, or a load in flight; drop
        unused copies of versions that are gone. Other names leave the index (a request for one lists it
        on demand), so a poll costs a listing per cached model, not per model ever requested.

        Source errors are kept for :meth:`snapshot` (``poll.last_error``) and logged, not raised.
        """
        await self.start()
        self._polls += 1
        errors: list[str] = []
        removed: list[str] = []
        limit = asyncio.Semaphore(8)

        async def refresh(name: str) -> None:
            async with limit:
                try:
                    await self._versions.refresh(name)
                except ModelNotFoundError:
                    removed.append(name)  # gone: the index forgot it
                except ThriftyError as exc:
                    errors.append(exc.message)

        cached = {slot.key.name for tier in (self._memory, self._disk) for slot in tier}
        cached.update(key.name for key in self._flights)
        names = []
        for name in self._versions.names():
            if name in cached:
                names.append(name)
            else:
                self._versions.forget(name)
        await asyncio.gather(*(refresh(n) for n in names))
        self._last_poll_error = errors[0] if errors else None
        if errors:
            log.warning("model source poll: %d of %d models failed: %s", len(errors), len(names), errors[0])
        gone = {
            slot.key
            for tier in (self._memory, self._disk)
            for slot in tier
            if slot.key.name in names and slot.key.version not in self._versions.get(slot.key.name)
        }
        for key in gone:
            await self._tiers.discard_unused(key)
        self._forget_figures(removed)

    def _forget_figures(self, names: list[str]) -> None:
        """Drop the counters and measured sizes of models gone from the source once no copy of them is
        left, so that /metrics stops reporting them (a copy still in use keeps them until the next poll)."""
        if not names:
            return
        left = {slot.key.name for tier in (self._memory, self._disk) for slot in tier}
        left.update(key.name for key in self._flights)
        for name in names:
            if name not in left:
                self._stats.pop(name, None)
                for key in [k for k in self._measured_bytes if k.name == name]:
                    del self._measured_bytes[key]

    async def list_models(self) -> list[str]:
        """Every model in the source (one listing; not cached)."""
        return await asyncio.to_thread(self._source.list_models)

    def held(self) -> list[ModelKey]:
        """Versions loaded in memory, least recently used first (reported to the gateway for routing)."""
        return [s.key for s in self._memory if s.state == "ready"]

    def snapshot(self) -> dict[str, Any]:
        """JSON-able metrics: per-model counters and bytes, tier usage, held and loading versions."""
        models: dict[str, dict[str, Any]] = {}
        for name, stats in sorted(self._stats.items()):
            models[name] = {
                **stats.as_dict(),
                "versions": list(self._versions.last_listed(name)),
                "memory_bytes": sum(s.size_bytes for s in self._memory if s.key.name == name),
                "disk_bytes": sum(s.size_bytes for s in self._disk if s.key.name == name),
            }
        return {
            "memory": self._memory.usage(),
            "disk": self._disk.usage(),
            "held": [
                {"model": s.key.name, "version": s.key.version, "bytes": s.size_bytes, "in_use": s.pins}
                for s in self._memory
                if s.state == "ready"
            ],
            "loading": [
                {"model": k.name, "version": k.version, "waiters": f.waiters} for k, f in self._flights.items()
            ],
            "models": models,
            "recent_evictions": list(self._tiers.evictions),
            "poll": {"polls": self._polls, "last_error": self._last_poll_error},
        }

    # -- hits, misses, pins ----------------------------------------------------------------------------

    def _stats_of(self, name: str) -> ModelStats:
        return self._stats.setdefault(name, ModelStats())

    def _count_eviction(self, tier: CacheTier, key: ModelKey) -> None:
        stats = self._stats_of(key.name)
        if tier is self._memory:
            stats.memory_evictions += 1
        else:
            stats.disk_evictions += 1

    async def _pin(self, key: ModelKey) -> LoadedModel:
        stats = self._stats_of(key.name)
        self._frequency.record(key)
        slot = self._memory.get(key)
        if slot is not None and slot.state == "ready":
            stats.hits += 1
            return self._hand_out(slot)
        self._failures.check((key.name, key.version))
        stats.misses += 1
        flight = self._flights.get(key)
        if flight is None:
            # The task starts on the next loop turn, after the flight is registered.
            flight = _Flight(asyncio.create_task(self._load(key)))
            flight.task.add_done_callback(retrieve_outcome)
            self._flights[key] = flight
        flight.waiters += 1
        try:
            await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.committed:
                self._unpin(key)  # the load finished and counted us in; give the pin back
            else:
                flight.waiters -= 1
            raise
        except ThriftyError as exc:
            raise copy_error(exc) from None
        slot = self._memory.get(key)
        if slot is None or slot.state != "ready":  # cannot happen: we hold a pin on it
            raise ModelLoadError(f"model {key} vanished from the cache while pinned")
        return LoadedModel(key.name, key.version, slot.model, slot.size_bytes)

    def _hand_out(self, slot: Slot) -> LoadedModel:
        now = self._clock()
        slot.pins += 1
        self._memory.touch(slot, now)
        disk_slot = self._disk.get(slot.key)
        if disk_slot is not None:
            self._disk.touch(disk_slot, now)
        return LoadedModel(slot.key.name, slot.key.version, slot.model, slot.size_bytes)

    def _unpin(self, key: ModelKey) -> None:
        slot = self._memory.get(key)
        if slot is not None and slot.pins > 0:
            slot.pins -= 1
            self._tiers.notify()

    # -- loading ---------------------------------------------------------------------------------------

    async def _load(self, key: ModelKey) -> None:
        stats = self._stats_of(key.name)
        started_s = self._clock()
        mem_slot: Slot | None = None
        try:
            disk_slot = await self._ensure_on_disk(key, stats)
            try:
                estimate = self._measured_bytes.get(key, disk_slot.size_bytes)
                mem_slot = Slot(key, estimate, self._clock())
                await self._tiers.make_room(self._memory, key, estimate, self._memory.add, mem_slot)
                model, size = await self._call_load_fn(key, disk_slot.path, estimate)
                if size > mem_slot.size_bytes:
                    await self._tiers.make_room(self._memory, key, size, set_size, mem_slot, size)
                mem_slot.size_bytes = size
                self._measured_bytes[key] = size
            finally:
                disk_slot.pins -= 1
                self._tiers.notify()
        except BaseException as exc:
            if mem_slot is not None and self._memory.get(key) is mem_slot:
                self._memory.pop(key)
            # Remembered before the flight ends, so no request in between starts the same load again.
            error = self._record_failure(key, stats, exc) if isinstance(exc, Exception) else None
            self._flights.pop(key, None)
            self._tiers.notify()
            if error is None:
                raise
            if not isinstance(error, ModelCacheBusyError):
                # A broken copy would be loaded again after the TTL; fetch a fresh one instead.
                await self._tiers.discard_unused(key)
            if error is exc:
                raise
            raise error from exc
        flight = self._flights.pop(key)
        mem_slot.model = model
        mem_slot.state = "ready"
        mem_slot.pins = flight.waiters
        flight.committed = True
        self._memory.touch(mem_slot, self._clock())
        stats.load_seconds_count += 1
        stats.load_seconds_sum += max(0.0, self._clock() - started_s)

    def _record_failure(self, key: ModelKey, stats: ModelStats, exc: Exception) -> ThriftyError:
        if isinstance(exc, ModelCacheBusyError):
            return exc  # transient: not remembered
        error = (
            exc
            if isinstance(exc, ThriftyError)
            else ModelLoadError(
                f"model {key.name!r} version {key.version} failed to load: {type(exc).__name__}: {exc}",
                details={"model": key.name, "version": key.version},
            )
        )
        stats.load_failures += 1
        self._failures.remember((key.name, key.version), error)
        if isinstance(error, ModelNotFoundError):
            self._versions.forget(key.name)  # the listing was stale; list again next time
        return error

    async def _call_load_fn(self, key: ModelKey, path: str, disk_bytes: int) -> tuple[Any, int]:
        if inspect.iscoroutinefunction(self._load_fn):
            model = await self._load_fn(path)
        else:
            model = await asyncio.to_thread(self._load_fn, path)
            if inspect.isawaitable(model):
                model = await model
        if self._size_fn is None:
            return model, disk_bytes
        size = await asyncio.to_thread(self._size_fn, model)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ModelLoadError(
                f"model_size() returned {size!r} for model {key}: expected an int >= 0",
                details={"model": key.name, "version": key.version},
            )
        return model, size

    async def _ensure_on_disk(self, key: ModelKey, stats: ModelStats) -> Slot:
        """The version's disk slot, downloaded if needed, with one pin held for the caller."""
        while (slot := self._disk.get(key)) is not None and slot.state != "ready":
            await self._tiers.wait_for_change(1.0)  # an earlier copy of it is still being removed
        if slot is not None:
            slot.pins += 1
            self._disk.touch(slot, self._clock())
            return slot
        estimate = 0
        if self._disk.budget.max_bytes is not None:
            estimate = await asyncio.to_thread(self._source.version_bytes, key.name, key.version)
        slot = Slot(key, estimate, self._clock())
        await self._tiers.make_room(self._disk, key, estimate, self._disk.add, slot)
        temp_dir = ""
        try:
            temp_dir = await asyncio.to_thread(self._tiers.store.new_temp_dir, key)
            written = await asyncio.to_thread(self._source.fetch, key.name, key.version, temp_dir)
            if written > slot.size_bytes:
                await self._tiers.make_room(self._disk, key, written, set_size, slot, written)
            slot.size_bytes = written
            slot.path = await asyncio.to_thread(self._tiers.store.commit, temp_dir, key)
        except BaseException:
            if self._disk.get(key) is slot:
                self._disk.pop(key)
            if temp_dir:
                await asyncio.shield(asyncio.to_thread(self._tiers.store.discard, temp_dir))
            self._tiers.notify()
            raise
        stats.downloads += 1
        stats.download_bytes += written
        slot.state = "ready"
        slot.pins = 1
        return slot

    async def _adopt_disk(self) -> None:
        try:
            stored_versions = await asyncio.to_thread(self._tiers.store.prepare)
        except OSError as exc:
            raise ModelLoadError(f"the model cache folder is unusable: {exc}") from exc
        for stored in stored_versions:
            slot = Slot(stored.key, stored.size_bytes, self._clock(), state="ready")
            slot.path = self._tiers.store.version_dir(stored.key)
            try:
                await self._tiers.make_room(self._disk, stored.key, stored.size_bytes, self._disk.add, slot)
            except ModelTooLargeError:
                await asyncio.to_thread(self._tiers.store.remove, stored.key)
