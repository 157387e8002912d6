"""Operator state in SQLite: deployed APIs and splitters, API revision history, events, and the processes it
started.

The store is the operator's memory across restarts: ``thrifty up`` after a crash reads it to restart
(or adopt) what was deployed. Calls are synchronous; each is a single small statement in WAL mode.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from thrifty.engines.identity import ProcessIdentity
from thrifty.spec import ApiSpec

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apis (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    revision TEXT NOT NULL,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    api TEXT NOT NULL,
    revision TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_s REAL NOT NULL,
    PRIMARY KEY (api, revision)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_s REAL NOT NULL,
    api TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_api ON events (api, id);
CREATE TABLE IF NOT EXISTS splitters (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL,
    canary TEXT
);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    spot INTEGER NOT NULL,
    price_per_hour REAL NOT NULL,
    state TEXT NOT NULL,
    launched_at REAL NOT NULL,
    ready_at REAL,
    engine_node_id TEXT,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS spot_replacing (
    new_id TEXT PRIMARY KEY,
    old_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    api TEXT,
    pid INTEGER NOT NULL,
    started_s REAL NOT NULL
);
"""
# Columns added since the first schema; an older state.db gets them (empty) on open.
_PROCESS_COLUMNS = {"revision": "TEXT", "start_ticks": "INTEGER", "token": "TEXT"}


@dataclass(frozen=True)
class ProcessRecord:
    """A process the operator started: enough to adopt it (or stop it) after the operator crashed."""

    id: str  # the replica id, or "gateway"
    kind: str  # "replica" | "gateway"
    api: str | None
    revision: str | None
    identity: ProcessIdentity | None  # None: recorded by an older version, never adopted
    started_s: float


@dataclass(frozen=True)
class NodeRecord:
    """A node the operator bought (a row of ``thrifty cluster info``); times are wall-clock seconds."""

    id: str
    pool: str
    instance_type: str
    spot: bool
    price_per_hour: float
    state: str  # launching | ready | cordoned | terminating
    launched_at: float
    ready_at: float | None = None
    engine_node_id: str | None = None
    reason: str = ""  # why it was launched


@dataclass(frozen=True)
class StoredApi:
    spec: ApiSpec
    created_s: float
    updated_s: float


@dataclass(frozen=True)
class StoredSplitter:
    """A deployed splitter: its config as deployed (JSON) and its canary's progress, if it has one."""

    name: str
    config: dict[str, Any]
    created_s: float
    updated_s: float
    canary: dict[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    id: int
    ts_s: float
    api: str
    kind: str
    message: str
    data: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts_s,
            "api": self.api,
            "kind": self.kind,
            "message": self.message,
            "data": self.data,
        }


MAX_EVENTS_PER_API = 5000


