"""The figures of multi-model APIs on their way to `thrifty get`: the gateway's per-model document, the
operator's rows and the CLI table; and the gateway's parsing of model paths and held-model reports."""

from __future__ import annotations

from typing import Any

import pytest

from thrifty.cli.output import api_detail, model_table
from thrifty.control.traffic import TrafficHistory, model_rows
from thrifty.dataplane.gateway_models import held_keys, model_request_key, models_json
from thrifty.dataplane.gateway_routes import RoutesDoc, build_routes
from thrifty.models import ModelNameError
from thrifty.models.names import parse_model_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/en-fr", (b"en-fr", b"en-fr")),
        (b"/en-fr/", (b"en-fr", b"en-fr")),
        (b"/en-fr/2", (b"en-fr", b"en-fr/2")),
        (b"/en-fr/2/", (b"en-fr", b"en-fr/2")),
        (b"/", None),
        (b"/a/b/c", None),
        # read as the replica reads them (models.parse_model_path): the same model, the same replicas
        (b"/en-fr/latest", (b"en-fr", b"en-fr")),
        (b"/en-fr/02", (b"en-fr", b"en-fr/2")),
        (b"/en%2Dfr", (b"en-fr", b"en-fr")),
        (b"/en%2dfr/%32", (b"en-fr", b"en-fr/2")),
        (b"/%2e%2e", None),
        (b"/en%2Ffr", None),
        (b"/en-fr/x", None),
    ],
)
def test_model_request_key(path: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert model_request_key(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/en-fr", ("en-fr", None)),
        (b"/en-fr/", ("en-fr", None)),
        (b"/en-fr/latest", ("en-fr", None)),
        (b"/en-fr/02", ("en-fr", 2)),
        (b"/en%2Dfr/2/", ("en-fr", 2)),
    ],
)
def test_parse_model_path(path: bytes, expected: tuple[str, int | None]) -> None:
    assert parse_model_path(path) == expected


@pytest.mark.parametrize("path", [b"/", b"/a/b/c", b"/%2e%2e", b"/a%2Fb", b"/%C3%BC", b"/a/-1", b"/.x"])
def test_parse_model_path_refuses(path: bytes) -> None:
    with pytest.raises(ModelNameError):
        parse_model_path(path)


def test_held_keys_cover_the_name_and_each_version() -> None:
    assert held_keys(["en-fr/2", "en-fr/1", "de-en/1"]) == {b"en-fr", b"en-fr/1", b"en-fr/2", b"de-en", b"de-en/1"}
    assert held_keys([]) == frozenset()


def gateway_models() -> dict[str, Any]:
    doc = {"apis": {"mm": {"multi_model": True, "replicas": [
        {"id": "r1", "host": "127.0.0.1", "port": 1001}, {"id": "r2", "host": "127.0.0.1", "port": 1002},
    ]}}}  # fmt: skip
    route = build_routes(RoutesDoc.model_validate(doc), {})[b"mm"]
    r1, r2 = route.replicas
    r1.held_refs = ("en-fr/2", "de-en/1")
    r1.model_stats = {
        "en-fr": {"hits": 5, "misses": 2, "load_seconds_count": 2, "memory_evictions": 1, "versions": [1, 2]},
        "de-en": {"hits": 0, "misses": 1, "load_seconds_count": 1, "memory_evictions": 0, "versions": [1]},
    }
    r2.held_refs = ("en-fr/1",)
    r2.model_stats = {"en-fr": {"hits": 1, "misses": 1, "load_seconds_count": 1, "versions": [1, 2]}, "bad": 7}
    return models_json(route)


def test_the_gateway_merges_the_replicas_reports_per_model() -> None:
    assert gateway_models() == {
        "de-en": {"versions": [1], "replicas": {"r1": [1]}, "hits": 0, "misses": 1, "loads": 1, "evictions": 0},
        "en-fr": {
            "versions": [1, 2],
            "replicas": {"r1": [2], "r2": [1]},
            "hits": 6,
            "misses": 3,
            "loads": 3,
            "evictions": 1,
        },
    }


def test_rows_for_get_and_the_models_table() -> None:
    history = TrafficHistory()
    assert history.models("mm") == []
    history.add(1.0, {"apis": {"mm": {"models": gateway_models()}, "plain": {}}})
    rows = history.models("mm")
    assert [r["name"] for r in rows] == ["de-en", "en-fr"]
    assert rows[1] == {
        "name": "en-fr",
        "versions": [1, 2],
        "versions_held": [1, 2],
        "replicas": {"r1": [2], "r2": [1]},
        "hits": 6,
        "misses": 3,
        "loads": 3,
        "evictions": 1,
    }
    assert history.models("plain") == [] and model_rows("junk") == [] and model_rows({"x": 1}) == []
    lines = model_table(rows).splitlines()
    assert lines[0].split() == ["MODEL", "VERSIONS", "IN", "MEMORY", "REPLICAS", "HITS", "MISSES", "LOADS", "EVICTIONS"]
    assert lines[2].split() == ["en-fr", "1,2", "1,2", "r1(2)", "r2(1)", "6", "3", "3", "1"]


def test_api_detail_shows_models_only_for_multi_model_apis() -> None:
    base: dict[str, Any] = {
        "name": "mm", "status": "live", "replicas": {"ready": 1, "requested": 1}, "in_flight": 0,
        "requests_per_s": 0.0, "p50_ms": None, "p99_ms": None, "requests": {"2xx": 0, "4xx": 0, "5xx": 0},
        "last_update": None, "endpoint": "http://x/mm", "revision": "abc",
    }  # fmt: skip
    assert "MODEL" not in api_detail(base)
    assert "models: none loaded yet" in api_detail({**base, "models": []})
    assert "EVICTIONS" in api_detail({**base, "models": model_rows(gateway_models())})
