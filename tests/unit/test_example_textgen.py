"""examples/textgen: the trigram generator yields one token at a time, deterministically for a seed."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

import pytest

from thrifty.config import ApiConfig, load_config

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "textgen"


def apis_of(folder: Path) -> list[ApiConfig]:
    return load_config(folder)[1].apis


def import_predictor(folder: Path, api: ApiConfig) -> Any:
    spec = importlib.util.spec_from_file_location("example_textgen", folder / api.predictor.path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, api.predictor.class_name)


@pytest.fixture
def generator() -> Any:
    [api] = apis_of(FOLDER)
    config = {**api.predictor.config, "token_delay": 0}  # no waiting in unit tests
    return import_predictor(FOLDER, api)(config)


async def collect(gen: Any, payload: Any) -> list[str]:
    return [chunk async for chunk in gen.predict(payload)]


def test_config_and_bundled_text() -> None:
    [api] = apis_of(FOLDER)
    assert api.predictor.config["token_delay"] == "20ms" and api.predictor.config["max_tokens"] == 64
    text = (FOLDER / "corpus.txt").read_text(encoding="utf-8")
    assert text.startswith("It is a truth universally acknowledged") and 2_000 < len(text) < 20_000


async def test_predict_is_an_async_generator_of_str_tokens(generator: Any) -> None:
    assert inspect.isasyncgenfunction(type(generator).predict)
    chunks = await collect(generator, {"prompt": "It is a truth", "max_tokens": 25, "seed": 3})
    assert len(chunks) == 25 and all(isinstance(c, str) and c.strip() for c in chunks)
    assert chunks[0] == " universally"  # continues the prompt from the text's own trigrams
    text = "".join(chunks)
    assert " ," not in text and " ." not in text  # punctuation attaches to the word before it


async def test_same_seed_same_text_other_seed_other_text(generator: Any) -> None:
    payload = {"max_tokens": 40, "seed": 11}
    first = await collect(generator, payload)
    assert first == await collect(generator, payload)
    assert first == generator.plan(payload)
    assert first != await collect(generator, {**payload, "seed": 12})


async def test_max_tokens_is_capped_by_the_config(generator: Any) -> None:
    assert len(await collect(generator, {"max_tokens": 1000})) == 64
    assert len(await collect(generator, {"max_tokens": 0})) == 1
    assert len(await collect(generator, "a plain string prompt")) == 64


async def test_token_delay_is_awaited_between_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    [api] = apis_of(FOLDER)
    gen = import_predictor(FOLDER, api)(api.predictor.config)
    assert gen.token_delay_s == 0.02
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("asyncio.sleep", fake_sleep)
    chunks = await collect(gen, {"max_tokens": 5})
    assert slept == [0.02] * 5 and len(chunks) == 5


def test_corpus_path_is_relative_to_the_predictor(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("One two three. One two four. Two three one.", encoding="utf-8")
    [api] = apis_of(FOLDER)
    gen = import_predictor(FOLDER, api)({"corpus": str(tmp_path / "tiny.txt"), "token_delay": 0})
    assert set(gen.model.next[("One", "two")]) == {"three", "four"}