class Store:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(processes)")}
        for column, kind in _PROCESS_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE processes ADD COLUMN {column} {kind}")
        self._inserts = 0

    def close(self) -> None:
        self._db.close()

    # APIs -------------------------------------------------------------------------------------------
    def put_api(self, spec: ApiSpec, now_s: float) -> None:
        blob = orjson.dumps(spec.to_record()).decode()
        self._db.execute(
            "INSERT INTO apis (name, spec, revision, created_s, updated_s) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET spec=excluded.spec, revision=excluded.revision, "
            "updated_s=excluded.updated_s",
            (spec.name, blob, spec.revision, now_s, now_s),
        )
        self._db.execute(
            "INSERT OR IGNORE INTO revisions (api, revision, spec, created_s) VALUES (?, ?, ?, ?)",
            (spec.name, spec.revision, blob, now_s),
        )

    def delete_api(self, name: str) -> None:
        self._db.execute("DELETE FROM apis WHERE name = ?", (name,))

    def list_apis(self) -> list[StoredApi]:
        rows = self._db.execute("SELECT spec, created_s, updated_s FROM apis ORDER BY name").fetchall()
        return [StoredApi(ApiSpec.from_record(orjson.loads(s)), c, u) for s, c, u in rows]

    def revisions(self, name: str) -> list[tuple[str, float]]:
        rows = self._db.execute(
            "SELECT revision, created_s FROM revisions WHERE api = ? ORDER BY created_s DESC", (name,)
        ).fetchall()
        return [(str(r), float(c)) for r, c in rows]

    # splitters --------------------------------------------------------------------------------------
    def put_splitter(self, stored: StoredSplitter) -> None:
        self._db.execute(
            "INSERT INTO splitters (name, config, created_s, updated_s, canary) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET config=excluded.config, updated_s=excluded.updated_s, "
            "canary=excluded.canary",
            (
                stored.name,
                orjson.dumps(stored.config).decode(),
                stored.created_s,
                stored.updated_s,
                orjson.dumps(stored.canary).decode() if stored.canary is not None else None,
            ),
        )

    def delete_splitter(self, name: str) -> None:
        self._db.execute("DELETE FROM splitters WHERE name = ?", (name,))

    def list_splitters(self) -> list[StoredSplitter]:
        rows = self._db.execute(
            "SELECT name, config, created_s, updated_s, canary FROM splitters ORDER BY name"
        ).fetchall()
        return [
            StoredSplitter(str(n), orjson.loads(c), float(cr), float(u), orjson.loads(k) if k else None)
            for n, c, cr, u, k in rows
        ]

    # events -----------------------------------------------------------------------------------------
    def add_event(self, api: str, kind: str, message: str, now_s: float, data: dict[str, Any] | None = None) -> None:
        self._db.execute(
            "INSERT INTO events (ts_s, api, kind, message, data) VALUES (?, ?, ?, ?, ?)",
            (now_s, api, kind, message, orjson.dumps(data).decode() if data is not None else None),
        )
        self._inserts += 1
        if self._inserts % 200 == 0:  # bounded history: the newest MAX_EVENTS_PER_API events of each API
            self.prune_events(MAX_EVENTS_PER_API)

    def prune_events(self, keep: int) -> None:
        self._db.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
            "(PARTITION BY api ORDER BY id DESC) AS n FROM events) WHERE n > ?)",
            (keep,),
        )

    def events(self, api: str | None = None, kind: str | None = None, limit: int = 50) -> list[Event]:
        sql = "SELECT id, ts_s, api, kind, message, data FROM events"
        where, args = [], []
        if api is not None:
            where.append("api = ?")
            args.append(api)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [
            Event(int(i), float(t), str(a), str(k), str(m), orjson.loads(d) if d else None)
            for i, t, a, k, m, d in reversed(rows)
        ]

    def cluster_events(self, kinds: tuple[str, ...], limit: int = 50) -> list[Event]:
        """The platform's events (api "-") of these kinds: node launches, terminations, consolidations."""
        marks = ",".join("?" * len(kinds))
        rows = self._db.execute(
            f"SELECT id, ts_s, api, kind, message, data FROM events WHERE api = '-' AND kind IN ({marks}) "
            "ORDER BY id DESC LIMIT ?",
            (*kinds, limit),
        ).fetchall()
        return [
            Event(int(i), float(t), str(a), str(k), str(m), orjson.loads(d) if d else None)
            for i, t, a, k, m, d in reversed(rows)
        ]

    # nodes ------------------------------------------------------------------------------------------
    def put_node(self, node: NodeRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO nodes (id, pool, instance_type, spot, price_per_hour, state, launched_at, "
            "ready_at, engine_node_id, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (node.id, node.pool, node.instance_type, int(node.spot), node.price_per_hour, node.state,
             node.launched_at, node.ready_at, node.engine_node_id, node.reason),
        )  # fmt: skip

    def delete_node(self, node_id: str) -> None:
        self._db.execute("DELETE FROM nodes WHERE id = ?", (node_id,))

    def nodes(self) -> list[NodeRecord]:
        rows = self._db.execute(
            "SELECT id, pool, instance_type, spot, price_per_hour, state, launched_at, ready_at, engine_node_id, "
            "reason FROM nodes ORDER BY id"
        ).fetchall()
        return [
            NodeRecord(str(i), str(p), str(t), bool(s), float(pr), str(st), float(la), ra, e, str(r))
            for i, p, t, s, pr, st, la, ra, e, r in rows
        ]

    # spot replacements in progress (new replica id -> the replica it replaces), for a restarted operator --
    def put_spot_replacing(self, new_id: str, old_id: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO spot_replacing (new_id, old_id) VALUES (?, ?)", (new_id, old_id))

    def delete_spot_replacing(self, new_id: str) -> None:
        self._db.execute("DELETE FROM spot_replacing WHERE new_id = ?", (new_id,))

    def spot_replacing(self) -> dict[str, str]:
        rows = self._db.execute("SELECT new_id, old_id FROM spot_replacing ORDER BY new_id").fetchall()
        return {str(n): str(o) for n, o in rows}

    # processes the operator started (for adoption or clean-up after a crash) ----------------------------
    def put_process(self, record: ProcessRecord) -> None:
        ident = record.identity
        self._db.execute(
            "INSERT OR REPLACE INTO processes (id, kind, api, pid, started_s, revision, start_ticks, token) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.kind,
                record.api,
                ident.pid if ident is not None else 0,
                record.started_s,
                record.revision,
                ident.start_ticks if ident is not None else None,
                ident.token if ident is not None else None,
            ),
        )

    def delete_process(self, proc_id: str) -> None:
        self._db.execute("DELETE FROM processes WHERE id = ?", (proc_id,))

    def processes(self) -> list[ProcessRecord]:
        rows = self._db.execute(
            "SELECT id, kind, api, revision, pid, start_ticks, token, started_s FROM processes ORDER BY id"
        ).fetchall()
        return [
            ProcessRecord(
                str(i),
                str(k),
                a,
                r,
                ProcessIdentity(int(p), int(t), str(tok)) if t is not None and tok else None,
                float(s),
            )
            for i, k, a, r, p, t, tok, s in rows
        ]
