"""SQLite report store: the embedded default, one file, no server.

Documents are stored as JSON next to their natural-key columns; journey
steps get their own table (plain columns: there are millions) keyed by
their position in the journey, and a journey's steps are replaced whole.
WAL with the default synchronous=FULL: a commit is on disk before the
change log it came from is dropped in Redis.

Files written by earlier versions (steps keyed by journal entry id) are
migrated when opened: their steps keep their order.

URLs follow SQLAlchemy's convention: `sqlite:///reports.db` is relative to
the working directory, `sqlite:////var/lib/cc/reports.db` (four slashes) is
absolute. A reader (`read_only=True`) creates nothing: no directory, file,
table or migration, and waits at most `READ_TIMEOUT` seconds for a writer's
lock before failing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable

from ..errors import BackendError, ValidationError
from .base import JOURNEY_FIELDS, ReportStore

WRITE_TIMEOUT = 30.0  # seconds a writer waits for another writer's lock
READ_TIMEOUT = 2.0  # seconds a reader (report --from-store, health) waits for a writer's lock
URL_FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS campaign_reports (
    tenant_id TEXT NOT NULL, campaign_id TEXT NOT NULL, job_id TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, job_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_journeys (
    tenant_id TEXT NOT NULL, campaign_id TEXT NOT NULL, job_id TEXT NOT NULL, user_id TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (tenant_id, campaign_id, job_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journey_steps (
    tenant_id TEXT NOT NULL, campaign_id TEXT NOT NULL, job_id TEXT NOT NULL, user_id TEXT NOT NULL,
    seq INTEGER NOT NULL, node TEXT, choice TEXT, ts REAL NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, job_id, user_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS durable_state (
    kind TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS overview_reports (
    tenant_id TEXT NOT NULL, report_type TEXT NOT NULL, report_date TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, report_type, report_date)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reconcile_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reconcile_by_tenant ON reconcile_reports (tenant_id, created_at);
"""


_dumps = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps with options builds one per call


def _sid_order(sid: str) -> tuple[int, int, int]:
    """Arrival order of a step id of earlier versions, `<ms>-<seq>.<position>`."""
    entry, _, pos = sid.partition(".")
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0), int(pos or 0)


def sqlite_path(url: str) -> str:
    """The file of an sqlite:// URL (SQLAlchemy's convention); ValidationError naming `store-url` otherwise."""
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if not rest.startswith("/") or len(rest) < 2:
        raise ValidationError("store-url", f"needs a file path: {URL_FORMS}, not {url!r}")
    return rest[1:]


class StoreAbsent(BackendError):
    """A reader found no store file (or none of its tables): nothing was ever written there."""


