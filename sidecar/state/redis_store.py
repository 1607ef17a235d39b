"""The shared ledger: every sidecar of a bot on one Redis (``resp.RespClient``, one pipelined connection).

Each operation is one Lua script or one read, so claims are atomic across the fleet. Every call is
bounded by the client's timeouts (``connect_timeout`` to connect, then ``op_timeout`` without a
reply drops the connection, failing every call on it); a connection failure makes the following
calls fail at once with ``StoreUnavailable`` until the reconnection backoff
(``reconnect.ReconnectGate``) lets one probe through. Nothing is retried: a retried script after a
lost reply could not tell its own claim from another's, and the caller is better served by a fast,
typed failure. The client reconnects by itself on the next call. ``rediss://`` URLs use TLS
(``?ssl_ca_certs=/path`` and the other ``ssl_*`` query arguments: see ``config.redis_address``). The
scripts touch keys they don't declare, so this needs a standalone Redis (or a Sentinel-managed
primary), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import redis_scripts as lua
from .errors import StoreUnavailable
from .ids import check_key, new_claim_id
from .observe import NULL_OBSERVER, OperationTimer, StoreObserver
from .reconnect import ReconnectGate
from .records import Claim, LedgerRecord, RecordState, StoredResponse, StoreHealth
from .redis_codec import NO_BODY_FIELDS, as_text, decode_record, encode_claim, member
from .resp import ReplyError, RespClient, Script
from .waiting import POLL_MAX, POLL_MIN, Waiters, WaitsForSettling

__all__ = ["RedisStore", "redis_client"]

T = TypeVar("T")
_CONNECTION_ERRORS = (OSError, TimeoutError)  # RespConnectionError and RespTimeout are both
_PURGE_BATCH = 100
_SCAN_BATCH = 200


def redis_client(url: str, *, op_timeout: float, connect_timeout: float) -> RespClient:
    """A client for ``redis://`` or ``rediss://`` (TLS) with bounded connects and reads, no retries."""
    return RespClient(url, connect_timeout=connect_timeout, read_timeout=op_timeout, name="sidecar-ledger")


