"""The gateway's saved routing table and the loss of a replica as the table tells it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from thrifty.dataplane.gateway_routes import RoutesDoc, RoutesFile, build_routes


def doc(*replicas: tuple[str, bool]) -> RoutesDoc:
    rows = [{"id": rid, "host": "127.0.0.1", "port": 9000 + i, "draining": d} for i, (rid, d) in enumerate(replicas)]
    data: dict[str, Any] = {"apis": {"a": {"replicas": rows, "api_keys_sha256": ["ab" * 32]}}}
    return RoutesDoc.model_validate(data)


def test_saved_table_loads_back_and_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    assert RoutesFile(path).load() is None
    RoutesFile(path).save(doc(("r1", False)))
    assert RoutesFile(path).load() == doc(("r1", False))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["routes.json"]  # no temporary file left behind


def test_an_unchanged_table_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    routes = RoutesFile(path)
    routes.save(doc(("r1", False)))
    path.write_text("sentinel")  # a rewrite would replace it
    routes.save(doc(("r1", False)))
    assert path.read_text() == "sentinel"
    routes.save(doc(("r2", False)))
    assert RoutesFile(path).load() == doc(("r2", False))


def test_unreadable_or_invalid_tables_load_as_none(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text("{not json")
    assert RoutesFile(path).load() is None
    path.write_text('{"apis": {"a": {"replicas": [{"id": ""}]}}}')
    assert RoutesFile(path).load() is None


def test_a_replica_leaving_without_draining_is_a_loss() -> None:
    # (previous table, new table, now) -> lost_s of the API
    cases = [
        (doc(("r1", False)), doc(("r1", False), ("r2", False)), None),  # added
        (doc(("r1", True)), doc(), None),  # drained, then removed: a deliberate stop
        (doc(("r1", False), ("r2", False)), doc(("r2", False)), 7.0),  # vanished while serving: a crash
        (doc(("r1", False)), doc(), 7.0),
    ]
    for before, after, lost in cases:
        old = build_routes(before, {}, 1.0)
        assert build_routes(after, old, 7.0)[b"a"].lost_s == lost


def test_a_loss_is_kept_by_later_tables() -> None:
    old = build_routes(doc(("r1", False)), {}, 1.0)
    lost = build_routes(doc(), old, 2.0)
    assert build_routes(doc(("r2", False)), lost, 3.0)[b"a"].lost_s == 2.0
