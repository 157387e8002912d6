"""Splitters and serving.protocol in thrifty.yaml: what is accepted, and errors that say what is wrong where."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from thrifty.cli.main import cli
from thrifty.config import parse_text
from thrifty.errors import ConfigError

APIS = "apis:\n  - name: iris-v1\n  - name: iris-v2\n"


def splitter(body: str) -> str:
    return APIS + "splitters:\n  - name: iris\n" + body


def problem(text: str) -> dict[str, object]:
    with pytest.raises(ConfigError) as info:
        parse_text(text, "my/thrifty.yaml")
    problems = info.value.details["problems"]
    assert len(problems) == 1, problems
    assert "my/thrifty.yaml" in info.value.message
    return problems[0]  # type: ignore[no-any-return]


def test_full_splitter_is_valid_with_defaults() -> None:
    config = parse_text(
        splitter(
            "    backends: [{api: iris-v1, weight: 90}, {api: iris-v2, weight: 10}]\n"
            "    shadow: {api: iris-v3, percent: 10%}\n"
            "    sticky_header: X-User\n"
            "    canary: {api: iris-v2, steps: [5, 25, 50, 100], interval: 2m,\n"
            "             max_error_rate: 1%, max_p99_ratio: 1.5}\n"
        ),
        "t.yaml",
    )
    (s,) = config.splitters
    assert [(b.api, b.weight) for b in s.backends] == [("iris-v1", 90), ("iris-v2", 10)]
    assert s.shadow is not None and s.shadow.percent == 10.0
    assert s.sticky_header == "X-User"
    assert s.canary is not None
    assert (s.canary.steps, s.canary.interval, s.canary.max_error_rate) == ([5, 25, 50, 100], 120.0, 1.0)
    assert s.canary.max_p99_ratio == 1.5 and s.canary.min_requests == 20
    assert s.api_names == ["iris-v1", "iris-v2", "iris-v3"]


def test_a_project_may_hold_only_splitters() -> None:
    # Backends not in this project are APIs deployed from another project: checked at deploy, not here.
    config = parse_text("splitters:\n  - name: live\n    backends: [{api: elsewhere, weight: 1}]\n", "t.yaml")
    assert config.apis == [] and config.splitters[0].name == "live"


def test_default_protocol_and_v2() -> None:
    assert parse_text(APIS, "t.yaml").apis[0].serving.protocol == "thrifty"
    v2 = parse_text("apis:\n  - name: m\n    serving: {protocol: v2}\n", "t.yaml")
    assert v2.apis[0].serving.protocol == "v2"
    p = problem("apis:\n  - name: m\n    serving: {protocol: grpc}\n")
    assert p["path"] == "apis[0].serving.protocol" and p["value"] == "grpc"


@pytest.mark.parametrize(
    ("body", "path", "value", "fragment"),
    [
        ("    backends: [{api: iris-v1, weight: -1}]\n", "splitters[0].backends[0].weight", -1, "greater than"),
        ("    backends: [{api: Iris, weight: 1}]\n", "splitters[0].backends[0].api", "Iris", "must match"),
        ("    backends: []\n", "splitters[0].backends", None, "at least 1"),
        ("    backends: [{api: iris-v1}]\n", "splitters[0].backends[0].weight", None, "required"),
        ("    backends: [{api: iris-v1, weight: 1, extra: 2}]\n", "splitters[0].backends[0].extra", 2, "unknown"),
        ("    backends: [{api: iris-v1, weight: 0}]\n", "splitters[0]", None, "add up to 0"),
        (
            "    backends: [{api: iris-v1, weight: 1}, {api: iris-v1, weight: 2}]\n",
            "splitters[0]",
            None,
            "'iris-v1' is listed more than once",
        ),
        ("    backends: [{api: iris, weight: 1}]\n", "splitters[0]", None, "lists itself"),
        (
            "    backends: [{api: iris-v1, weight: 1}]\n    shadow: {api: iris-v1}\n",
            "splitters[0]",
            None,
            "also a backend",
        ),
        (
            "    backends: [{api: iris-v1, weight: 1}]\n    shadow: {api: iris-v2, percent: 120%}\n",
            "splitters[0].shadow.percent",
            "120%",
            "not a percentage",
        ),
        (
            "    backends: [{api: iris-v1, weight: 1}]\n    sticky_header: 'X User'\n",
            "splitters[0].sticky_header",
            "X User",
            "header name",
        ),
        (
            "    backends: [{api: iris-v1, weight: 1}]\n    canary: {api: iris-v2}\n",
            "splitters[0]",
            None,
            "not one of the backends",
        ),
        (
            "    backends: [{api: iris-v1, weight: 0}, {api: iris-v2, weight: 1}]\n    canary: {api: iris-v2}\n",
            "splitters[0]",
            None,
            "needs a stable backend",
        ),
        (
            "    backends: [{api: iris-v1, weight: 1}, {api: iris-v2, weight: 0}]\n"
            "    canary: {api: iris-v2, steps: [50, 25, 100]}\n",
            "splitters[0].canary.steps",
            None,
            "must increase",
        ),
        (
            "    backends: [{api: iris-v1, weight: 1}, {api: iris-v2, weight: 0}]\n"
            "    canary: {api: iris-v2, steps: [10, 50]}\n",
            "splitters[0].canary.steps",
            None,
            "last step must be 100",
        ),
        (
            "    backends: [{api: iris-v1, weight: 1}, {api: iris-v2, weight: 0}]\n"
            "    canary: {api: iris-v2, max_error_rate: lots}\n",
            "splitters[0].canary.max_error_rate",
            "lots",
            "not a percentage",
        ),
    ],
)
def test_splitter_errors_name_path_value_and_rule(body: str, path: str, value: object, fragment: str) -> None:
    p = problem(splitter(body))
    assert p["path"] == path, p
    assert fragment in str(p["message"]), p
    if value is not None:
        assert p["value"] == value


def test_splitter_name_must_not_be_an_api_name() -> None:
    p = problem(APIS + "splitters:\n  - name: iris-v1\n    backends: [{api: iris-v2, weight: 1}]\n")
    assert p["path"] == "splitters"
    assert "splitters[0].name 'iris-v1' is also the name of an API" in str(p["message"])


def test_splitter_names_are_unique_and_backends_are_not_splitters() -> None:
    twice = "  - name: live\n    backends: [{api: iris-v1, weight: 1}]\n"
    assert "more than once" in str(problem(APIS + "splitters:\n" + twice + twice)["message"])
    chained = "  - name: outer\n    backends: [{api: live, weight: 1}]\n"
    message = str(problem(APIS + "splitters:\n" + twice + chained)["message"])
    assert "splitters[1] sends requests to 'live', which is a splitter" in message


def test_reserved_names_and_error_lines() -> None:
    p = problem("splitters:\n  - name: v2\n    backends: [{api: a, weight: 1}]\n")
    assert p["path"] == "splitters[0].name" and "reserved" in str(p["message"])
    p = problem(APIS + "splitters:\n  - name: s\n    backends:\n      - {api: iris-v1, weight: -5}\n")
    assert p["line"] == 7


def test_validate_names_splitters(tmp_path: Path) -> None:
    (tmp_path / "thrifty.yaml").write_text(
        APIS + "splitters:\n  - name: iris\n    backends: [{api: iris-v1, weight: 1}]\n", encoding="utf-8"
    )
    out = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "valid (2 APIs: iris-v1, iris-v2; 1 splitter: iris)" in out.output