class RedisStore(WaitsForSettling):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        instance_id: str,
        prefix: str = "sidecar:",
        ttl: float = 86400.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
        observer: StoreObserver = NULL_OBSERVER,
        new_id: Callable[[], str] = new_claim_id,
        poll: tuple[float, float] = (POLL_MIN, POLL_MAX),
        op_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        gate: ReconnectGate | None = None,
    ) -> None:
        self.url = url
        self.instance_id = instance_id
        self.prefix = prefix
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self.new_id = new_id
        self.poll = poll  # (first, longest) re-read interval while waiting: see ``waiting``
        self.op_timeout = op_timeout
        self.connect_timeout = connect_timeout
        self.gate = gate or ReconnectGate()
        self.evictions = 0
        self._ops = OperationTimer(self.backend, observer)
        self._waiters = Waiters()
        self._client: RespClient | None = None
        self._scripts: dict[str, Script] = {}
        self._rec = f"{prefix}r:"
        self._index = [f"{prefix}claims", f"{prefix}expiry", f"{prefix}seq"]

    @property
    def client(self) -> RespClient:
        if self._client is None:
            raise StoreUnavailable(self.backend, "store not started")
        return self._client

    async def start(self) -> None:
        """Build the client; no I/O, so a sidecar starts while Redis is still down."""
        if self._client is not None:
            return
        self._client = redis_client(
            self.url, op_timeout=self.op_timeout, connect_timeout=self.connect_timeout
        )
        self._scripts = {
            name: self._client.register_script(getattr(lua, name))
            for name in ("CLAIM", "COMPLETE", "MARK_UNKNOWN", "RELEASE", "ADOPT")
        }

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def claim(
        self, provider: str, key: str, fingerprint: str, *, ttl: float | None = None
    ) -> Claim:
        check_key(provider, key)
        now = self.clock()
        life = self.ttl if ttl is None else ttl
        record = LedgerRecord(
            provider, key, fingerprint, RecordState.IN_FLIGHT, self.instance_id, self.new_id(),
            claimed_at=now, sent_at=None, expires_at=now + life,
        )
        m = member(provider, key)
        args = [repr(now), m, self._rec, max(1, round(life * 1000)), self.max_entries, _PURGE_BATCH,
                repr(record.expires_at), *encode_claim(record)]
        won, fields, evicted = await self._call(
            "claim", lambda: self._scripts["CLAIM"](keys=[self._rec + m, *self._index], args=args)
        )
        self.evictions += int(evicted)
        if won:
            return Claim(True, record)
        existing = decode_record(dict(zip(fields[::2], fields[1::2], strict=True)), now)
        if existing is None:  # cannot happen: the script returns only a live record
            raise StoreUnavailable(self.backend, "claim returned no record")
        return Claim(False, existing)

    async def get(self, provider: str, key: str) -> LedgerRecord | None:
        check_key(provider, key)
        fields = await self._call("get", lambda: self.client.hgetall(self._rec + member(provider, key)))
        return decode_record(fields, self.clock())

    async def complete(
        self, provider: str, key: str, claim_id: str, response: StoredResponse, *,
        sent_at: float | None = None,
    ) -> bool:
        check_key(provider, key)
        args = [repr(self.clock()), claim_id, "" if sent_at is None else repr(sent_at), response.status,
                json.dumps(response.headers), "0" if response.body is None else "1",
                response.body or b"", "1" if response.body_too_large else "0"]
        rec = self._rec + member(provider, key)
        done = await self._call("complete", lambda: self._scripts["COMPLETE"](keys=[rec], args=args))
        return self._woke(provider, key, done)

    async def mark_unknown(
        self, provider: str, key: str, claim_id: str, *, sent_at: float | None = None
    ) -> bool:
        check_key(provider, key)
        args = [repr(self.clock()), claim_id, "" if sent_at is None else repr(sent_at)]
        rec = self._rec + member(provider, key)
        done = await self._call("mark_unknown", lambda: self._scripts["MARK_UNKNOWN"](keys=[rec], args=args))
        return self._woke(provider, key, done)

    async def release(self, provider: str, key: str, *, claim_id: str | None = None) -> bool:
        check_key(provider, key)
        m = member(provider, key)
        args = [repr(self.clock()), m, claim_id or ""]
        keys = [self._rec + m, *self._index[:2]]
        done = await self._call("release", lambda: self._scripts["RELEASE"](keys=keys, args=args))
        return self._woke(provider, key, done)

    async def list(self, provider: str | None = None, limit: int = 100) -> builtins.list[LedgerRecord]:
        return await self._call("list", lambda: self._list(provider, limit))

    async def adopt_orphans(self, instance_id: str) -> int:
        adopted = await self._call("adopt_orphans", lambda: self._adopt(instance_id))
        if adopted:
            self._waiters.wake_all()
        return adopted

    async def ping(self) -> None:
        await self._call("ping", lambda: self.client.ping())

    async def health(self) -> StoreHealth:
        try:
            entries = await self._call("health", lambda: self.client.zcard(self._index[0]))
        except StoreUnavailable as e:
            return StoreHealth(self.backend, False, None, self.evictions, e.detail)
        return StoreHealth(self.backend, True, int(entries), self.evictions)

    async def _list(self, provider: str | None, limit: int) -> builtins.list[LedgerRecord]:
        found: builtins.list[LedgerRecord] = []
        now, start = self.clock(), 0
        while len(found) < limit:
            members = await self.client.zrevrange(self._index[0], start, start + _SCAN_BATCH - 1)
            if not members:
                break
            start += len(members)
            rows = await asyncio.gather(  # pipelined: one connection, replies in order
                *(self.client.execute("HMGET", self._rec + as_text(m), *NO_BODY_FIELDS) for m in members)
            )
            for row in rows:
                record = decode_record(dict(zip(NO_BODY_FIELDS, row, strict=True)), now)
                if record is not None and (provider is None or record.provider == provider):
                    found.append(record)
        return found[:limit]

    async def _adopt(self, instance_id: str) -> int:
        adopted, start = 0, 0
        while True:
            members = await self.client.zrange(self._index[0], start, start + _SCAN_BATCH - 1)
            if not members:
                return adopted
            start += len(members)
            args = [repr(self.clock()), instance_id, self._rec, *members]
            adopted += int(await self._scripts["ADOPT"](keys=[], args=args))

    def _woke(self, provider: str, key: str, done: object) -> bool:
        if done:
            self._waiters.wake(provider, key)
        return bool(done)

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """One bounded operation: fail fast while reconnecting, map every Redis failure to ours."""
        with self._ops.op(op):
            wait = self.gate.admit()
            if wait is not None:
                raise StoreUnavailable(self.backend, f"reconnecting, next attempt in {wait:.2f}s")
            try:
                result = await call()  # bounded by the client: connect_timeout, then op_timeout
            except _CONNECTION_ERRORS as e:
                self.gate.failed()  # the client dropped the connection itself: the next call reconnects
                raise StoreUnavailable(self.backend, f"{type(e).__name__}: {e}") from e
            except ReplyError as e:
                self.gate.succeeded()  # it answered: the connection is fine, the command was not
                raise StoreUnavailable(self.backend, f"{type(e).__name__}: {e}") from e
            except BaseException:
                self.gate.abandoned()  # cancelled: no verdict on the connection
                raise
            self.gate.succeeded()
            return result
