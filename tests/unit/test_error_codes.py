"""The one table of error codes (thrifty.errors.ERROR_CODES): unique, complete, and what the source uses.

The source is read, not run: every ``code = "..."`` of a class, every literal code given to
``error_response(...)`` and every ``{"error": "..."}`` literal under src/thrifty must be in the table, with
the table's HTTP status where the call site names one.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from thrifty.dataplane.replica_scheduler import BatchResultError, PredictorFailedError
from thrifty.dataplane.upstream import UpstreamTimeoutError
from thrifty.errors import (
    BY_CODE,
    ERROR_CODES,
    DeployFailedError,
    PredictorLoadError,
    ThriftyError,
    error_from_dict,
    markdown_table,
)
from thrifty.models.errors import ModelCacheBusyError, ModelNotFoundError

SRC = Path(__file__).resolve().parents[2] / "src" / "thrifty"


@dataclass(frozen=True)
class Use:
    code: str
    http_status: int | None  # the status the call site names, if it names one
    where: str


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _int(node: ast.AST | None) -> int | None:
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _error_of(node: ast.AST) -> str | None:
    """The code of a ``{"error": "<code>", ...}`` literal."""
    if not isinstance(node, ast.Dict):
        return None
    for key, value in zip(node.keys, node.values, strict=True):
        if _str(key) == "error":
            return _str(value)
    return None


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def source_uses() -> tuple[list[Use], list[Use]]:
    """-> (class codes, literal codes on the wire) found under src/thrifty."""
    class_codes: list[Use] = []
    literals: list[Use] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
                    value = getattr(stmt, "value", None)
                    if isinstance(target, ast.Name) and target.id == "code" and (code := _str(value)):
                        class_codes.append(Use(code, None, f"{rel}:{stmt.lineno} ({node.name})"))
            elif isinstance(node, ast.Call) and node.args:
                status = _int(node.args[0])
                if _callee(node) == "error_response" and len(node.args) > 1 and (code := _str(node.args[1])):
                    literals.append(Use(code, status, where))
                elif len(node.args) > 1 and (code := _error_of(node.args[1])):
                    literals.append(Use(code, status, where))  # e.g. _json(405, {"error": ...})
            elif isinstance(node, ast.Dict) and (code := _error_of(node)):
                literals.append(Use(code, None, where))
    return class_codes, literals


def test_codes_and_exit_codes_are_unique() -> None:
    codes = Counter(e.code for e in ERROR_CODES)
    assert [c for c, n in codes.items() if n > 1] == []
    exits = Counter(e.exit_code for e in ERROR_CODES if e.exit_code is not None)
    assert [x for x, n in exits.items() if n > 1] == []
    # 0 is success; 126 and up mean "not executable", "not found" and signals to the shell (130: Ctrl-C).
    assert all(1 <= x <= 125 for x in exits)
    assert all(400 <= e.http_status <= 599 for e in ERROR_CODES)
    assert all(e.code.isidentifier() and e.code.islower() and e.meaning for e in ERROR_CODES)


def test_the_source_found_is_not_empty() -> None:
    """Guards the scan itself: a parser change that found nothing would make the tests below pass vacuously."""
    class_codes, literals = source_uses()
    assert {"internal", "model_cache_busy", "upstream_timeout", "predictor_error"} <= {u.code for u in class_codes}
    assert {"headers_too_large", "no_replica_available", "method_not_allowed", "spec_invalid"} <= {
        u.code for u in literals
    }
    assert any(u.http_status == 503 and u.code == "cold_start_timeout" for u in literals)


def test_every_code_the_source_uses_is_in_the_table() -> None:
    class_codes, literals = source_uses()
    assert [u for u in class_codes + literals if u.code not in BY_CODE] == []


def test_call_sites_answer_with_the_tables_status() -> None:
    _, literals = source_uses()
    wrong = [
        u
        for u in literals
        if u.http_status is not None and u.code in BY_CODE and u.http_status != BY_CODE[u.code].http_status
    ]
    assert wrong == []


def test_each_class_code_is_declared_once_and_is_raisable() -> None:
    class_codes, _ = source_uses()
    declared = Counter(u.code for u in class_codes)
    assert [u for u in class_codes if declared[u.code] > 1] == []
    assert [u for u in class_codes if u.code in BY_CODE and BY_CODE[u.code].exit_code is None] == []


def test_every_code_in_the_table_is_used() -> None:
    class_codes, literals = source_uses()
    used = {u.code for u in class_codes + literals}
    assert [e.code for e in ERROR_CODES if e.code not in used] == []


@pytest.mark.parametrize(
    "cls",
    [
        ThriftyError,
        DeployFailedError,
        PredictorLoadError,
        ModelNotFoundError,
        ModelCacheBusyError,
        PredictorFailedError,
        BatchResultError,
        UpstreamTimeoutError,
    ],
)
def test_error_classes_take_status_and_exit_code_from_the_table(cls: type[ThriftyError]) -> None:
    entry = BY_CODE[cls.code]
    assert (cls.http_status, cls.exit_code) == (entry.http_status, entry.exit_code)


def test_deploy_failed_and_predictor_load_failed_exit_differently() -> None:
    assert DeployFailedError.exit_code == 8 and PredictorLoadError.exit_code != DeployFailedError.exit_code


def test_a_class_with_a_code_not_in_the_table_fails_at_definition() -> None:
    with pytest.raises(TypeError, match="not a raisable code"):
        type("Unlisted", (ThriftyError,), {"code": "no_such_code"})
    with pytest.raises(TypeError, match="not a raisable code"):
        type("WireOnly", (ThriftyError,), {"code": "not_ready"})  # an HTTP answer only: no exit code


def test_a_class_may_not_set_its_own_status_or_exit_code() -> None:
    with pytest.raises(TypeError, match="sets http_status"):
        type("OwnStatus", (ThriftyError,), {"code": "conflict", "http_status": 418})
    with pytest.raises(TypeError, match="sets exit_code"):
        type("OwnExit", (ThriftyError,), {"code": "conflict", "exit_code": 99})


def test_errors_survive_the_admin_api_round_trip() -> None:
    sent = DeployFailedError("iris did not become live", details={"apis": ["iris"]})
    back = error_from_dict(sent.to_dict())
    assert type(back) is DeployFailedError and back.message == sent.message and back.details == sent.details
    assert type(error_from_dict({"error": "no_such_code", "message": "m"})) is ThriftyError


def test_the_readme_table_has_one_row_per_code() -> None:
    lines = markdown_table().splitlines()
    assert lines[:2] == ["| code | HTTP | exit | meaning |", "|---|---|---|---|"]
    assert [line.split("`")[1] for line in lines[2:]] == [e.code for e in ERROR_CODES]
    assert "| `not_ready` | 503 | - |" in markdown_table()
