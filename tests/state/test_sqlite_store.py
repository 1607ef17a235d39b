"""The SQLite store's two connections: requests on the event loop's, waits and checkpoints on a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from sidecar.state import SqliteStore, StoredResponse
from tests.support.fakes import FakeClock
from tests.support.ledger_backends import EPOCH
from tests.support.polling import eventually

FP = "f" * 64
ANSWER = StoredResponse(201, (("Content-Type", "application/json"),), b'{"id": "p1"}' * 20)


async def _settle_many(store: SqliteStore, count: int) -> None:
    for i in range(count):
        claim = await store.claim("replicate", f"k{i}", FP)
        assert await store.complete("replicate", f"k{i}", claim.record.claim_id, ANSWER)


async def test_a_claim_waits_for_a_lock_on_the_thread_while_the_loop_runs_on(tmp_path: Path) -> None:
    """Another process holds the write lock: the claim waits for it (within busy_timeout) without
    blocking the event loop, and wins once the lock is gone."""
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path, instance_id="pod-a", clock=FakeClock(EPOCH), busy_timeout=10.0)
    await store.start()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    claim = asyncio.create_task(store.claim("replicate", "k", FP))
    ticks = 0
    while not claim.done() and ticks < 20:  # the loop keeps turning while the claim waits
        await asyncio.sleep(0.01)
        ticks += 1
    assert not claim.done() and ticks == 20
    threading.Thread(target=lambda: (holder.execute("ROLLBACK"), holder.close())).start()
    assert (await claim).claimed
    assert (await store.get("replicate", "k")) is not None
    await store.close()


def _file_size(path: Path) -> int:
    return path.stat().st_size


async def test_the_log_is_copied_into_the_file_after_checkpoint_every_writes(tmp_path: Path) -> None:
    """The loop's connection never checkpoints by itself; the store does so on the thread."""
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path, instance_id="pod-a", clock=FakeClock(EPOCH), checkpoint_every=100)
    await store.start()
    empty = _file_size(path)
    await _settle_many(store, 600)
    await eventually(lambda: _file_size(path), until=lambda size: size > empty,
                     timeout=10, what="records copied from the log into the database file")
    await store.close()


async def test_without_checkpoints_the_records_stay_in_the_log(tmp_path: Path) -> None:
    """The control for the test above: past SQLite's own 1000-page threshold, with the store's
    checkpoints out of reach, the database file has not grown, and every record is still there."""
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path, instance_id="pod-a", clock=FakeClock(EPOCH), checkpoint_every=10**9)
    await store.start()
    empty = _file_size(path)
    await _settle_many(store, 1500)
    assert _file_size(path) == empty
    assert _file_size(Path(f"{path}-wal")) > 1000 * 4096
    assert (await store.health()).entries == 1500
    await store.close()


def test_a_claim_whose_commit_fails_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A COMMIT that fails (here SQLITE_BUSY: rollback-journal file, a reader holding its lock) must
    roll back: the loop's connection would otherwise stay inside the claim's transaction, holding
    the write lock against the thread it falls back to, and every later statement of it would join
    that transaction and never be committed."""

    from sidecar.state.records import LedgerRecord, RecordState
    from sidecar.state.sqlite_db import Db, is_busy

    path = tmp_path / "ledger.sqlite3"
    worker = Db.open(path, 2.0)
    worker.conn.execute("PRAGMA journal_mode=DELETE")  # a file where WAL is not in force
    loop = Db.attach(path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM ledger_records").fetchall()  # holds SHARED: COMMIT can't write
    now = time.time()
    record = LedgerRecord("p", "k", "f" * 64, RecordState.IN_FLIGHT, "me", "c1", claimed_at=now,
                          sent_at=None, expires_at=now + 60)
    try:
        with pytest.raises(sqlite3.OperationalError) as busy:
            loop.claim(record, now, 100)
        assert is_busy(busy.value)
        assert not loop.conn.in_transaction
        reader.execute("COMMIT")
        assert worker.claim(record, now, 100) == (None, 0)  # the fallback is not locked out
    finally:
        reader.close()
        loop.close()
        worker.close()