class SQLiteStore(ReportStore):
    def __init__(self, url: str, read_only: bool = False) -> None:
        self.url = url
        self.path = path = sqlite_path(url)
        self.read_only = read_only
        self._lock = threading.Lock()
        if path != ":memory:" and not Path(path).is_absolute() and not Path(path).exists() \
                and Path("/" + path).exists():
            raise ValidationError("store-url", f"{url!r} is the relative path {path!r} (three slashes: relative, "
                                               f"four: absolute); /{path} exists: did you mean sqlite:////{path}?")
        try:
            if read_only:
                if path == ":memory:" or not Path(path).exists():
                    raise StoreAbsent(f"report store {path}: no such file (nothing was persisted there yet)")
                if not Path(path).is_file():
                    raise BackendError(f"report store {path}: not a file")
                self._db = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True,
                                           check_same_thread=False, timeout=READ_TIMEOUT)
                found = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='campaign_reports'").fetchone()
                if found is None:
                    self._db.close()
                    raise StoreAbsent(f"report store {path}: no report tables (nothing was persisted there yet)")
                return
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=WRITE_TIMEOUT)
            self._migrate()
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(self._why(exc)) from exc

    def _why(self, exc: sqlite3.Error) -> str:
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            waited = READ_TIMEOUT if self.read_only else WRITE_TIMEOUT
            return f"report store {self.path}: locked by another process (waited {waited:g} s)"
        return f"report store {self.path}: {exc}"

    def _migrate(self) -> None:
        """Steps keyed by journal entry id (`sid`, before 0.2) become steps keyed by position."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(journey_steps)")]
        if "sid" not in columns:
            return
        with self._db:
            self._db.execute("ALTER TABLE journey_steps RENAME TO journey_steps_sid")
            self._db.executescript(SCHEMA)
            rows = self._db.execute(
                "SELECT tenant_id, campaign_id, job_id, user_id, sid, node, choice, ts FROM journey_steps_sid")
            ordered = sorted(rows, key=lambda r: (r[:4], r[7], _sid_order(r[4])))
            seq, last = 0, None
            out = []
            for r in ordered:
                seq = seq + 1 if r[:4] == last else 0
                last = r[:4]
                out.append((*r[:4], seq, r[5], r[6], r[7]))
            self._db.executemany("INSERT INTO journey_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", out)
            self._db.execute("DROP TABLE journey_steps_sid")

    def _write(self, sql: str, rows: Iterable[tuple]) -> None:
        try:
            with self._lock, self._db:
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise BackendError(self._why(exc)) from exc

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(self._why(exc)) from exc

    def upsert_campaign_reports(self, docs: Iterable[dict[str, Any]]) -> None:
        self._write(
            "INSERT OR REPLACE INTO campaign_reports VALUES (?, ?, ?, ?)",
            ((d["tenant_id"], d["campaign_id"], d["job_id"] or "", _dumps(d)) for d in docs),
        )

    def campaign_report(self, tenant: str, campaign: str, job: str | None) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT doc FROM campaign_reports WHERE tenant_id=? AND campaign_id=? AND job_id=?",
            (tenant, campaign, job or ""),
        )
        return json.loads(rows[0][0]) if rows else None

    def campaign_reports(self, tenant: str, campaign: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT doc FROM campaign_reports WHERE tenant_id=? AND campaign_id=? ORDER BY job_id",
            (tenant, campaign),
        )
        return [json.loads(r[0]) for r in rows]

    def upsert_journeys(self, docs: Iterable[dict[str, Any]]) -> None:
        docs = list(docs)
        key = "tenant_id=? AND campaign_id=? AND job_id=? AND user_id=?"
        try:
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO user_journeys VALUES (?, ?, ?, ?, ?)",
                    (
                        (d["tenant_id"], d["campaign_id"], d["job_id"], d["user_id"],
                         _dumps({k: v for k, v in d.items() if k != "journey_path"}))
                        for d in docs
                    ),
                )
                self._db.executemany(
                    f"DELETE FROM journey_steps WHERE {key} AND seq >= ?",
                    ((d["tenant_id"], d["campaign_id"], d["job_id"], d["user_id"], len(d.get("journey_path", ())))
                     for d in docs),
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO journey_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        (d["tenant_id"], d["campaign_id"], d["job_id"], d["user_id"], i, s["node"],
                         s["choice"], s["ts"])
                        for d in docs
                        for i, s in enumerate(d.get("journey_path", ()))
                    ),
                )
        except sqlite3.Error as exc:
            raise BackendError(self._why(exc)) from exc

    def journey(self, tenant: str, campaign: str, job: str, user: str) -> dict[str, Any] | None:
        key = (tenant, campaign, job, user)
        where = "tenant_id=? AND campaign_id=? AND job_id=? AND user_id=?"
        rows = self._read(f"SELECT doc FROM user_journeys WHERE {where}", key)
        if not rows:
            return None
        doc = json.loads(rows[0][0])
        steps = self._read(f"SELECT node, choice, ts FROM journey_steps WHERE {where} ORDER BY seq", key)
        doc["journey_path"] = [{"node": node, "choice": choice, "ts": ts} for node, choice, ts in steps]
        for f in JOURNEY_FIELDS:
            doc.setdefault(f, None)
        return doc

    def journey_lengths(self, tenant: str, campaign: str, job: str, users: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(users), 500):
            part = users[start:start + 500]
            rows = self._read(
                "SELECT user_id, COUNT(*) FROM journey_steps WHERE tenant_id=? AND campaign_id=? AND job_id=? "
                f"AND user_id IN ({','.join('?' * len(part))}) GROUP BY user_id",
                (tenant, campaign, job, *part),
            )
            out.update((u, n) for u, n in rows)
        return out

    def delete_journeys(self, tenant: str, campaign: str) -> None:
        where = "WHERE tenant_id=? AND campaign_id=?"
        try:
            with self._lock, self._db:
                self._db.execute(f"DELETE FROM user_journeys {where}", (tenant, campaign))
                self._db.execute(f"DELETE FROM journey_steps {where}", (tenant, campaign))
        except sqlite3.Error as exc:
            raise BackendError(self._why(exc)) from exc

    def upsert_overview(self, doc: dict[str, Any]) -> None:
        self._write(
            "INSERT OR REPLACE INTO overview_reports VALUES (?, ?, ?, ?)",
            [(doc["tenant_id"], doc["report_type"], doc["report_date"], _dumps(doc))],
        )

    def overview(self, tenant: str, report_type: str, report_date: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT doc FROM overview_reports WHERE tenant_id=? AND report_type=? AND report_date=?",
            (tenant, report_type, report_date),
        )
        return json.loads(rows[0][0]) if rows else None

    def insert_reconcile(self, doc: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO reconcile_reports (tenant_id, created_at, doc) VALUES (?, ?, ?)",
            [(doc["tenant_id"], doc["created_at"], _dumps(doc))],
        )

    def reconcile_reports(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT doc FROM reconcile_reports WHERE tenant_id=? ORDER BY created_at DESC, id DESC LIMIT ?",
            (tenant, limit),
        )
        return [json.loads(r[0]) for r in rows]

    def put_state(self, kind: str, key: str, doc: dict[str, Any]) -> None:
        self._write("INSERT OR REPLACE INTO durable_state VALUES (?, ?, ?)", [(kind, key, _dumps(doc))])

    def state(self, kind: str, key: str) -> dict[str, Any] | None:
        rows = self._read("SELECT doc FROM durable_state WHERE kind=? AND key=?", (kind, key))
        return json.loads(rows[0][0]) if rows else None

    def states(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(d) for k, d in self._read("SELECT key, doc FROM durable_state WHERE kind=?", (kind,))}

    def delete_state(self, kind: str, key: str) -> None:
        self._write("DELETE FROM durable_state WHERE kind=? AND key=?", [(kind, key)])

    def ping(self) -> None:
        self._read("SELECT 1", ())

    def close(self) -> None:
        with self._lock:
            self._db.close()
