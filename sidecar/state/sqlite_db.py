"""The synchronous half of the SQLite ledger: schema and one function per operation.

Each function runs a whole transaction in one synchronous call (on the event loop's connection or
the store's worker thread; see ``sqlite_store``), so no transaction is ever interleaved with
another and nothing holds a lock across an ``await``. ``BEGIN IMMEDIATE`` takes the write lock up
front, which makes a claim atomic against other connections and processes on the same file too.
Every statement is parametrized: keys never become SQL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .records import LedgerRecord, RecordState, StoredResponse

__all__ = ["SCHEMA_VERSION", "Db", "is_busy"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_records (
    provider TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    sent_at REAL,
    expires_at REAL NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    body_too_large INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, key)
);
CREATE INDEX IF NOT EXISTS ledger_records_expires ON ledger_records (expires_at);
CREATE INDEX IF NOT EXISTS ledger_records_owner ON ledger_records (owner, state);
-- The row count, kept exact by triggers (also for other processes), so the cap costs no COUNT(*).
CREATE TABLE IF NOT EXISTS ledger_count (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT OR IGNORE INTO ledger_count (id, n) VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS ledger_records_inserted AFTER INSERT ON ledger_records
    BEGIN UPDATE ledger_count SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS ledger_records_deleted AFTER DELETE ON ledger_records
    BEGIN UPDATE ledger_count SET n = n - 1; END;
"""

_COLUMNS = (
    "provider, key, fingerprint, state, owner, claim_id, claimed_at, sent_at, expires_at,"
    " status, headers, body, body_too_large"
)
_NO_BODY_COLUMNS = _COLUMNS.replace(" body,", " NULL,")
_SETTLEABLE = (RecordState.IN_FLIGHT.value, RecordState.UNKNOWN.value)


