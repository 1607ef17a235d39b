"""The embedded ledger: one SQLite file (WAL), written from the event loop, waited for on a thread.

A request's operations (claim, complete, mark unknown, release, get) run on the event loop, on a
connection that never waits: in WAL mode with ``synchronous=NORMAL`` a commit is a write to the
log without a sync, tens of microseconds, less than handing the call to a thread and back (two
wake-ups, each up to a few hundred microseconds on a busy or virtual machine). When another
connection holds the lock, that connection answers ``SQLITE_BUSY`` at once, having done nothing,
and the operation goes to the worker thread instead, whose connection waits up to ``busy_timeout``.
The thread also runs what may take long: opening and creating the schema, listing, adoption,
purging, and the checkpoints that copy the log into the database (which sync the file), one after
every ``checkpoint_every`` writes on the loop.

Why a thread of our own rather than aiosqlite: each operation here is one synchronous function that
runs its whole transaction (``sqlite_db``), so the claim's read-then-insert can't interleave with
another coroutine's statements on the same connection. aiosqlite awaits statement by statement,
which would put a transaction across ``await`` points.

The file survives a restart of the sidecar: on start the process calls ``adopt_orphans`` with its
instance id, and the claims its predecessor left ``in_flight`` become ``unknown``. Expired rows go on
every claim that meets the cap and every ``purge_interval``; ``max_entries`` evicts oldest first.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .errors import StoreUnavailable
from .ids import check_key, new_claim_id
from .observe import NULL_OBSERVER, OperationTimer, StoreObserver
from .records import Claim, LedgerRecord, RecordState, StoredResponse, StoreHealth
from .sqlite_db import Db, is_busy
from .waiting import POLL_MAX, POLL_MIN, Waiters, WaitsForSettling

__all__ = ["SqliteStore"]

T = TypeVar("T")
CHECKPOINT_EVERY = 1000  # writes on the loop between checkpoints (SQLite's own default, in pages)


class SqliteStore(WaitsForSettling):
    backend = "sqlite"

    def __init__(
        self,
        path: Path | str,
        *,
        instance_id: str,
        ttl: float = 86400.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
        observer: StoreObserver = NULL_OBSERVER,
        new_id: Callable[[], str] = new_claim_id,
        poll: tuple[float, float] = (POLL_MIN, POLL_MAX),
        busy_timeout: float = 2.0,
        op_timeout: float = 5.0,
        purge_interval: float = 60.0,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.path = Path(path)
        self.instance_id = instance_id
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.new_id = new_id
        self.poll = poll  # (first, longest) re-read interval while waiting: see ``waiting``
        self.busy_timeout = busy_timeout
        self.op_timeout = op_timeout
        self.purge_interval = purge_interval
        self.checkpoint_every = checkpoint_every
        self.evictions = 0
        self._ops = OperationTimer(self.backend, observer)
        self._waiters = Waiters()
        self._executor: ThreadPoolExecutor | None = None
        self._db: Db | None = None  # the worker thread's connection
        self._loop_db: Db | None = None  # the event loop's connection (never waits for a lock)
        self._since_checkpoint = 0  # operations on the loop's connection since the last checkpoint
        self._checkpoint: asyncio.Future[None] | None = None
        self._purger: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sidecar-ledger-sqlite")
        try:
            with self._ops.op("open"):
                self._db = await self._on_thread(Db.open, self.path, self.busy_timeout)
                self._loop_db = self._unavailable_on_error(Db.attach, self.path)
        except BaseException:
            await self.close()
            raise
        self._purger = asyncio.create_task(self._purge_forever(), name="sidecar-ledger-purge")

    async def close(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        if self._checkpoint is not None:
            with contextlib.suppress(sqlite3.Error, OSError):
                await self._checkpoint
        if self._loop_db is not None:
            self._loop_db.close()
        if self._executor is not None:
            if self._db is not None:
                with contextlib.suppress(StoreUnavailable):
                    await self._on_thread(self._db.close)
            self._executor.shutdown(wait=False)
        self._executor, self._db, self._loop_db = None, None, None

    async def claim(
        self, provider: str, key: str, fingerprint: str, *, ttl: float | None = None
    ) -> Claim:
        check_key(provider, key)
        with self._ops.op("claim"):
            now = self.clock()
            record = LedgerRecord(
                provider, key, fingerprint, RecordState.IN_FLIGHT, self.instance_id, self.new_id(),
                claimed_at=now, sent_at=None, expires_at=now + (self.ttl if ttl is None else ttl),
            )
            existing, evicted = await self._on_loop(Db.claim, record, now, self.max_entries)
            self.evictions += evicted
            return Claim(False, existing) if existing is not None else Claim(True, record)

    async def get(self, provider: str, key: str) -> LedgerRecord | None:
        check_key(provider, key)
        with self._ops.op("get"):
            return await self._on_loop(Db.get, provider, key, self.clock())

    async def complete(
        self, provider: str, key: str, claim_id: str, response: StoredResponse, *,
        sent_at: float | None = None,
    ) -> bool:
        check_key(provider, key)
        with self._ops.op("complete"):
            done = await self._on_loop(Db.complete, provider, key, claim_id, response, sent_at, self.clock())
        if done:
            self._waiters.wake(provider, key)
        return done

    async def mark_unknown(
        self, provider: str, key: str, claim_id: str, *, sent_at: float | None = None
    ) -> bool:
        check_key(provider, key)
        with self._ops.op("mark_unknown"):
            done = await self._on_loop(Db.mark_unknown, provider, key, claim_id, sent_at, self.clock())
        if done:
            self._waiters.wake(provider, key)
        return done

    async def release(self, provider: str, key: str, *, claim_id: str | None = None) -> bool:
        check_key(provider, key)
        with self._ops.op("release"):
            done = await self._on_loop(Db.release, provider, key, claim_id, self.clock())
        if done:
            self._waiters.wake(provider, key)
        return done

    async def list(self, provider: str | None = None, limit: int = 100) -> builtins.list[LedgerRecord]:
        with self._ops.op("list"):
            return await self._run(Db.list, provider, limit, self.clock())

    async def adopt_orphans(self, instance_id: str) -> int:
        with self._ops.op("adopt_orphans"):
            adopted = await self._run(Db.adopt_orphans, instance_id, self.clock())
        if adopted:
            self._waiters.wake_all()
        return adopted

    async def purge(self) -> int:
        """Delete expired rows now; returns how many went."""
        with self._ops.op("purge"):
            return await self._run(Db.purge, self.clock())

    async def ping(self) -> None:
        with self._ops.op("ping"):
            await self._run(Db.count)

    async def health(self) -> StoreHealth:
        try:
            entries = await self._run(Db.count)
        except StoreUnavailable as e:
            return StoreHealth(self.backend, False, None, self.evictions, e.detail)
        return StoreHealth(self.backend, True, entries, self.evictions)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(db, *args)`` on the worker thread; any SQLite failure is ``StoreUnavailable``."""
        db = self._db
        if db is None:
            raise StoreUnavailable(self.backend, "store not started")
        return await self._on_thread(fn, db, *args)

    async def _on_loop(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(db, *args)`` on the loop's connection; when the file is locked, on the thread."""
        db = self._loop_db
        if db is None:
            raise StoreUnavailable(self.backend, "store not started")
        try:
            result = fn(db, *args)
        except sqlite3.Error as e:
            if not is_busy(e):
                raise StoreUnavailable(self.backend, f"{type(e).__name__}: {e}") from e
            return await self._run(fn, *args)  # nothing was written: wait for the lock there
        except OSError as e:
            raise StoreUnavailable(self.backend, f"{type(e).__name__}: {e}") from e
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every and self._checkpoint is None:
            self._start_checkpoint()
        return result

    def _start_checkpoint(self) -> None:
        """Copy the log into the file on the thread, now (a failure is retried after more writes)."""
        if self._executor is None or self._db is None:
            return
        self._since_checkpoint = 0
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._db.checkpoint)
        self._checkpoint = future
        future.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            self._since_checkpoint = self.checkpoint_every // 2  # try again sooner

    def _unavailable_on_error(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(self.backend, f"{type(e).__name__}: {e}") from e

    async def _on_thread(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise StoreUnavailable(self.backend, "store not started")
        future = asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))
        try:
            return await asyncio.wait_for(future, self.op_timeout)
        except TimeoutError:
            raise StoreUnavailable(self.backend, f"no answer within {self.op_timeout}s") from None
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(self.backend, f"{type(e).__name__}: {e}") from e

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.purge_interval)
            with contextlib.suppress(StoreUnavailable):  # the observer saw it; try again next round
                await self.purge()
