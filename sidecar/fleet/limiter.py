"""The fleet limiter's backend: budgets, leases, pauses and AIMD shared by every sidecar on one Redis.

Each decision is made by a script (``limiter_scripts``), in a batch with the other decisions of the
same turn of the event loop, bounded by the client's timeouts; failures come out as
``FleetUnavailable`` (see ``FallbackLimiter`` for what happens then). A granted lease lives
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
import functools
import itertools
import secrets
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sidecar.fleet import limiter_scripts as lua
from sidecar.fleet.client import guarded, unavailable
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
from sidecar.state.resp import RespClient, Script

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


_MAX_BATCH = 64
"""Calls in one script run at most: a run holds the Redis, so its length stays bounded."""


class _Shape:
    """What every call of one provider with one set of scopes sends, worked out once."""

    __slots__ = ("acquire_args", "acquire_keys", "lease_keys", "own", "release_keys", "scopes")

    def __init__(self, keys: FleetKeys, provider: str, scopes: Sequence[Scope]) -> None:
        self.scopes = scopes  # held, so the id this shape is cached under stays this object's
        self.acquire_keys = [keys.pause(provider), keys.aimd(provider)]
        self.acquire_args: list[int] = []
        for scope in scopes:
            self.acquire_keys += [keys.tat(provider, scope.name), keys.leases(provider, scope.name)]
            gcra = scope.gcra
            self.acquire_args += [
                gcra.interval if gcra else 0,
                gcra.tolerance if gcra else 0,
                scope.concurrency or 0,
                1 if scope.name == PROVIDER_SCOPE else 0,
            ]
        self.lease_keys = [keys.leases(provider, s.name) for s in scopes]
        own = next((s for s in scopes if s.name == PROVIDER_SCOPE), None)
        ordered = ([own] if own else []) + [s for s in scopes if s is not own]
        self.release_keys = [keys.aimd(provider)] + [keys.leases(provider, s.name) for s in ordered]
        # (provider scope present, its configured concurrency): the tail of a release's arguments
        self.own = (1, own.concurrency or 0) if own else (0, 0)


class _Call:
    """One call waiting for its loop turn's script run; ``grant`` is set for an acquisition.
    ``future`` is None for a give-back nobody waits for (a failure is logged for it)."""

    __slots__ = ("args", "future", "grant", "keys")

    def __init__(
        self, future: asyncio.Future[Any] | None, keys: list[str], args: list[Any],
        grant: tuple[str, _Shape, str] | None,
    ) -> None:
        self.future = future
        self.keys = keys
        self.args = args
        self.grant = grant  # (provider, shape, lease id): to give back a slot granted to no one


class _FleetLease:
    """A granted slot: renewed in the background until released."""

    __slots__ = ("_backend", "admitted_at", "lease_id", "provider", "shape", "wait")

    def __init__(
        self, backend: RedisBackend, provider: str, shape: _Shape, lease_id: str, wait: float,
        admitted_at: int,
    ) -> None:
        self._backend = backend
        self.provider = provider
        self.shape = shape
        self.lease_id = lease_id
        self.wait = wait
        self.admitted_at = admitted_at

    def start_renewing(self) -> None:
        self._backend.hold(self.lease_id, self.shape.lease_keys)

    async def release(self, completion: Completion) -> None:
        try:
            await self._backend.release(self, completion)
        except FleetUnavailable as error:
            self._backend.not_released(self.provider, error)

    def release_soon(self, completion: Completion) -> None:
        self._backend.release_soon(self, completion)


class RedisBackend:
    """A ``Backend`` on Redis; the client is the caller's (shared, closed by its owner).

    Calls are not sent one by one: those of one turn of the event loop are queued and go as one
    script run per provider (at most ``_MAX_BATCH`` calls each) once the turn ends, releases
    before acquisitions. On a busy sidecar that is several calls per round trip, and their
    decisions are those separate runs would make one after the other at the same moment.
    """

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
        self._lease_ttl_us = micros(lease_ttl)
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
        self._shapes: dict[tuple[str, int], _Shape] = {}
        # Lease ids: random per sidecar, then a count (unique fleet-wide without a syscall each).
        self._lease_prefix = secrets.token_hex(8) + ":"
        self._lease_count = itertools.count()
        self._acquires: dict[str, list[_Call]] = {}  # by provider, this turn of the loop
        self._releases: dict[str, list[_Call]] = {}
        self._flush_due = False
        self._runs: set[asyncio.Future[Any]] = set()
        self.log = get_logger("limits")

    @property
    def poll_interval(self) -> float | None:
        return self._poll_interval

    async def try_acquire(
        self, provider: str, scopes: Sequence[Scope], max_wait: float
    ) -> _FleetLease | Blocked:
        shape = self._shape(provider, scopes)
        lease_id = f"{self._lease_prefix}{next(self._lease_count):x}"
        args = [lease_id, self._lease_ttl_us, micros(max(0.0, max_wait)), *shape.acquire_args]
        grant = (provider, shape, lease_id)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(self._acquires, provider, _Call(answer, shape.acquire_keys, args, grant))
        try:
            status, index, amount, now = await answer
        except CancelledError:
            # Cancelled while queued: never sent; while Redis decides: a slot granted to nobody is
            # given back when the answer comes (``_answered``); just after it came: here.
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                self._give_back_unclaimed(grant, answer.result())
            raise
        if status == lua.GRANTED:
            lease = _FleetLease(self, provider, shape, lease_id, seconds(amount), now)
            lease.start_renewing()
            return lease
        if status == lua.PAUSED:
            return Blocked(Reason.PROVIDER_PAUSE, seconds(amount))
        scope = scopes[index - 1].name if index else None
        if status == lua.FULL:
            return Blocked(Reason.CONCURRENCY, CONCURRENCY_RETRY_AFTER, scope)
        return Blocked(Reason.RATE, seconds(amount), scope)

    def release(self, lease: _FleetLease, completion: Completion) -> asyncio.Future[Any]:
        """Stop renewing ``lease`` and queue its release with the loop turn's others; the future
        is Redis's answer."""
        future = asyncio.get_running_loop().create_future()
        self._queue_release(lease, completion, future)
        return future

    def release_soon(self, lease: _FleetLease, completion: Completion) -> None:
        """``release`` that nobody waits for: no future, a failure is logged."""
        self._queue_release(lease, completion, None)

    def _queue_release(
        self, lease: _FleetLease, completion: Completion, future: asyncio.Future[Any] | None
    ) -> None:
        self._held.pop(lease.lease_id, None)
        shape = lease.shape
        args = [lease.lease_id, completion.value, lease.admitted_at, *shape.own]
        self._queue(self._releases, lease.provider, _Call(future, shape.release_keys, args, None))

    def _release_failed(self, provider: str, error: BaseException) -> None:
        """A give-back nobody waited for failed: the lease will expire; say so."""
        if isinstance(error, FleetUnavailable):
            self.not_released(provider, error)
        else:
            self.log.error("fleet_lease_release_failed", provider=provider, error=repr(error))

    def not_released(self, provider: str, error: FleetUnavailable) -> None:
        self.log.warning(
            "fleet_lease_not_released", provider=provider, error=str(error), expires_in=self.lease_ttl
        )

    def _shape(self, provider: str, scopes: Sequence[Scope]) -> _Shape:
        key = (provider, id(scopes))  # the shape holds ``scopes``: no other object has its id meanwhile
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= 1024:  # callers pass their routes' fixed tuples: never, in use
                self._shapes.clear()
            shape = self._shapes[key] = _Shape(self.keys, provider, scopes)
        return shape

    def _queue(self, pending: dict[str, list[_Call]], provider: str, call: _Call) -> None:
        calls = pending.get(provider)
        if calls is None:
            calls = pending[provider] = []
        calls.append(call)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        releases, self._releases = self._releases, {}
        acquires, self._acquires = self._acquires, {}
        for script, pending, what in (
            (self._release, releases, "release"), (self._acquire, acquires, "acquire")
        ):
            for provider, calls in pending.items():
                if script is self._acquire:  # a release goes even when its caller stopped waiting
                    calls = [call for call in calls if not _cancelled(call)]
                for first in range(0, len(calls), _MAX_BATCH):
                    self._run(script, calls[first:first + _MAX_BATCH], what, provider)

    def _run(self, script: Script, calls: list[_Call], what: str, provider: str) -> None:
        keys: list[str] = []
        args: list[Any] = []
        for call in calls:
            keys += call.keys
            args += [len(call.keys), len(call.args), *call.args]
        run = asyncio.ensure_future(script(keys, args))
        self._runs.add(run)
        run.add_done_callback(functools.partial(self._answered, calls, what, provider))

    def _answered(
        self, calls: list[_Call], what: str, provider: str, run: asyncio.Future[list[Any]]
    ) -> None:
        self._runs.discard(run)
        try:
            error = CancelledError() if run.cancelled() else run.exception()
            if error is not None:
                for call in calls:  # each its own exception: each caller's traceback grows on it
                    if call.future is None:  # a give-back nobody waits for
                        self._release_failed(provider, unavailable(error, what))
                    elif not call.future.done():
                        call.future.set_exception(unavailable(error, what))
                return
            for call, reply in zip(calls, run.result(), strict=True):
                if call.future is None:
                    continue
                if not call.future.done():
                    call.future.set_result(reply)
                elif call.grant is not None:
                    self._give_back_unclaimed(call.grant, reply)
        except Exception as bug:  # a reply of the wrong shape: nobody may be left waiting
            self.log.error("fleet_reply_not_understood", what=what, error=repr(bug))
            for call in calls:
                if call.future is not None and not call.future.done():
                    call.future.set_exception(bug)

    def _give_back_unclaimed(self, grant: tuple[str, _Shape, str], reply: list[int]) -> None:
        """A slot granted to a caller that has gone: give it back rather than let it expire."""
        if reply[0] != lua.GRANTED:
            return
        provider, shape, lease_id = grant
        lease = _FleetLease(self, provider, shape, lease_id, 0.0, reply[3])
        task = asyncio.ensure_future(lease.release(Completion.ABANDONED))
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    def hold(self, lease_id: str, keys: list[str]) -> None:
        """Keep ``lease_id`` renewed until it is released."""
        self._held[lease_id] = keys
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held(), name="sidecar-fleet-lease-renewal")

    async def _renew_held(self) -> None:
        """Every third of ``lease_ttl``, push out the expiry of every lease still held; ends once none is."""
        while self._held:
            await self._sleep(self.lease_ttl / 3)
            ttl = self._lease_ttl_us
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
        """Send what is queued and wait for every answer (give-backs included), then stop renewing
        (leases still held expire on their own); the client is not closed here."""
        while True:
            if self._acquires or self._releases:
                self._flush()
            pending = [*self._runs, *self._orphans]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def _guard(self, operation: Awaitable[Any], what: str) -> Any:
        return await guarded(operation, what=what)


def _cancelled(call: _Call) -> bool:
    return call.future is not None and call.future.cancelled()


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
