"""The fleet limiter's backend: budgets, leases, pauses and AIMD shared by every sidecar on one Redis.

Each decision is one script call (``limiter_scripts``), bounded by the client's timeouts; failures come out
as ``FleetUnavailable`` (see ``FallbackLimiter`` for what happens then). A granted lease lives
``lease_ttl`` seconds in Redis and is renewed every third of that while its call runs, so a long
call keeps its slot and a killed sidecar's slots come back within ``lease_ttl``. One task per
sidecar renews every lease held at its tick (most calls end long before one), rather than a task
per call.

Waiting callers are queued per sidecar (``QueuedLimiter``); across sidecars, whoever asks first
after a slot frees gets it (each line polls every ``poll_interval`` while blocked on concurrency).
Rate bookings are made in Redis, so they are served fleet-wide in the order they were booked.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sidecar.fleet import limiter_scripts as lua
from sidecar.fleet.client import guarded
from sidecar.fleet.keys import FleetKeys
from sidecar.limits.api import Completion, FleetUnavailable
from sidecar.limits.queue import QueuedLimiter
from sidecar.logs import get_logger
from sidecar.policy.admission import (
    CONCURRENCY_RETRY_AFTER,
    PROVIDER_SCOPE,
    Blocked,
    Reason,
    Scope,
)
from sidecar.policy.gcra import micros, seconds
from sidecar.state.resp import RespClient

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_POLL_INTERVAL",
    "RedisBackend",
    "fleet_limiter",
]

DEFAULT_LEASE_TTL = 30.0
"""Seconds a slot outlives a sidecar that vanished without giving it back."""
DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between looks while blocked on concurrency (other sidecars' releases are not pushed)."""


class _FleetLease:
    """A granted slot: renewed in the background until released."""

    __slots__ = ("_backend", "_keys", "_provider", "_scopes", "admitted_at", "lease_id", "wait")

    def __init__(
        self, backend: RedisBackend, provider: str, scopes: Sequence[Scope], lease_id: str,
        wait: float, admitted_at: int,
    ) -> None:
        self._backend = backend
        self._provider = provider
        self._scopes = scopes
        self._keys = [backend.keys.leases(provider, s.name) for s in scopes]
        self.lease_id = lease_id
        self.wait = wait
        self.admitted_at = admitted_at

    def start_renewing(self) -> None:
        self._backend.hold(self.lease_id, self._keys)

    async def release(self, completion: Completion) -> None:
        self._backend.let_go(self.lease_id)
        try:
            await self._backend.release(self._provider, self._scopes, self, completion)
        except FleetUnavailable as error:
            self._backend.log.warning(
                "fleet_lease_not_released", provider=self._provider, error=str(error),
                expires_in=self._backend.lease_ttl,
            )