class Db:
    """One connection, used only from the worker thread that created it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path, busy_timeout: float) -> Db:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{path} has ledger schema {version}; this sidecar knows {SCHEMA_VERSION}"
                )
            with _transaction(conn):
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    @classmethod
    def attach(cls, path: Path) -> Db:
        """A second connection to a file ``open`` prepared, that never waits for a lock.

        Busy is an immediate ``SQLITE_BUSY`` here (the caller takes the operation elsewhere), and
        it never checkpoints by itself: a checkpoint writes the database file and syncs it, which
        the caller runs where blocking is harmless (``checkpoint``).
        """
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database without blocking writers (PASSIVE)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def claim(
        self, record: LedgerRecord, now: float, max_entries: int
    ) -> tuple[LedgerRecord | None, int]:
        """Insert ``record`` unless a live one holds its key: (existing or None, evicted count).

        The primary key decides who wins (``ON CONFLICT DO NOTHING``), so the claim is atomic by
        the constraint itself, whatever the locking; ``BEGIN IMMEDIATE`` keeps the cap's count and
        evictions in the same transaction.
        """
        with _transaction(self.conn):
            self.conn.execute(
                "DELETE FROM ledger_records WHERE provider = ? AND key = ? AND expires_at <= ?",
                (record.provider, record.key, now),
            )
            inserted = self.conn.execute(
                f"INSERT INTO ledger_records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (provider, key) DO NOTHING",
                _row(record),
            ).rowcount
            if not inserted:
                existing = self._select(record.provider, record.key, now, _COLUMNS)
                if existing is None:  # the conflicting row is live by construction
                    raise sqlite3.IntegrityError("claim lost to a row that is not there")
                return existing, 0
            return None, self._enforce_cap(now, max_entries)

    def get(self, provider: str, key: str, now: float) -> LedgerRecord | None:
        return self._select(provider, key, now, _COLUMNS)

    def complete(
        self, provider: str, key: str, claim_id: str, response: StoredResponse, sent_at: float | None,
        now: float,
    ) -> bool:
        cur = self.conn.execute(
            "UPDATE ledger_records SET state = ?, status = ?, headers = ?, body = ?, body_too_large = ?,"
            " sent_at = COALESCE(?, sent_at)"
            " WHERE provider = ? AND key = ? AND claim_id = ? AND state IN (?, ?) AND expires_at > ?",
            (RecordState.DONE.value, response.status, json.dumps(response.headers), response.body,
             int(response.body_too_large), sent_at, provider, key, claim_id, *_SETTLEABLE, now),
        )
        return cur.rowcount == 1

    def mark_unknown(
        self, provider: str, key: str, claim_id: str, sent_at: float | None, now: float
    ) -> bool:
        cur = self.conn.execute(
            "UPDATE ledger_records SET state = ?, sent_at = COALESCE(?, sent_at)"
            " WHERE provider = ? AND key = ? AND claim_id = ? AND state = ? AND expires_at > ?",
            (RecordState.UNKNOWN.value, sent_at, provider, key, claim_id, RecordState.IN_FLIGHT.value, now),
        )
        return cur.rowcount == 1

    def release(self, provider: str, key: str, claim_id: str | None, now: float) -> bool:
        if claim_id is None:
            cur = self.conn.execute(
                "DELETE FROM ledger_records WHERE provider = ? AND key = ? AND expires_at > ?",
                (provider, key, now),
            )
        else:
            cur = self.conn.execute(
                "DELETE FROM ledger_records WHERE provider = ? AND key = ? AND claim_id = ?"
                " AND state IN (?, ?) AND expires_at > ?",
                (provider, key, claim_id, *_SETTLEABLE, now),
            )
        return cur.rowcount == 1

    def list(self, provider: str | None, limit: int, now: float) -> list[LedgerRecord]:
        rows = self.conn.execute(
            f"SELECT {_NO_BODY_COLUMNS} FROM ledger_records"
            " WHERE expires_at > ? AND (? IS NULL OR provider = ?) ORDER BY rowid DESC LIMIT ?",
            (now, provider, provider, limit),
        ).fetchall()
        return [_record(r) for r in rows]

    def adopt_orphans(self, instance_id: str, now: float) -> int:
        cur = self.conn.execute(
            "UPDATE ledger_records SET state = ? WHERE owner = ? AND state = ? AND expires_at > ?",
            (RecordState.UNKNOWN.value, instance_id, RecordState.IN_FLIGHT.value, now),
        )
        return cur.rowcount

    def purge(self, now: float) -> int:
        return self.conn.execute("DELETE FROM ledger_records WHERE expires_at <= ?", (now,)).rowcount

    def count(self) -> int:
        return int(self.conn.execute("SELECT n FROM ledger_count").fetchone()[0])

    def _select(self, provider: str, key: str, now: float, columns: str) -> LedgerRecord | None:
        row = self.conn.execute(
            f"SELECT {columns} FROM ledger_records WHERE provider = ? AND key = ? AND expires_at > ?",
            (provider, key, now),
        ).fetchone()
        return None if row is None else _record(row)

    def _enforce_cap(self, now: float, max_entries: int) -> int:
        """Over the cap: purge what expired, then evict the oldest claims. Returns the evictions."""
        if self.count() <= max_entries:
            return 0
        self.purge(now)
        excess = self.count() - max_entries
        if excess <= 0:
            return 0
        return self.conn.execute(
            "DELETE FROM ledger_records WHERE rowid IN"
            " (SELECT rowid FROM ledger_records ORDER BY rowid LIMIT ?)",
            (excess,),
        ).rowcount


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")  # may fail (busy outside WAL, I/O): the transaction is then still open
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back by itself already
            conn.execute("ROLLBACK")
        raise


def is_busy(error: sqlite3.Error) -> bool:
    """Another connection holds the lock this statement needed (nothing was written)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # the primary result code
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def _statements(script: str) -> list[str]:
    """Split the schema on complete statements (triggers hold ``;`` inside BEGIN ... END)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def _row(r: LedgerRecord) -> tuple[object, ...]:
    resp = r.response
    return (
        r.provider, r.key, r.fingerprint, r.state.value, r.owner, r.claim_id, r.claimed_at, r.sent_at,
        r.expires_at,
        None if resp is None else resp.status,
        None if resp is None else json.dumps(resp.headers),
        None if resp is None else resp.body,
        0 if resp is None else int(resp.body_too_large),
    )


def _record(row: Any) -> LedgerRecord:
    """A row in ``_COLUMNS`` order (sqlite3 rows are untyped tuples)."""
    (provider, key, fingerprint, state, owner, claim_id, claimed_at, sent_at, expires_at,
     status, headers, body, too_large) = row
    response = None
    if status is not None:
        response = StoredResponse(
            status=status,
            headers=tuple((name, value) for name, value in json.loads(headers)),
            body=None if body is None else bytes(body),
            body_too_large=bool(too_large),
        )
    return LedgerRecord(
        provider=provider, key=key, fingerprint=fingerprint, state=RecordState(state), owner=owner,
        claim_id=claim_id, claimed_at=claimed_at, sent_at=sent_at, expires_at=expires_at,
        response=response,
    )
