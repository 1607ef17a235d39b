"""The in-process ledger: bounded by a lifetime, an entry cap and a byte budget for stored bodies.

Nothing here awaits between reading and writing a record, so a claim is atomic on the event loop.
It survives nothing: a restart forgets every key (use ``sqlite`` for that).
"""

from __future__ import annotations

import builtins
import dataclasses
import heapq
import time
from collections import OrderedDict
from collections.abc import Callable

from .ids import check_key, new_claim_id
from .observe import NULL_OBSERVER, OperationTimer, StoreObserver
from .records import Claim, LedgerRecord, RecordState, StoredResponse, StoreHealth
from .waiting import POLL_MAX, POLL_MIN, Waiters, WaitsForSettling

__all__ = ["MEMORY_MAX_ENTRIES", "MemoryStore"]

Key = tuple[str, str]
# A done record with a small answer costs about 1 KiB (record, strings, headers, dict and heap
# entries), so the default cap holds the store near 5 MiB.
MEMORY_MAX_ENTRIES = 5_000
_SETTLEABLE = (RecordState.IN_FLIGHT, RecordState.UNKNOWN)


def _size(record: LedgerRecord) -> int:
    response = record.response
    return 0 if response is None or response.body is None else len(response.body)


class MemoryStore(WaitsForSettling):
    """Records in insertion (claim) order; the oldest go first when a bound is reached."""

    backend = "memory"

    def __init__(
        self,
        *,
        instance_id: str,
        ttl: float = 86400.0,
        max_entries: int = MEMORY_MAX_ENTRIES,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        observer: StoreObserver = NULL_OBSERVER,
        new_id: Callable[[], str] = new_claim_id,
        poll: tuple[float, float] = (POLL_MIN, POLL_MAX),
    ) -> None:
        self.instance_id = instance_id
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.new_id = new_id
        self.poll = poll  # (first, longest) re-read interval while waiting: see ``waiting``
        self.evictions = 0
        self._ops = OperationTimer(self.backend, observer)
        self._records: OrderedDict[Key, LedgerRecord] = OrderedDict()
        self._expiry: list[tuple[float, str, Key]] = []  # (expires_at, claim_id, key); stale ones skipped
        self._bytes = 0
        self._waiters = Waiters()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def claim(
        self, provider: str, key: str, fingerprint: str, *, ttl: float | None = None
    ) -> Claim:
        k = check_key(provider, key)
        with self._ops.op("claim"):
            now = self.clock()
            self._purge(now)
            existing = self._records.get(k)
            if existing is not None:
                return Claim(False, existing)
            record = LedgerRecord(
                provider, key, fingerprint, RecordState.IN_FLIGHT, self.instance_id, self.new_id(),
                claimed_at=now, sent_at=None, expires_at=now + (self.ttl if ttl is None else ttl),
            )
            self._put(k, record)
            heapq.heappush(self._expiry, (record.expires_at, record.claim_id, k))
            self._enforce_bounds(keep=k)
            return Claim(True, record)

    async def get(self, provider: str, key: str) -> LedgerRecord | None:
        k = check_key(provider, key)
        with self._ops.op("get"):
            return self._live(k)

    async def complete(
        self, provider: str, key: str, claim_id: str, response: StoredResponse, *,
        sent_at: float | None = None,
    ) -> bool:
        k = check_key(provider, key)
        with self._ops.op("complete"):
            record = self._held(k, claim_id, _SETTLEABLE)
            if record is None:
                return False
            self._put(k, dataclasses.replace(
                record, state=RecordState.DONE, response=response,
                sent_at=record.sent_at if sent_at is None else sent_at,
            ))
            self._enforce_bounds(keep=k)
            self._waiters.wake(provider, key)
            return True

    async def mark_unknown(
        self, provider: str, key: str, claim_id: str, *, sent_at: float | None = None
    ) -> bool:
        k = check_key(provider, key)
        with self._ops.op("mark_unknown"):
            record = self._held(k, claim_id, (RecordState.IN_FLIGHT,))
            if record is None:
                return False
            self._put(k, dataclasses.replace(
                record, state=RecordState.UNKNOWN, sent_at=record.sent_at if sent_at is None else sent_at
            ))
            self._waiters.wake(provider, key)
            return True

    async def release(self, provider: str, key: str, *, claim_id: str | None = None) -> bool:
        k = check_key(provider, key)
        with self._ops.op("release"):
            held = self._live(k) if claim_id is None else self._held(k, claim_id, _SETTLEABLE)
            if held is None:
                return False
            self._drop(k)
            self._waiters.wake(provider, key)
            return True

    async def list(self, provider: str | None = None, limit: int = 100) -> builtins.list[LedgerRecord]:
        with self._ops.op("list"):
            self._purge(self.clock())
            found: builtins.list[LedgerRecord] = []
            for record in reversed(self._records.values()):
                if len(found) >= limit:
                    break
                if provider is None or record.provider == provider:
                    found.append(_without_body(record))
            return found

    async def adopt_orphans(self, instance_id: str) -> int:
        with self._ops.op("adopt_orphans"):
            self._purge(self.clock())
            orphans = [
                k for k, r in self._records.items()
                if r.owner == instance_id and r.state is RecordState.IN_FLIGHT
            ]
            for k in orphans:
                self._records[k] = dataclasses.replace(self._records[k], state=RecordState.UNKNOWN)
                self._waiters.wake(*k)
            return len(orphans)

    async def ping(self) -> None:
        with self._ops.op("ping"):
            pass

    async def health(self) -> StoreHealth:
        self._purge(self.clock())
        return StoreHealth(self.backend, True, len(self._records), self.evictions)

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def _live(self, k: Key) -> LedgerRecord | None:
        record = self._records.get(k)
        if record is not None and record.expires_at <= self.clock():
            self._drop(k)
            return None
        return record

    def _held(self, k: Key, claim_id: str, states: tuple[RecordState, ...]) -> LedgerRecord | None:
        record = self._live(k)
        if record is None or record.claim_id != claim_id or record.state not in states:
            return None
        return record

    def _put(self, k: Key, record: LedgerRecord) -> None:
        old = self._records.get(k)
        if old is not None:
            self._bytes -= _size(old)
        self._records[k] = record  # an update keeps the key's place in claim order
        self._bytes += _size(record)

    def _drop(self, k: Key) -> None:
        old = self._records.pop(k, None)
        if old is not None:
            self._bytes -= _size(old)

    def _purge(self, now: float) -> None:
        """Drop expired records; the heap may hold stale entries (released keys), skipped here."""
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, claim_id, k = heapq.heappop(heap)
            record = self._records.get(k)
            if record is not None and record.claim_id == claim_id:
                self._drop(k)
        if len(heap) > 2 * len(self._records) + 64:  # too many stale entries: rebuild, stay bounded
            self._expiry = [(r.expires_at, r.claim_id, k) for k, r in self._records.items()]
            heapq.heapify(self._expiry)

    def _enforce_bounds(self, keep: Key) -> None:
        """Evict the oldest claims while over ``max_entries`` or ``max_bytes``, never ``keep``."""
        while len(self._records) > self.max_entries or self._bytes > self.max_bytes:
            victim = next((k for k in self._records if k != keep), None)
            if victim is None:
                break
            self._drop(victim)
            self.evictions += 1


def _without_body(record: LedgerRecord) -> LedgerRecord:
    if record.response is None:
        return record
    return dataclasses.replace(record, response=dataclasses.replace(record.response, body=None))
