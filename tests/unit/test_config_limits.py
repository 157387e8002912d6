"""Hostile configs are refused before they are expanded: quickly, naming the limit, the file, line and path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from thrifty.config import parse_text
from thrifty.config.limits import ENV_VARS, Limits, check_api_total, limits_table
from thrifty.config.loader import load_config
from thrifty.errors import ConfigError

HEAD = "apis:\n  - name: bomb\n    predictor:\n      config:\n"


# Refusal must not depend on expanding the document: an unguarded bomb took 15 s to 38 s here. The bound
# is loose so that a loaded CI machine does not fail it; the measured times (about 1 ms in the loader,
# under 0.7 s through the operator) are in benchmarks/RESULTS.md.
REFUSAL_BOUND_S = 5.0


def alias_bomb(levels: int, width: int = 10) -> str:
    """The 'billion laughs' shape: each anchor lists the previous one ``width`` times."""
    lines = ['        l0: &l0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"        l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return HEAD + "\n".join(lines) + "\n"


def deep_flow(depth: int) -> str:
    return HEAD + "        x: " + "[" * depth + "]" * depth + "\n"


def deep_block(depth: int) -> str:
    return HEAD + "        x:\n" + "".join("          " + " " * (2 * i) + "-\n" for i in range(depth))


def huge(size_bytes: int) -> str:
    return HEAD + "        blob: '" + "a" * size_bytes + "'\n"


HOSTILE = {
    "billion laughs (7 x 10)": (alias_bomb(7), "THRIFTY_MAX_CONFIG_NODES"),
    "six-level bomb": (alias_bomb(6), "THRIFTY_MAX_CONFIG_NODES"),
    "wide scalar bomb": (
        HEAD + "        s: &s '" + "a" * 100_000 + "'\n        l: [" + ", ".join(["*s"] * 100) + "]\n",
        "THRIFTY_MAX_CONFIG_BYTES",
    ),
    "10,000 nested flow lists": (deep_flow(10_000), "THRIFTY_MAX_CONFIG_DEPTH"),
    "300 nested block lists": (deep_block(300), "THRIFTY_MAX_CONFIG_DEPTH"),
    "50 MB file": (huge(50 * 2**20), "THRIFTY_MAX_CONFIG_BYTES"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_config_is_refused_at_once_naming_the_limit(name: str, tmp_path: Path) -> None:
    text, setting = HOSTILE[name]
    (tmp_path / "thrifty.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    elapsed_s = time.perf_counter() - started
    assert elapsed_s < REFUSAL_BOUND_S, f"{name} took {elapsed_s:.2f}s to refuse"
    assert err.value.exit_code == 2
    assert setting in err.value.message
    assert err.value.details["setting"] == setting
    assert str(tmp_path / "thrifty.yaml") in err.value.message


def test_alias_bomb_error_names_line_and_yaml_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_text(alias_bomb(7), "t.yaml")
    message = err.value.message
    assert message.startswith("t.yaml:")
    assert err.value.details["line"] > 4
    assert err.value.details["path"].startswith("apis[0].predictor.config.l")
    assert "100000" in message  # the limit


def test_nesting_error_names_the_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_text(deep_block(300), "t.yaml")
    assert err.value.details["path"].startswith("apis[0].predictor.config.x[0][0]")


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError, match="refers to a node that contains it"):
        parse_text(HEAD + "        a: &a\n          b: *a\n", "t.yaml")


def test_aliases_within_the_limits_still_work() -> None:
    text = (
        "apis:\n"
        "  - name: a\n    autoscaling: &scaling {min_replicas: 2, max_replicas: 4}\n"
        "  - name: b\n    autoscaling: *scaling\n"
        "    predictor: {config: {layers: &l [1, 2, 3], again: *l}}\n"
    )
    config = parse_text(text, "t.yaml")
    assert config.apis[1].autoscaling.max_replicas == 4
    assert config.apis[1].predictor.config == {"layers": [1, 2, 3], "again": [1, 2, 3]}


def test_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    text = alias_bomb(3)  # 1,111 leaves once expanded
    parse_text(text, "t.yaml")
    monkeypatch.setenv("THRIFTY_MAX_CONFIG_NODES", "500")
    with pytest.raises(ConfigError, match="THRIFTY_MAX_CONFIG_NODES=500"):
        parse_text(text, "t.yaml")
    assert Limits.from_env({"THRIFTY_MAX_CONFIG_BYTES": "4Mi"}).config_bytes == 4 * 2**20
    with pytest.raises(ConfigError, match="THRIFTY_MAX_APIS"):
        Limits.from_env({"THRIFTY_MAX_APIS": "many"})
    with pytest.raises(ConfigError, match="at least 1"):
        Limits.from_env({"THRIFTY_MAX_CONFIG_DEPTH": "0"})


def test_every_limit_has_a_documented_setting() -> None:
    rows = limits_table()
    defaults = Limits()
    assert {r["field"] for r in rows} == set(ENV_VARS) == set(defaults.__dataclass_fields__)
    assert all(getattr(defaults, r["field"]) == r["default"] for r in rows)


def test_predictor_config_size_is_bounded() -> None:
    limits = Limits(predictor_config_bytes=1000)
    text = HEAD + "        weights: [" + ", ".join(["1.5"] * 400) + "]\n"
    with pytest.raises(ConfigError) as err:
        parse_text(text, "t.yaml", limits)
    problem = err.value.details["problems"][0]
    assert problem["path"] == "apis[0].predictor.config"
    assert problem["line"] == 4
    assert "THRIFTY_MAX_PREDICTOR_CONFIG_BYTES=1000" in problem["message"]
    parse_text(text, "t.yaml", Limits(predictor_config_bytes=5000))


def test_api_and_model_counts_are_bounded() -> None:
    limits = Limits(apis_per_project=2, preload_models=1)
    three = "apis:\n" + "".join(f"  - name: a{i}\n" for i in range(3))
    with pytest.raises(ConfigError, match=r"t.yaml:1: apis: lists 3 APIs; at most 2"):
        parse_text(three, "t.yaml", limits)
    models = "apis:\n  - name: m\n    models: {source: /m, cache_size: 2, preload: [a, b]}\n"
    with pytest.raises(ConfigError, match=r"apis\[0\]\.models\.preload: lists 2 models; at most 1"):
        parse_text(models, "t.yaml", limits)
    check_api_total({"a", "b"}, ["b", "c"], Limits(apis_total=3), "t.yaml")
    with pytest.raises(ConfigError, match="would make 4 APIs on the platform; at most 3"):
        check_api_total({"a", "b"}, ["c", "d"], Limits(apis_total=3), "t.yaml")
