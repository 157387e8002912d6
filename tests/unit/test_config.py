"""Config validation: defaults, units, and errors that name the file, the path, the line, the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.config import parse_text
from thrifty.config.loader import load_config
from thrifty.config.schema import ProjectConfig
from thrifty.errors import ConfigError

MINIMAL = "apis:\n  - name: iris\n"


def test_defaults_follow_design() -> None:
    api = parse_text(MINIMAL, "t.yaml").apis[0]
    assert api.predictor.path == "predictor.py"
    assert api.serving.max_concurrency == 1
    assert api.serving.max_queue_length == 100
    assert api.serving.request_timeout == 30.0
    assert api.serving.max_payload == 10 * 2**20
    assert api.autoscaling.window == 60.0
    assert api.autoscaling.upscale_stabilization_period == 0.0
    assert api.autoscaling.downscale_stabilization_period == 300.0
    assert api.autoscaling.initial_replicas == 1
    assert api.target_in_flight == 1.0
    assert api.update_strategy.max_surge == "25%"


def test_full_design_example_is_valid() -> None:
    text = """
apis:
  - name: iris
    predictor: {path: predictor.py, class: IrisPredictor, config: {threshold: 0.5}, env: {A: "1"}}
    compute: {cpu: 500m, mem: 1Gi, gpu: 0.25}
    serving:
      max_concurrency: 2
      max_queue_length: 100
      request_timeout: 30s
      max_payload: 10MiB
      batching: {max_batch_size: 16, batch_interval: 5ms}
    autoscaling: {min_replicas: 0, max_replicas: 10, init_replicas: 1, target_in_flight: 1, window: 1m}
    models: {source: s3://bucket/translators/, cache_size: 8, disk_cache_size: 64, poll_interval: 30s}
    update_strategy: {max_surge: 1, max_unavailable: 25%}
cluster: {engine: local, provider: local}
"""
    api = parse_text(text, "t.yaml").apis[0]
    assert api.predictor.class_name == "IrisPredictor"
    assert api.compute.cpu == 0.5
    assert api.compute.mem == 2**30
    assert api.serving.batching is not None and api.serving.batching.batch_interval == pytest.approx(0.005)
    assert api.autoscaling.window == 60.0
    assert api.models is not None and api.models.cache_size == 8
    assert api.update_strategy.max_surge == 1


def test_target_in_flight_default_counts_batching() -> None:
    text = MINIMAL + "    serving: {max_concurrency: 2, batching: {max_batch_size: 8, batch_interval: 10ms}}\n"
    assert parse_text(text, "t.yaml").apis[0].target_in_flight == 16.0


@pytest.mark.parametrize(
    ("text", "path", "value", "fragment"),
    [
        ("apis:\n  - name: Iris\n", "apis[0].name", "Iris", "must match"),
        (MINIMAL + "    serving: {max_concurrency: 0}\n", "apis[0].serving.max_concurrency", 0, "greater than"),
        (MINIMAL + "    serving:\n      bogus: 1\n", "apis[0].serving.bogus", 1, "unknown field"),
        (MINIMAL + "    compute: {cpu: lots}\n", "apis[0].compute.cpu", "lots", "not a CPU amount"),
        (
            MINIMAL + "    serving: {request_timeout: soon}\n",
            "apis[0].serving.request_timeout",
            "soon",
            "not a duration",
        ),
        (MINIMAL + "    serving: {max_payload: big}\n", "apis[0].serving.max_payload", "big", "not a size"),
        (MINIMAL + "    compute: {gpu: 1.5}\n", "apis[0].compute.gpu", 1.5, "whole number"),
        (MINIMAL + "    predictor: {path: ../x.py}\n", "apis[0].predictor.path", "../x.py", "inside the project"),
        (
            MINIMAL + "    update_strategy: {max_surge: 150%}\n",
            "apis[0].update_strategy.max_surge",
            "150%",
            "percentage",
        ),
        ("apis:\n  - name: a\n  - name: a\n", "apis", None, "more than once"),
        ("apis: []\n", "(top level)", None, "no APIs and no splitters"),
        ("cluster: {engine: kubernetes}\napis:\n  - name: a\n", "cluster.engine", "kubernetes", "'local' or 'ray'"),
    ],
)
def test_errors_name_path_value_and_rule(text: str, path: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_text(text, "my/thrifty.yaml")
    problems = info.value.details["problems"]
    match = [p for p in problems if p["path"] == path]
    assert match, problems
    assert fragment in match[0]["message"]
    if value is not None:
        assert match[0]["value"] == value
    assert "my/thrifty.yaml" in info.value.message
    assert path in info.value.message


def test_error_carries_line_number() -> None:
    text = "apis:\n  - name: iris\n    serving:\n      max_concurrency: -3\n"
    with pytest.raises(ConfigError) as info:
        parse_text(text, "t.yaml")
    assert info.value.details["problems"][0]["line"] == 4
    assert "t.yaml:4:" in info.value.message


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="min_replicas"):
        parse_text(MINIMAL + "    autoscaling: {min_replicas: 5, max_replicas: 2}\n", "t.yaml")
    with pytest.raises(ConfigError, match="init_replicas"):
        parse_text(MINIMAL + "    autoscaling: {min_replicas: 1, max_replicas: 2, init_replicas: 3}\n", "t.yaml")
    with pytest.raises(ConfigError, match="cache_size"):
        parse_text(MINIMAL + "    models: {source: /m}\n", "t.yaml")
    with pytest.raises(ConfigError, match="both be 0"):
        parse_text(MINIMAL + "    update_strategy: {max_surge: 0, max_unavailable: 0}\n", "t.yaml")


def test_yaml_syntax_error_names_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"t.yaml:\d+: not valid YAML: .*expected"):
        parse_text("apis:\n  - name: a\n    serving: {max_concurrency: 1\n", "t.yaml")


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_text("- a\n- b\n", "t.yaml")


def test_load_config_finds_file_in_folder(tmp_path: Path) -> None:
    (tmp_path / "thrifty.yaml").write_text(MINIMAL)
    file, config = load_config(tmp_path)
    assert file.name == "thrifty.yaml" and config.apis[0].name == "iris"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no thrifty\.yaml"):
        load_config(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_json_schema_describes_every_field() -> None:
    schema = ProjectConfig.model_json_schema(by_alias=True)
    missing = []
    for name, model in schema["$defs"].items():
        for field, prop in model.get("properties", {}).items():
            if "description" not in prop:
                missing.append(f"{name}.{field}")
    assert not missing, missing
