"""The examples in examples/: each config is valid and each predictor works as a replica would call it."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from thrifty.config import ApiConfig, load_config
from thrifty.config.loader import load_cluster
from thrifty.config.scenario import load_scenario

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = ("echo", "iris", "embeddings", "translator", "textgen")
# Not projects: a cluster file with its APIs, and cost-simulator scenarios (each tested below).
OTHER_EXAMPLES = ("cluster", "scenarios")


def apis_of(folder: Path) -> list[ApiConfig]:
    _, config = load_config(folder)
    return config.apis


def import_predictor(folder: Path, api: ApiConfig) -> type[Any]:
    """Import the predictor class the way a replica does: from the file that thrifty.yaml names."""
    path = folder / api.predictor.path
    spec = importlib.util.spec_from_file_location(f"example_{folder.name}_{api.name}", path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type[Any] = getattr(module, api.predictor.class_name)
    return cls


def sample(folder: Path) -> Any:
    return json.loads((folder / "sample.json").read_text(encoding="utf-8"))


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# ---- every example -------------------------------------------------------------------------------


def test_the_examples_are_all_here() -> None:
    found = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert found == sorted(EXAMPLES + OTHER_EXAMPLES)


def test_cluster_example_is_valid() -> None:
    cluster = load_cluster(EXAMPLES_DIR / "cluster" / "cluster.yaml")
    assert cluster.engine == "ray" and {p.name for p in cluster.node_pools} >= {"cpu", "gpu"}
    apis = apis_of(EXAMPLES_DIR / "cluster" / "apis")
    assert apis and all(a.compute.gpu == 0.5 for a in apis)
    (EXAMPLES_DIR / "cluster" / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["gpu-1000-models", "translation", "single-api", "trace"])
def test_scenario_example_is_valid(name: str) -> None:
    scenario = load_scenario(EXAMPLES_DIR / "scenarios" / f"{name}.yaml")
    assert scenario.apis


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_is_complete_and_its_config_valid(name: str) -> None:
    folder = EXAMPLES_DIR / name
    apis = apis_of(folder)
    assert apis
    for api in apis:
        cls = import_predictor(folder, api)
        # A batch-only predictor (no predict) is valid when batching is on.
        assert callable(getattr(cls, "predict", None)) or api.serving.batching is not None
        if api.serving.batching is not None:
            assert callable(getattr(cls, "predict_batch", None)), f"{api.name}: batching needs predict_batch"
    sample(folder)  # valid JSON
    assert (folder / "README.md").read_text(encoding="utf-8").strip()


# ---- echo ----------------------------------------------------------------------------------------


async def test_echo_returns_the_payload() -> None:
    folder = EXAMPLES_DIR / "echo"
    [api] = apis_of(folder)
    predictor = import_predictor(folder, api)(api.predictor.config)
    payload = sample(folder)
    assert await predictor.predict(payload) == payload
    assert await predictor.predict(b"raw bytes") == b"raw bytes"
    assert await predictor.predict_batch([payload, [1, 2], "x"]) == [payload, [1, 2], "x"]


# ---- iris ----------------------------------------------------------------------------------------

FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@pytest.fixture
def iris_folder(tmp_path: Path) -> Path:
    """A copy of the example without a trained model, so that the predictor trains one."""
    folder = tmp_path / "iris"
    shutil.copytree(EXAMPLES_DIR / "iris", folder, ignore=shutil.ignore_patterns("model.joblib", "__pycache__"))
    return folder


def iris_rows() -> tuple[list[dict[str, float]], list[str]]:
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    flowers = [dict(zip(names, map(float, row), strict=True)) for row in iris.data]
    return flowers, [str(iris.target_names[t]) for t in iris.target]


def test_iris_trains_on_first_start_then_loads_the_saved_model(iris_folder: Path) -> None:
    apis = {api.name: api for api in apis_of(iris_folder)}
    assert set(apis) == {"iris", "iris-batch"}
    api = apis["iris"]
    model_file = iris_folder / api.predictor.config["model_file"]
    cls = import_predictor(iris_folder, api)

    trained = cls(api.predictor.config)
    assert model_file.is_file()
    assert sorted(p.name for p in iris_folder.iterdir() if p.name.endswith(".tmp")) == []
    saved_at = model_file.stat().st_mtime_ns

    loaded = cls(apis["iris-batch"].predictor.config)
    assert model_file.stat().st_mtime_ns == saved_at  # loaded, not trained again
    assert loaded.predict(FLOWER) == trained.predict(FLOWER)


def test_iris_predictions(iris_folder: Path) -> None:
    api = apis_of(iris_folder)[0]
    predictor = import_predictor(iris_folder, api)(api.predictor.config)

    result = predictor.predict(sample(iris_folder))
    assert result["label"] == "setosa"
    assert set(result["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert math.isclose(sum(result["probabilities"].values()), 1.0, abs_tol=1e-3)
    assert result["probabilities"]["setosa"] > 0.9

    flowers, labels = iris_rows()
    predicted = [r["label"] for r in predictor.predict(flowers)]
    accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy > 0.9
    assert predictor.predict([]) == []
    assert predictor.predict({**FLOWER, "sepal_length": 5}) == predictor.predict({**FLOWER, "sepal_length": 5.0})


def test_iris_predict_batch_matches_predict(iris_folder: Path) -> None:
    api = {api.name: api for api in apis_of(iris_folder)}["iris-batch"]
    predictor = import_predictor(iris_folder, api)(api.predictor.config)
    flowers, _ = iris_rows()
    payloads: list[Any] = [flowers[0], flowers[60:63], flowers[140], [], flowers[149:150]]
    assert predictor.predict_batch(payloads) == [predictor.predict(p) for p in payloads]
    assert predictor.predict_batch([]) == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({k: v for k, v in FLOWER.items() if k != "petal_width"}, "payload: missing field(s) petal_width"),
        ({**FLOWER, "sepal_width": "3.5"}, "payload: sepal_width must be a number, got '3.5'"),
        ({**FLOWER, "sepal_width": None}, "payload: sepal_width must be a number, got None"),
        ({**FLOWER, "sepal_width": True}, "payload: sepal_width must be a number, got True"),
        ({**FLOWER, "sepal_width": float("nan")}, "payload: sepal_width must be a number, got nan"),
        ("5.1, 3.5, 1.4, 0.2", "payload: expected a JSON object"),
        ([FLOWER, {"petal_width": 1}], "payload[1]: missing field(s) sepal_length, sepal_width, petal_length"),
    ],
)
def test_iris_rejects_a_bad_payload_with_a_clear_message(iris_folder: Path, payload: Any, message: str) -> None:
    api = apis_of(iris_folder)[0]
    predictor = import_predictor(iris_folder, api)(api.predictor.config)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        predictor.predict(payload)


def test_iris_batch_names_the_bad_request(iris_folder: Path) -> None:
    api = apis_of(iris_folder)[1]
    predictor = import_predictor(iris_folder, api)(api.predictor.config)
    with pytest.raises(ValueError, match=r"^batch\[1\]\[0\]: petal_length must be a number"):
        predictor.predict_batch([FLOWER, [{**FLOWER, "petal_length": "long"}]])


# ---- embeddings ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embeddings() -> Iterator[Any]:
    """One predictor for the module: loading the model takes seconds."""
    folder = EXAMPLES_DIR / "embeddings"
    [api] = apis_of(folder)
    with pytest.MonkeyPatch.context() as env:
        for key, value in api.predictor.env.items():  # what the replica process gets from thrifty.yaml
            env.setenv(key, value)
        pytest.importorskip(
            "sentence_transformers",
            reason="the embeddings example needs the optional extra: pip install 'thrifty[embeddings]'",
        )
        yield import_predictor(folder, api)(api.predictor.config)


def test_embeddings_of_the_sample(embeddings: Any) -> None:
    texts = sample(EXAMPLES_DIR / "embeddings")["texts"]
    result = embeddings.predict({"texts": texts})
    assert result["dim"] == 384
    assert len(result["embeddings"]) == len(texts)
    for vector in result["embeddings"]:
        assert len(vector) == 384
        assert all(isinstance(x, float) for x in vector)
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-4)
    one = embeddings.predict({"text": texts[0]})
    assert one["dim"] == 384 and len(one["embeddings"]) == 1


def test_embeddings_place_similar_sentences_closer(embeddings: Any) -> None:
    guitar, also_guitar, markets = embeddings.predict(
        {
            "texts": [
                "A man is playing a guitar.",
                "Someone plays an acoustic guitar on stage.",
                "The stock market fell sharply this morning.",
            ]
        }
    )["embeddings"]
    assert cosine(guitar, also_guitar) > cosine(guitar, markets) + 0.2
    assert cosine(guitar, also_guitar) > cosine(also_guitar, markets) + 0.2


def test_embeddings_predict_batch_matches_predict(embeddings: Any) -> None:
    payloads = [{"text": "first request"}, {"texts": ["second request", "with two texts"]}, {"text": "third"}]
    batched = embeddings.predict_batch(payloads)
    assert len(batched) == len(payloads)
    for payload, result in zip(payloads, batched, strict=True):
        alone = embeddings.predict(payload)
        assert result["dim"] == alone["dim"] == 384
        assert len(result["embeddings"]) == len(alone["embeddings"])
        for a, b in zip(result["embeddings"], alone["embeddings"], strict=True):
            assert cosine(a, b) > 0.9999  # padding to the batch's longest text moves the floats a little


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "payload: expected"),
        ("just a string", "payload: expected"),
        ({"texts": []}, "payload: expected"),
        ({"texts": ["ok", 3]}, "payload: expected"),
        ({"text": 3}, "payload: expected"),
        ({"texts": ["x"] * 65}, "payload: 65 texts; at most 64 per request"),
    ],
)
def test_embeddings_reject_a_bad_payload(embeddings: Any, payload: Any, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        embeddings.predict(payload)
    with pytest.raises(ValueError, match=r"^batch\[1\]: "):
        embeddings.predict_batch([{"text": "fine"}, payload])
