"""The fsspec model repository and the model cache against real sources on loopback: a local folder,
``file://``, an S3-compatible server (moto's standalone server, read through s3fs) and a plain HTTP server
with directory listings (python's http.server)."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thrifty.models import (
    ModelCache,
    ModelLoadError,
    ModelNameError,
    ModelNotFoundError,
    ModelRepository,
)

BUCKET = "thrifty-models"


# -- a model tree -----------------------------------------------------------------------------------------


def save_array(path: Path, values: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, np.array(values, dtype=np.float32))


def build_tree(root: Path) -> None:
    """Two versioned models, one unversioned, plus things that are not models or not versions."""
    save_array(root / "en-de" / "1" / "weights.npy", [1.0, 1.0])
    save_array(root / "en-de" / "2" / "weights.npy", [2.0, 2.0])
    (root / "en-de" / "2" / "vocab").mkdir()
    (root / "en-de" / "2" / "vocab" / "words.txt").write_text("hallo welt\n")
    (root / "en-de" / "007").mkdir()  # not a canonical version number: ignored
    (root / "en-de" / "007" / "x").write_text("x")
    (root / "en-de" / "README.md").write_text("top-level files of a versioned model are ignored")
    save_array(root / "en-fr" / "10" / "weights.npy", [10.0])
    save_array(root / "sentiment" / "weights.npy", [0.5])  # unversioned: reported as version 1
    (root / "sentiment" / "extra").mkdir()
    (root / "sentiment" / "extra" / "labels.txt").write_text("neg pos\n")
    (root / "bad..name" / "1").mkdir(parents=True)  # invalid name: skipped
    (root / "bad..name" / "1" / "w").write_text("w")
    (root / "index-notes.txt").write_text("a file at the root is not a model")


def load_model(path: str) -> np.ndarray[Any, Any]:
    with open(os.path.join(path, "weights.npy"), "rb") as f:
        array: np.ndarray[Any, Any] = np.load(f)
    return array


# -- sources ----------------------------------------------------------------------------------------------


@dataclass
class Source:
    kind: str
    uri: str
    storage_options: dict[str, Any]
    put_file: Callable[[str, bytes], None]  # relative key -> content, visible at once


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # returns once the server accepts connections
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "http-root"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()  # the socket is bound and listening already
    try:
        yield root, f"http://127.0.0.1:{server.server_port}/models"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(params=["local", "file", "s3", "http"])
def source(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Source:
    kind: str = request.param
    if kind in ("local", "file"):
        root = tmp_path / "repo"
        build_tree(root)

        def put_local(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        uri = str(root) if kind == "local" else f"file://{root}"
        return Source(kind, uri, {}, put_local)
    if kind == "http":
        served, base_url = request.getfixturevalue("http_root")
        root = served / "models"
        build_tree(root)

        def put_served(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        return Source(kind, base_url, {}, put_served)

    import boto3

    endpoint = request.getfixturevalue("s3_server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = f"{BUCKET}-{abs(hash(request.node.name)) % 10**8}"
    client.create_bucket(Bucket=bucket)
    staging = tmp_path / "staging"
    build_tree(staging)
    for dirpath, _dirs, files in os.walk(staging):
        for name in files:
            full = Path(dirpath, name)
            client.put_object(Bucket=bucket, Key=f"translators/{full.relative_to(staging)}", Body=full.read_bytes())

    def put_s3(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"translators/{key}", Body=data)

    return Source(kind, f"s3://{bucket}/translators/", {"endpoint_url": endpoint}, put_s3)


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- repository -------------------------------------------------------------------------------------------


def test_list_models_and_versions(source: Source) -> None:
    repo = ModelRepository(source.uri, source.storage_options)
    assert repo.list_models() == ["en-de", "en-fr", "sentiment"]
    assert repo.list_versions("en-de") == [1, 2]
    assert repo.list_versions("en-fr") == [10]
    assert repo.list_versions("sentiment") == [1]
    with pytest.raises(ModelNotFoundError):
        repo.list_versions("nope")
    with pytest.raises(ModelNotFoundError):
        repo.list_versions("index-notes.txt")  # a file, not a model
    with pytest.raises(ModelNameError):
        repo.list_versions("../repo")


def test_fetch_versioned_and_unversioned(source: Source, tmp_path: Path) -> None:
    repo = ModelRepository(source.uri, source.storage_options)
    dest = tmp_path / "dest-v2"
    dest.mkdir()
    written = repo.fetch("en-de", 2, str(dest))
    files = tree_files(dest)
    assert sorted(files) == ["vocab/words.txt", "weights.npy"]
    assert files["vocab/words.txt"] == b"hallo welt\n"
    assert written == sum(len(b) for b in files.values()) == repo.version_bytes("en-de", 2)
    assert load_model(str(dest)).tolist() == [2.0, 2.0]

    dest = tmp_path / "dest-unversioned"
    dest.mkdir()
    repo.fetch("sentiment", 1, str(dest))
    assert sorted(tree_files(dest)) == ["extra/labels.txt", "weights.npy"]

    dest = tmp_path / "dest-missing"
    dest.mkdir()
    with pytest.raises(ModelNotFoundError):
        repo.fetch("en-de", 3, str(dest))
    with pytest.raises(ModelNotFoundError):
        repo.fetch("sentiment", 2, str(dest))
    assert os.listdir(dest) == []


def test_new_version_is_listed_at_once(source: Source) -> None:
    repo = ModelRepository(source.uri, source.storage_options)
    assert repo.list_versions("en-de") == [1, 2]  # fills fsspec's listing caches
    source.put_file("en-de/3/weights.npy", b"new")
    assert repo.list_versions("en-de") == [1, 2, 3]


# -- the cache over a real repository ---------------------------------------------------------------------


async def test_cache_serves_latest_and_follows_new_versions(source: Source, tmp_path: Path) -> None:
    repo = ModelRepository(source.uri, source.storage_options)
    cache = ModelCache(repo, str(tmp_path / "cache"), load_model, clock=time.monotonic, cache_size=2, disk_cache_size=3)
    try:
        async with cache.acquire("en-de") as loaded:
            assert loaded.version == 2
            assert loaded.model.tolist() == [2.0, 2.0]
        async with cache.acquire("sentiment", "1") as loaded:
            assert loaded.model.tolist() == [0.5]

        staging = tmp_path / "v3.npy"
        save_array(staging, [3.0, 3.0])
        source.put_file("en-de/3/weights.npy", staging.read_bytes())
        async with cache.acquire("en-de") as loaded:
            assert loaded.version == 2  # until the next poll
        await cache.poll()
        async with cache.acquire("en-de") as loaded:
            assert loaded.version == 3
            assert loaded.model.tolist() == [3.0, 3.0]
        async with cache.acquire("en-de", 1) as loaded:  # a pinned older version keeps working
            assert loaded.model.tolist() == [1.0, 1.0]

        with pytest.raises(ModelNotFoundError):
            async with cache.acquire("nope"):
                pass
        snap = cache.snapshot()
        assert snap["models"]["en-de"]["versions"] == [1, 2, 3]
        assert snap["memory"]["count"] == 2
        assert snap["disk"]["count"] == 3
        assert sorted(os.listdir(tmp_path / "cache")) == ["en-de"]
        assert await cache.list_models() == ["en-de", "en-fr", "sentiment"]
    finally:
        await cache.close()


async def test_broken_model_fails_alone(source: Source, tmp_path: Path) -> None:
    source.put_file("broken/1/weights.npy", b"not a numpy file")
    repo = ModelRepository(source.uri, source.storage_options)
    cache = ModelCache(repo, str(tmp_path / "cache"), load_model, clock=time.monotonic, cache_size=2)
    try:
        with pytest.raises(ModelLoadError, match="broken"):
            async with cache.acquire("broken"):
                pass
        async with cache.acquire("en-fr") as loaded:
            assert loaded.model.tolist() == [10.0]
    finally:
        await cache.close()


def test_s3_keys_that_escape_the_folder_are_refused(
    s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="thrifty-evil")
    client.put_object(Bucket="thrifty-evil", Key="evil/1/weights.npy", Body=b"ok")
    client.put_object(Bucket="thrifty-evil", Key="evil/1/../../../../escape.txt", Body=b"gotcha")
    repo = ModelRepository("s3://thrifty-evil", {"endpoint_url": s3_server})
    dest = tmp_path / "cache" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"unsafe path|outside"):
        repo.fetch("evil", 1, str(dest))
    assert [p.name for p in tmp_path.rglob("escape.txt")] == []


class _ApacheIndexHandler(_QuietHandler):
    """Folder listings like Apache's ``Indexes``: sort links (``?C=N;O=D``), an anchor and a parent link."""

    def list_directory(self, path: str | os.PathLike[str]) -> Any:
        import io

        names = sorted(os.listdir(path))
        links = ['<a href="?C=N;O=D">Name</a>', '<a href="?C=M;O=A">Last modified</a>', '<a href="#top">Top</a>']
        links += ['<a href="/">Parent Directory</a>']
        links += [f'<a href="{n}{"/" if os.path.isdir(os.path.join(path, n)) else ""}">{n}</a>' for n in names]
        body = ("<html><body>" + "".join(links) + "</body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def test_http_index_sort_links_are_not_model_files(tmp_path: Path) -> None:
    root = tmp_path / "served"
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "w.bin").write_bytes(b"abc")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_ApacheIndexHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        repo = ModelRepository(f"http://127.0.0.1:{server.server_port}/")
        assert repo.list_versions("m") == [1]
        dest = tmp_path / "dest"
        dest.mkdir()
        assert repo.fetch("m", 1, str(dest)) == 3
        assert sorted(os.listdir(dest)) == ["w.bin"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
