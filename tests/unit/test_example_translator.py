"""examples/translator: the repository it generates, and its predictor behind a real model cache."""

from __future__ import annotations

import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest

from thrifty.config import load_config
from thrifty.models import ModelNotFoundError, model_cache_from_config

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "translator"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"translator_{name}", FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_repository_has_56_pairs_and_is_the_same_everywhere(tmp_path: Path) -> None:
    make = load("make_models")
    written = make.make_models(tmp_path / "a")
    assert len(written) == 56 == len({p.parent.name for p in written})
    make.make_models(tmp_path / "b", ["en-fr"])
    assert (tmp_path / "a/en-fr/1/weights.npy").read_bytes() == (tmp_path / "b/en-fr/1/weights.npy").read_bytes()
    assert make.main(["--out", str(tmp_path / "a"), "--version", "2", "--pairs", "de-en"]) == 0
    assert sorted(p.name for p in (tmp_path / "a/de-en").iterdir()) == ["1", "2"]
    assert [p.name for p in tmp_path.joinpath("a").iterdir() if p.name.startswith(".")] == []


def test_the_first_replica_creates_the_whole_repository_in_one_step(tmp_path: Path) -> None:
    make = load("make_models")
    out = tmp_path / "project" / "models"
    with ThreadPoolExecutor(4) as pool:  # replicas starting together: exactly one creates it
        created = list(pool.map(lambda _: make.ensure_repository(out), range(4)))
    assert created.count(True) == 1
    assert len(list(out.glob("*/*/weights.npy"))) == 57 and (out / "en-fr" / "2").is_dir()
    assert [p.name for p in out.parent.iterdir()] == ["models"]  # no temporary folder left
    assert make.ensure_repository(out) is False


async def test_the_predictor_generates_its_repository_and_translates_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = load_config(FOLDER)
    [api] = config.apis
    assert api.models is not None and api.models.cache_size == 8 and api.models.disk_cache_size == 20
    monkeypatch.chdir(tmp_path)  # the replica runs in the project folder: a relative source resolves there
    predictor = load("predictor").Translator(api.predictor.config)
    assert len(list((tmp_path / "models").iterdir())) == 56
    cache = model_cache_from_config(api.models, predictor, str(tmp_path / "cache"), clock=time.monotonic)
    try:
        for ref in api.models.preload:
            async with cache.acquire(ref):
                pass
        async with cache.acquire("en-fr", 1) as there:
            forth = predictor.predict({"text": "Hello, World!"}, there.model)
        assert forth["model"] == "en-fr" and forth["version"] == 1 and forth["translation"] != "Hello, World!"
        async with cache.acquire("fr-en") as back:
            assert predictor.predict(forth["translation"], back.model)["translation"] == "Hello, World!"
        async with cache.acquire("en-fr") as latest:
            assert latest.version == 2
        pairs = [p.name for p in sorted((tmp_path / "models").iterdir())][:12]
        for pair in pairs:
            async with cache.acquire(pair) as loaded:
                assert predictor.predict("abc", loaded.model)["model"] == pair
        snapshot = cache.snapshot()
        assert snapshot["memory"]["count"] == 8
        assert sum(m["memory_evictions"] for m in snapshot["models"].values()) > 0
        with pytest.raises(ModelNotFoundError):
            async with cache.acquire("xx-yy"):
                pass
        with pytest.raises(ValueError, match="expected"):
            predictor.predict({"txt": 1}, latest.model)
    finally:
        await cache.close()
