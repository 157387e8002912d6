"""The operator's SQLite state survives a reopen (what `thrifty up` after a crash relies on)."""

from __future__ import annotations

from pathlib import Path

from thrifty.config import parse_text
from thrifty.control.store import ProcessRecord, Store
from thrifty.engines.identity import ProcessIdentity
from thrifty.spec import ApiSpec


def spec(text: str = "apis:\n  - name: iris\n", project: str = "p1") -> ApiSpec:
    return ApiSpec("iris", parse_text(text, "t.yaml").apis[0], project, "/projects/" + project)


def test_apis_revisions_events_processes_persist(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store(db)
    s1 = spec()
    store.put_api(s1, 1.0)
    s2 = spec(project="p2")
    store.put_api(s2, 2.0)
    store.add_event("iris", "deploy", "created", 1.0, {"k": 1})
    store.add_event("iris", "status", "updating -> live", 2.0)
    record = ProcessRecord("iris-abc", "replica", "iris", "rev1", ProcessIdentity(1234, 99, "tok"), 1.0)
    store.put_process(record)
    store.close()

    store = Store(db)
    [stored] = store.list_apis()
    assert stored.spec == s2 and stored.created_s == 1.0 and stored.updated_s == 2.0
    assert [r for r, _ in store.revisions("iris")] == [s2.revision, s1.revision]
    evs = store.events("iris")
    assert [e.kind for e in evs] == ["deploy", "status"] and evs[0].data == {"k": 1}
    assert [e.kind for e in store.events("iris", kind="status")] == ["status"]
    assert store.processes() == [record]
    store.delete_api("iris")
    assert store.list_apis() == []


def test_revision_changes_only_for_restart_fields() -> None:
    base = spec()
    scaled = spec("apis:\n  - name: iris\n    autoscaling: {max_replicas: 3}\n")
    keyed = spec("apis:\n  - name: iris\n    auth: {api_keys: [abcdefghijklmnopq]}\n")
    code = spec(project="p9")
    serving = spec("apis:\n  - name: iris\n    serving: {max_concurrency: 4}\n")
    assert base.revision == scaled.revision == keyed.revision
    assert base.revision != code.revision
    assert base.revision != serving.revision


def test_event_history_is_bounded_per_api(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    for i in range(30):
        store.add_event("a", "scaling", f"a{i}", float(i))
        store.add_event("b", "scaling", f"b{i}", float(i))
    store.prune_events(10)
    assert [e.message for e in store.events("a", limit=100)] == [f"a{i}" for i in range(20, 30)]
    assert len(store.events("b", limit=100)) == 10


def test_an_older_state_db_gains_the_identity_columns(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "state.db"
    old = sqlite3.connect(str(db))
    old.execute(
        "CREATE TABLE processes (id TEXT PRIMARY KEY, kind TEXT NOT NULL, api TEXT, pid INTEGER NOT NULL, "
        "started_s REAL NOT NULL)"
    )
    old.execute("INSERT INTO processes VALUES ('gateway', 'gateway', NULL, 42, 1.0)")
    old.commit()
    old.close()
    store = Store(db)
    [record] = store.processes()
    assert record.id == "gateway" and record.identity is None  # no identity: never adopted, only cleaned up
