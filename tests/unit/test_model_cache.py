"""Unit tests of the model cache (thrifty.models): names, hits and LRU, single flight, budgets, pins,
negative caching, versions and crash safety. Fake source, fake clock, real files in tmp_path, no sockets."""

from __future__ import annotations

import asyncio
import gc
import os
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from thrifty.config.schema import ModelsConfig
from thrifty.errors import ConfigError, NotFoundError, PredictorLoadError, ThriftyError
from thrifty.models import (
    LoadedModel,
    ModelCache,
    ModelCacheBusyError,
    ModelKey,
    ModelLoadError,
    ModelNameError,
    ModelNotFoundError,
    ModelRepository,
    ModelTooLargeError,
    model_cache_from_config,
    parse_model_ref,
    parse_version,
    validate_model_name,
)
from thrifty.models.disk_store import tree_bytes
from thrifty.models.fake_source import FakeModelSource


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """load_model(path): reads every file of the version; counts calls; can be gated or broken."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.broken: set[str] = set()  # model names whose load raises
        self.probe: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, path: str) -> dict[str, bytes]:
        self.calls.append(path)
        self.started.set()
        if self.probe is not None:
            await self.probe()
        if self.gate is not None:
            await self.gate.wait()
        name = Path(path).parent.name
        if name in self.broken:
            raise ValueError(f"cannot unpickle {name}")
        return await asyncio.to_thread(read_tree, path)


def read_tree(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for root, _dirs, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = Path(full).read_bytes()
    return out


def blob(n: int, tag: str = "") -> bytes:
    return (tag.encode() + b"x" * n)[:n]


def make_cache(tmp_path: Path, source: FakeModelSource, loader: Any, clock: FakeClock, **kwargs: Any) -> ModelCache:
    return ModelCache(source, str(tmp_path / "cache"), loader, clock=clock, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def loader() -> Loader:
    return Loader()


@pytest.fixture
def source() -> FakeModelSource:
    src = FakeModelSource()
    for name in ("a", "b", "c", "d"):
        src.put(name, 1, {"weights.bin": blob(100, name)})
    return src


# -- names ------------------------------------------------------------------------------------------------

VALID_NAMES = ["a", "en-de", "model_1.v2", "A.b-c_d", "0", "x" * 128]
INVALID_NAMES = [
    "",
    "../etc",
    "..",
    ".",
    ".hidden",
    "a/b",
    "/abs",
    "a..b",
    "%2e%2e",
    "%2F",
    "ü",
    "\uff4dodel",  # fullwidth m
    "a b",
    "a\x00b",
    "a\\b",
    "x" * 129,
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_model_names(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(ModelNameError) as info:
        validate_model_name(name)
    assert info.value.code == "invalid_model_name"
    assert info.value.http_status == 400
    assert isinstance(info.value, ThriftyError)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("latest", None), ("3", 3), (3, 3), (0, 0), ("0012", 12)])
def test_valid_versions(raw: str | int | None, expected: int | None) -> None:
    assert parse_version(raw) == expected


@pytest.mark.parametrize("raw", ["", "-1", -1, "1.0", "+3", "0x1", "٣", "Latest", "1" * 19, "../1", True])
def test_invalid_versions(raw: Any) -> None:
    with pytest.raises(ModelNameError):
        parse_version(raw)


def test_model_refs() -> None:
    assert parse_model_ref("en-de") == ("en-de", None)
    assert parse_model_ref("en-de/7") == ("en-de", 7)
    with pytest.raises(ModelNameError):
        parse_model_ref("en-de/7/x")


@pytest.mark.parametrize("name", ["../etc", "a/b", "%2e%2e", "", "ü", ".tmp-a-1-x"])
async def test_cache_rejects_bad_names_before_any_io(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock, name: str
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2)
    with pytest.raises(ModelNameError):
        async with cache.acquire(name):
            pass
    assert source.listings == 0
    assert source.total_fetches == 0
    assert os.listdir(tmp_path) == ["cache"]


# -- hits, misses, LRU ------------------------------------------------------------------------------------


async def test_hit_miss_and_lru_eviction(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2)
    for name in ["a", "b", "a", "c", "a", "b"]:
        clock.now += 1
        async with cache.acquire(name) as loaded:
            assert loaded.name == name
            assert loaded.version == 1
            assert loaded.model == {"weights.bin": blob(100, name)}
    # a b a(hit) c(evicts b) a(hit) b(evicts c)
    assert cache.held() == [ModelKey("a", 1), ModelKey("b", 1)]
    snap = cache.snapshot()
    assert snap["models"]["a"]["hits"] == 2
    assert snap["models"]["a"]["misses"] == 1
    assert snap["models"]["a"]["load_seconds_count"] == 1
    assert snap["models"]["b"]["load_seconds_count"] == 2
    assert snap["models"]["b"]["downloads"] == 1
    assert snap["models"]["b"]["misses"] == 2
    assert snap["models"]["b"]["memory_evictions"] == 1
    assert snap["models"]["c"]["memory_evictions"] == 1
    assert snap["memory"] == {"count": 2, "bytes": 200, "max_count": 2, "max_bytes": None}
    assert len(loader.calls) == 4
    assert source.total_fetches == 3  # b's second load came from the disk cache
    assert snap["recent_evictions"][0]["tier"] == "memory"
    assert snap["recent_evictions"][0]["evicted"] == ["b/1"]


async def test_popular_model_survives_a_stream_of_rarely_used_ones(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    """Frequency before recency: one-off models take each other's place, not the popular one's."""
    for name in ("r1", "r2", "r3", "r4"):
        source.put(name, 1, {"weights.bin": blob(100, name)})
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2)
    for _ in range(3):
        clock.now += 1
        async with cache.acquire("a"):
            pass
    for name in ("r1", "r2", "r3", "r4"):
        clock.now += 1
        async with cache.acquire(name):
            pass
    assert ModelKey("a", 1) in cache.held()  # plain LRU would have evicted it at r2
    clock.now += 1
    async with cache.acquire("a"):
        pass
    assert cache.snapshot()["models"]["a"]["misses"] == 1


async def test_sync_load_function_runs_in_a_thread(tmp_path: Path, source: FakeModelSource, clock: FakeClock) -> None:
    import threading

    main_thread = threading.get_ident()
    threads: list[int] = []

    def load(path: str) -> str:
        threads.append(threading.get_ident())
        return Path(path, "weights.bin").read_text()

    cache = make_cache(tmp_path, source, load, clock, cache_size=1)
    async with cache.acquire("a") as loaded:
        assert loaded.model == blob(100, "a").decode()
    assert threads and threads[0] != main_thread


# -- single flight ----------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (bounded; no sleeping on the clock)."""
    for _ in range(200_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def wait_for_waiters(cache: ModelCache, n: int) -> None:
    await until(lambda: any(f["waiters"] == n for f in cache.snapshot()["loading"]))


async def test_single_flight_one_fetch_one_load(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2)
    loader.gate = asyncio.Event()
    results: list[LoadedModel] = []

    async def request() -> None:
        async with cache.acquire("a") as loaded:
            results.append(loaded)

    tasks = [asyncio.create_task(request()) for _ in range(20)]
    await loader.started.wait()
    await wait_for_waiters(cache, 20)
    loader.gate.set()
    await asyncio.gather(*tasks)
    assert source.fetches[ModelKey("a", 1)] == 1
    assert len(loader.calls) == 1
    assert len(results) == 20
    assert all(r.model is results[0].model for r in results)
    assert cache.snapshot()["models"]["a"]["misses"] == 20
    assert cache.snapshot()["held"] == [{"model": "a", "version": 1, "bytes": 100, "in_use": 0}]


async def test_single_flight_failure_reaches_every_waiter_and_is_remembered(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2, failure_ttl_s=10.0)
    loader.gate = asyncio.Event()
    loader.broken.add("a")

    async def request() -> ThriftyError:
        with pytest.raises(ModelLoadError) as info:
            async with cache.acquire("a"):
                pass
        return info.value

    tasks = [asyncio.create_task(request()) for _ in range(5)]
    await wait_for_waiters(cache, 5)
    loader.gate.set()
    errors = await asyncio.gather(*tasks)
    assert all(e.code == "model_load_failed" and "cannot unpickle a" in e.message for e in errors)
    assert len({id(e) for e in errors}) == 5  # each request gets its own exception object
    assert source.total_fetches == 1
    assert len(loader.calls) == 1

    # Remembered: no new download or load within the TTL, and other models keep serving.
    clock.now += 9.9
    with pytest.raises(ModelLoadError) as info:
        async with cache.acquire("a"):
            pass
    assert info.value.details["retry_after_s"] == pytest.approx(0.1)
    async with cache.acquire("b") as loaded:
        assert loaded.name == "b"
    assert source.fetches[ModelKey("a", 1)] == 1
    assert cache.snapshot()["models"]["a"]["load_failures"] == 1
    assert not (tmp_path / "cache" / "a" / "1").exists()  # the broken copy was dropped

    # After the TTL it is downloaded and loaded again.
    clock.now += 0.2
    loader.broken.clear()
    async with cache.acquire("a") as loaded:
        assert loaded.model == {"weights.bin": blob(100, "a")}
    assert source.fetches[ModelKey("a", 1)] == 2


async def test_failed_download_leaves_nothing_and_is_remembered(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    source.put("big", 1, {"part1": b"x" * 10, "part2": b"y" * 10})
    source.broken.add(ModelKey("big", 1))  # fails after writing the first file
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2, disk_cache_bytes=1000)
    with pytest.raises(ModelLoadError, match="connection reset"):
        async with cache.acquire("big"):
            pass
    assert sorted(os.listdir(tmp_path / "cache")) == []  # no half model, no temp folder
    assert cache.snapshot()["disk"]["bytes"] == 0
    with pytest.raises(ModelLoadError):
        async with cache.acquire("big"):
            pass
    assert source.total_fetches == 1
    assert loader.calls == []


async def test_cancelled_waiter_does_not_cancel_the_load_or_leak_a_pin(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1, room_wait_s=0)
    loader.gate = asyncio.Event()

    async def request() -> None:
        async with cache.acquire("a"):
            pass

    first = asyncio.create_task(request())
    second = asyncio.create_task(request())
    await wait_for_waiters(cache, 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    loader.gate.set()
    await second
    assert cache.snapshot()["held"][0]["in_use"] == 0
    loader.gate = None
    async with cache.acquire("b"):  # "a" is unpinned, so it can be evicted at once
        pass
    assert cache.held() == [ModelKey("b", 1)]


# -- budgets and pins -------------------------------------------------------------------------------------


BUDGETS = {
    "bytes": {"cache_bytes": 700, "disk_cache_bytes": 1500},
    "counts": {"cache_size": 3, "disk_cache_size": 5},
    "both": {"cache_size": 4, "cache_bytes": 600, "disk_cache_size": 8, "disk_cache_bytes": 1200},
}


@pytest.mark.parametrize("budget", list(BUDGETS))
async def test_budgets_are_never_exceeded(tmp_path: Path, loader: Loader, clock: FakeClock, budget: str) -> None:
    limits = BUDGETS[budget]
    rng = random.Random(7)
    source = FakeModelSource()
    sizes = {f"m{i}": rng.randint(10, 300) for i in range(30)}
    for name, size in sizes.items():
        source.put(name, 1, {"w": blob(size, name), "meta/cfg": blob(7, name)})
    cache = make_cache(tmp_path, source, loader, clock, room_wait_s=30, **limits)
    cache_dir = str(tmp_path / "cache")
    inf = 10**12
    observations = 0
    # One worker thread: file operations of the cache and the probe's walk of the folder cannot interleave
    # (a walk during a rename could count a download twice).
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)

    def on_disk() -> tuple[int, int]:
        """(version folders, bytes) really in the cache folder, temp folders included."""
        folders = sum(
            1 if n.startswith(".") else len(os.listdir(os.path.join(cache_dir, n))) for n in os.listdir(cache_dir)
        )
        return folders, tree_bytes(cache_dir)

    async def check() -> None:
        nonlocal observations
        observations += 1
        snap = cache.snapshot()
        assert snap["memory"]["count"] <= limits.get("cache_size", inf)
        assert snap["memory"]["bytes"] <= limits.get("cache_bytes", inf)
        assert snap["disk"]["count"] <= limits.get("disk_cache_size", inf)
        assert snap["disk"]["bytes"] <= limits.get("disk_cache_bytes", inf)
        assert sum(h["bytes"] for h in snap["held"]) <= limits.get("cache_bytes", inf)
        folders, disk_bytes = await loop.run_in_executor(None, on_disk)
        assert folders <= limits.get("disk_cache_size", inf)
        assert disk_bytes <= limits.get("disk_cache_bytes", inf)

    loader.probe = check
    names = list(sizes)
    weights = [1.0 / (i + 1) for i in range(len(names))]  # Zipf-like popularity

    async def request(name: str) -> None:
        clock.now += 0.001
        async with cache.acquire(name) as loaded:
            assert loaded.model["w"] == blob(sizes[name], name)
            await check()
            await asyncio.sleep(0)

    try:
        for _ in range(15):
            batch = rng.choices(names, weights=weights, k=6)
            await asyncio.gather(*(request(n) for n in batch))
            await check()
    finally:
        executor.shutdown(wait=True)
    snap = cache.snapshot()
    assert observations > 100
    assert sum(m["memory_evictions"] for m in snap["models"].values()) > 0
    assert sum(m["disk_evictions"] for m in snap["models"].values()) > 0
    # The books match the folders.
    folders = sorted(f"{n}/{v}" for n in os.listdir(cache_dir) for v in os.listdir(os.path.join(cache_dir, n)))
    assert folders == sorted(f"{n}/1" for n, m in snap["models"].items() if m["disk_bytes"])


async def test_load_seconds_use_the_given_clock(tmp_path: Path, source: FakeModelSource, clock: FakeClock) -> None:
    def slow_load(path: str) -> str:
        clock.now += 0.25
        return path

    cache = make_cache(tmp_path, source, slow_load, clock, cache_size=1)
    for name in ["a", "b", "a"]:
        async with cache.acquire(name):
            pass
    stats = cache.snapshot()["models"]["a"]
    assert stats["load_seconds_count"] == 2
    assert stats["load_seconds_sum"] == pytest.approx(0.5)


async def test_disk_lru_by_count(tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1, disk_cache_size=2)
    for name in ["a", "b", "a", "c"]:
        clock.now += 1
        async with cache.acquire(name):
            pass
    assert sorted(os.listdir(tmp_path / "cache")) == ["a", "c"]  # b's folder removed (empty name folder too)
    snap = cache.snapshot()
    assert snap["models"]["b"]["disk_evictions"] == 1
    assert snap["models"]["b"]["disk_bytes"] == 0
    assert snap["disk"]["count"] == 2


async def test_pinned_model_is_never_evicted_busy_when_no_room(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1, room_wait_s=0)
    async with cache.acquire("a") as held:
        with pytest.raises(ModelCacheBusyError) as info:
            async with cache.acquire("b"):
                pass
        assert info.value.http_status == 503
        assert info.value.details["verdict"] == "blocked_by_pins"
        assert cache.held() == [ModelKey("a", 1)]
        assert held.model == {"weights.bin": blob(100, "a")}
    # Busy is transient, not remembered: once "a" is released, "b" loads.
    async with cache.acquire("b"):
        pass
    assert cache.held() == [ModelKey("b", 1)]


async def test_load_waits_for_an_unpin(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1, room_wait_s=60)
    release = asyncio.Event()
    a_held = asyncio.Event()

    async def hold_a() -> None:
        async with cache.acquire("a"):
            a_held.set()
            await release.wait()

    holder = asyncio.create_task(hold_a())
    await a_held.wait()
    waiter = asyncio.create_task(cache.preload(["b"]))
    await until(lambda: bool(cache.snapshot()["loading"]))
    assert cache.held() == [ModelKey("a", 1)]  # b waits: a is in use
    release.set()
    await holder
    assert await waiter == {}
    assert cache.held() == [ModelKey("b", 1)]


async def test_model_larger_than_the_budget(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    source.put("huge", 1, {"w": b"x" * 5000})
    cache = make_cache(tmp_path, source, loader, clock, cache_bytes=1000, disk_cache_bytes=100_000)
    with pytest.raises(ModelTooLargeError) as info:
        async with cache.acquire("huge"):
            pass
    assert info.value.code == "model_too_large"
    assert info.value.http_status == 500
    async with cache.acquire("a"):
        pass


async def test_disk_budget_checked_before_download(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    source.put("huge", 1, {"w": b"x" * 5000})
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2, disk_cache_bytes=1000)
    with pytest.raises(ModelTooLargeError):
        async with cache.acquire("huge"):
            pass
    assert source.total_fetches == 0


async def test_size_fn_measures_memory(tmp_path: Path, source: FakeModelSource, clock: FakeClock) -> None:
    def load(path: str) -> int:
        return 400 if Path(path).parent.name == "c" else 250  # its size in memory, for model_size below

    def model_size(model: int) -> int:
        return model

    cache = make_cache(tmp_path, source, load, clock, cache_bytes=600, size_fn=model_size)
    for name in ["a", "b"]:
        clock.now += 1
        async with cache.acquire(name) as loaded:
            assert loaded.size_bytes == 250
    assert cache.snapshot()["memory"]["bytes"] == 500
    clock.now += 1
    async with cache.acquire("c") as loaded:  # admitted on 100 disk bytes, measured 400: evicts a and b
        assert loaded.size_bytes == 400
    assert cache.held() == [ModelKey("c", 1)]
    assert cache.snapshot()["memory"]["bytes"] == 400


async def test_size_fn_must_return_an_int(tmp_path: Path, source: FakeModelSource, clock: FakeClock) -> None:
    cache = make_cache(tmp_path, source, lambda path: path, clock, cache_size=1, size_fn=lambda m: -1)
    with pytest.raises(ModelLoadError, match="model_size"):
        async with cache.acquire("a"):
            pass


# -- not found and versions -------------------------------------------------------------------------------


async def test_unknown_model_is_404_and_remembered(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1)
    for _ in range(3):
        with pytest.raises(ModelNotFoundError) as info:
            async with cache.acquire("nope"):
                pass
    assert isinstance(info.value, NotFoundError)
    assert info.value.http_status == 404
    assert info.value.code == "model_not_found"
    assert source.listings == 1
    clock.now += 11
    source.put("nope", 4, {"w": b"1"})
    async with cache.acquire("nope") as loaded:
        assert loaded.version == 4
    # The negative entry is gone: the model is listed with the version that now exists.
    assert cache.snapshot()["models"]["nope"]["versions"] == [4]


async def test_unknown_version_is_404(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1)
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        async with cache.acquire("a", "9"):
            pass


async def test_latest_follows_poll_and_pinned_versions_keep_working(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=3)
    async with cache.acquire("a", "latest") as loaded:
        assert loaded.version == 1
    source.put("a", 2, {"weights.bin": b"v2"})
    async with cache.acquire("a") as loaded:
        assert loaded.version == 1  # not polled yet
    await cache.poll()
    async with cache.acquire("a") as loaded:
        assert loaded.version == 2
        assert loaded.model == {"weights.bin": b"v2"}
    async with cache.acquire("a", 1) as loaded:
        assert loaded.version == 1
    assert cache.snapshot()["models"]["a"]["versions"] == [1, 2]

    # An explicitly requested version newer than the index is listed on demand.
    source.put("a", 3, {"weights.bin": b"v3"})
    async with cache.acquire("a", "3") as loaded:
        assert loaded.model == {"weights.bin": b"v3"}

    # A version removed from the source: its unused copies go at the next poll, requests get 404.
    source.remove("a", 1)
    await cache.poll()
    assert ModelKey("a", 1) not in cache.held()
    assert not (tmp_path / "cache" / "a" / "1").exists()
    with pytest.raises(ModelNotFoundError):
        async with cache.acquire("a", 1):
            pass


async def test_version_removed_while_in_use_stays_until_released(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=3)
    async with cache.acquire("a") as loaded:
        source.remove("a")
        await cache.poll()
        assert ModelKey("a", 1) in cache.held()
        assert loaded.model == {"weights.bin": blob(100, "a")}
    with pytest.raises(ModelNotFoundError):
        async with cache.acquire("a"):
            pass


async def test_preload_reports_failures(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=3)
    failures = await cache.preload(["a", "b/1", "nope", "../x"])
    assert sorted(failures) == ["../x", "nope"]
    assert isinstance(failures["../x"], ModelNameError)
    assert isinstance(failures["nope"], ModelNotFoundError)
    assert cache.held() == [ModelKey("a", 1), ModelKey("b", 1)]


# -- crash safety and restarts ----------------------------------------------------------------------------


async def test_partial_download_left_by_a_crash_is_cleaned_and_never_served(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache_dir = tmp_path / "cache"
    partial = cache_dir / ".tmp-a-1-crashed"
    partial.mkdir(parents=True)
    (partial / "weights.bin").write_bytes(b"xx")  # half of a download
    trash = cache_dir / ".trash-0123"
    (trash / "sub").mkdir(parents=True)
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1)
    await cache.start()
    assert os.listdir(cache_dir) == []
    async with cache.acquire("a") as loaded:
        assert loaded.model == {"weights.bin": blob(100, "a")}
    assert source.total_fetches == 1


async def test_complete_versions_are_adopted_after_a_restart(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    first = make_cache(tmp_path, source, loader, clock, cache_size=1, disk_cache_size=4)
    for name in ["a", "b", "c"]:
        async with first.acquire(name):
            pass
    await first.close()
    assert source.total_fetches == 3

    second = make_cache(tmp_path, source, loader, clock, cache_size=1, disk_cache_size=2)
    await second.start()
    assert second.snapshot()["disk"]["count"] == 2  # trimmed to the new budget at start
    on_disk = sorted(os.listdir(tmp_path / "cache"))
    assert len(on_disk) == 2
    for name in on_disk:
        async with second.acquire(name):
            pass
    assert source.total_fetches == 3  # served from the adopted copies


async def test_cache_folder_symlinked_outside_is_refused(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "a").symlink_to(outside, target_is_directory=True)
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1)
    with pytest.raises(ModelLoadError, match="outside the model cache"):
        async with cache.acquire("a"):
            pass
    assert os.listdir(outside) == []


# -- building from config ---------------------------------------------------------------------------------


class SizedPredictor:
    def load_model(self, path: str) -> bytes:
        return Path(path, "weights.bin").read_bytes()

    def model_size(self, model: bytes) -> int:
        return 3 * len(model)


async def test_model_cache_from_config(tmp_path: Path, source: FakeModelSource, clock: FakeClock) -> None:
    config = ModelsConfig(source="ignored-when-a-source-is-given", cache_bytes=700, preload=["a", "b/1"])
    cache = model_cache_from_config(config, SizedPredictor(), str(tmp_path / "cache"), clock=clock, source=source)
    assert await cache.preload(config.preload) == {}
    snap = cache.snapshot()
    assert snap["memory"] == {"count": 2, "bytes": 600, "max_count": None, "max_bytes": 700}


def test_model_cache_from_config_needs_load_model(tmp_path: Path, clock: FakeClock) -> None:
    config = ModelsConfig(source=str(tmp_path), cache_size=1)
    with pytest.raises(PredictorLoadError, match="load_model"):
        model_cache_from_config(config, object(), str(tmp_path / "cache"), clock=clock)


@pytest.mark.parametrize("uri", ["nope://bucket/models", "gs://bucket/models"])
def test_unusable_source_is_a_config_error(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"models\.source"):
        ModelRepository(uri)


def test_missing_local_source(tmp_path: Path) -> None:
    repo = ModelRepository(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        repo.list_models()


async def test_failed_load_with_every_waiter_cancelled_is_not_an_unhandled_error(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1)
    loader.gate = asyncio.Event()
    loader.broken.add("a")

    async def request() -> None:
        async with cache.acquire("a"):
            pass

    waiter = asyncio.create_task(request())
    await wait_for_waiters(cache, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    loader.gate.set()
    await until(lambda: asyncio.all_tasks() == {asyncio.current_task()})  # the load task has ended
    gc.collect()
    assert unhandled == []
    with pytest.raises(ModelLoadError):  # the failure was still recorded
        async with cache.acquire("a"):
            pass


class FlakySource(FakeModelSource):
    list_error: Exception | None = None

    def list_versions(self, name: str) -> list[int]:
        if self.list_error is not None:
            raise self.list_error
        return super().list_versions(name)


async def test_a_failed_listing_for_an_unknown_version_leaves_the_known_versions_serving(
    tmp_path: Path, loader: Loader, clock: FakeClock
) -> None:
    source = FlakySource()
    source.put("a", 1, {"weights.bin": b"v1"})
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2)
    async with cache.acquire("a") as loaded:
        assert loaded.version == 1
    source.list_error = OSError("503 SlowDown")
    with pytest.raises(ModelLoadError, match="SlowDown"):
        async with cache.acquire("a", 2):
            pass
    source.list_error = None
    async with cache.acquire("a") as loaded:  # a memory hit: the failed listing was about version 2 only
        assert loaded.version == 1
    async with cache.acquire("a", 1) as loaded:
        assert loaded.version == 1
    with pytest.raises(ModelLoadError):  # version 2's failure is remembered for the TTL
        async with cache.acquire("a", 2):
            pass


async def test_poll_lists_only_the_models_with_a_copy(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=1, disk_cache_size=2)
    for name in ("a", "b", "c", "d"):
        async with cache.acquire(name):
            pass
    before = source.listings
    await cache.poll()
    assert source.listings - before == 2  # c and d are on disk; a and b are gone from both tiers
    assert cache.snapshot()["models"]["a"]["versions"] == [1]  # the figures keep its last listing
    before = source.listings
    async with cache.acquire("a"):  # forgotten by the index: listed again on demand
        pass
    assert source.listings - before == 1


async def test_a_model_gone_from_the_source_leaves_the_figures(
    tmp_path: Path, source: FakeModelSource, loader: Loader, clock: FakeClock
) -> None:
    cache = make_cache(tmp_path, source, loader, clock, cache_size=2)
    for name in ("a", "b"):
        async with cache.acquire(name):
            pass
    source.remove("a")
    await cache.poll()
    assert sorted(cache.snapshot()["models"]) == ["b"]