class RedisBackend:
    """A ``Backend`` on Redis; the client is the caller's (shared, closed by its owner)."""

    def __init__(
        self,
        redis: RespClient,
        *,
        keys: FleetKeys | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.redis = redis
        self.keys = keys or FleetKeys()
        self.lease_ttl = lease_ttl
        self._poll_interval = poll_interval
        self._sleep = sleep
        self._acquire = redis.register_script(lua.ACQUIRE)
        self._release = redis.register_script(lua.RELEASE)
        self._renew = redis.register_script(lua.RENEW)
        self._pause = redis.register_script(lua.PAUSE)
        self._paused_for = redis.register_script(lua.PAUSED_FOR)
        self._usage = redis.register_script(lua.USAGE)
        self._held: dict[str, list[str]] = {}  # lease id -> its lease sets, while its call runs
        self._renewer: asyncio.Task[None] | None = None
        self._orphans: set[asyncio.Task[Any]] = set()
        self.log = get_logger("limits")

    @property
    def poll_interval(self) -> float | None:
        return self._poll_interval

    async def try_acquire(
        self, provider: str, scopes: Sequence[Scope], max_wait: float
    ) -> _FleetLease | Blocked:
        lease_id = secrets.token_hex(8)
        keys = [self.keys.pause(provider), self.keys.aimd(provider)]
        args: list[Any] = [lease_id, micros(self.lease_ttl), micros(max(0.0, max_wait))]
        for scope in scopes:
            keys += [self.keys.tat(provider, scope.name), self.keys.leases(provider, scope.name)]
            gcra = scope.gcra
            args += [
                gcra.interval if gcra else 0,
                gcra.tolerance if gcra else 0,
                scope.concurrency or 0,
                1 if scope.name == PROVIDER_SCOPE else 0,
            ]
        call = asyncio.ensure_future(self._guard(self._acquire(keys, args), "acquire"))
        try:
            reply = await asyncio.shield(call)
        except asyncio.CancelledError:
            # The script may still grant a slot nobody will use: give it back when it answers.
            call.add_done_callback(lambda done: self._release_orphan(done, provider, scopes, lease_id))
            raise
        return self._answer(reply, provider, scopes, lease_id)

    def _answer(
        self, reply: list[int], provider: str, scopes: Sequence[Scope], lease_id: str
    ) -> _FleetLease | Blocked:
        status, index, amount, now = (int(x) for x in reply)
        scope = scopes[index - 1].name if index else None
        if status == lua.PAUSED:
            return Blocked(Reason.PROVIDER_PAUSE, seconds(amount))
        if status == lua.FULL:
            return Blocked(Reason.CONCURRENCY, CONCURRENCY_RETRY_AFTER, scope)
        if status == lua.RATE:
            return Blocked(Reason.RATE, seconds(amount), scope)
        lease = _FleetLease(self, provider, scopes, lease_id, seconds(amount), now)
        lease.start_renewing()
        return lease

    def _release_orphan(
        self, done: asyncio.Future[list[int]], provider: str, scopes: Sequence[Scope], lease_id: str
    ) -> None:
        if done.cancelled() or done.exception() is not None or int(done.result()[0]) != lua.GRANTED:
            return
        lease = _FleetLease(self, provider, scopes, lease_id, 0.0, int(done.result()[3]))
        task = asyncio.ensure_future(lease.release(Completion.ABANDONED))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    async def release(
        self, provider: str, scopes: Sequence[Scope], lease: _FleetLease, completion: Completion
    ) -> None:
        own = next((s for s in scopes if s.name == PROVIDER_SCOPE), None)
        ordered = ([own] if own else []) + [s for s in scopes if s is not own]
        keys = [self.keys.aimd(provider)] + [self.keys.leases(provider, s.name) for s in ordered]
        args = [
            lease.lease_id, completion.value, lease.admitted_at, 1 if own else 0,
            (own.concurrency or 0) if own else 0,
        ]
        await self._guard(self._release(keys, args), "release")

    def hold(self, lease_id: str, keys: list[str]) -> None:
        """Keep ``lease_id`` renewed until it is let go."""
        self._held[lease_id] = keys
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held(), name="sidecar-fleet-lease-renewal")

    def let_go(self, lease_id: str) -> None:
        self._held.pop(lease_id, None)

    async def _renew_held(self) -> None:
        """Every third of ``lease_ttl``, push out the expiry of every lease still held; ends once none is."""
        while self._held:
            await self._sleep(self.lease_ttl / 3)
            ttl = micros(self.lease_ttl)
            results = await asyncio.gather(
                *(self._guard(self._renew(keys, [lease_id, ttl]), "renew") for lease_id, keys in
                  list(self._held.items())),
                return_exceptions=True,
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                self.log.warning("fleet_lease_not_renewed", leases=len(failed), error=str(failed[0]))

    async def pause(self, provider: str, seconds_: float) -> float:
        left = await self._guard(
            self._pause([self.keys.pause(provider)], [micros(max(0.0, seconds_))]), "pause"
        )
        return seconds(int(left))

    async def paused_for(self, provider: str) -> float:
        left = await self._guard(self._paused_for([self.keys.pause(provider)], []), "paused_for")
        return seconds(int(left))

    async def lowered_limit(self, provider: str) -> int | None:
        """The AIMD limit in force in Redis for ``provider`` (None: not lowered), for inspection."""
        value = await self._guard(self.redis.hget(self.keys.aimd(provider), "limit"), "aimd")
        return None if value is None else int(value)

    async def usage(self, provider: str, scope: Scope) -> tuple[int, float]:
        """(slots held fleet-wide, seconds until a start would be allowed) of one budget."""
        keys = [self.keys.tat(provider, scope.name), self.keys.leases(provider, scope.name)]
        gcra = scope.gcra
        args = [gcra.tolerance if gcra else 0, 1 if gcra else 0]
        held, wait = await self._guard(self._usage(keys, args), "usage")
        return int(held), seconds(int(wait))

    async def ping(self) -> None:
        """Raise ``FleetUnavailable`` unless Redis answers within the timeout."""
        await self._guard(self.redis.ping(), "ping")

    async def aclose(self) -> None:
        """Stop renewing (leases still held expire on their own); the client is not closed here."""
        tasks = [*self._orphans]
        if self._renewer is not None:
            self._renewer.cancel()
            tasks.append(self._renewer)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, operation: Awaitable[Any], what: str) -> Any:
        return await guarded(operation, what=what)


def fleet_limiter(
    redis: RespClient,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    prefix: str | None = None,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> QueuedLimiter:
    """The limiter whose budgets the whole fleet shares (``clock``: monotonic, for the waits)."""
    keys = FleetKeys() if prefix is None else FleetKeys(prefix)
    backend = RedisBackend(
        redis, keys=keys, lease_ttl=lease_ttl, poll_interval=poll_interval, sleep=sleep
    )
    return QueuedLimiter(backend, clock=clock, sleep=sleep)
