"""The fleet limiter's backend: budgets, leases, pauses and AIMD shared by every sidecar on one Redis.

Each decision is made by a script (``limiter_scripts``), in a batch with the other decisions of the
same turn of the event loop, bounded by the client's timeouts; failures come out as
``FleetUnavailable`` (see ``FallbackLimiter`` for what happens then). A granted lease lives
``lease_ttl`` seconds in Redis and is renewed every third of that while its call runs, so a long
call keeps its slot and a killed sidecar's slots come back within ``lease_ttl``. One task per
sidecar renews every lease held at its tick (most calls end long before one), rather than a task
per call, and the leases of one set of budgets go in one script run.

Waiting callers are queued per sidecar (``QueuedLimiter``); across sidecars, whoever asks first
after a slot frees gets it (each line polls every ``poll_interval`` while blocked on concurrency).
Rate bookings are made in Redis, so they are served fleet-wide in the order they were booked.

Shares: far from every limit, one script run books a call's place and up to ``share_size`` more
(rate tokens and concurrency leases, in Redis like any other), and this sidecar admits its next
calls from them in memory, with no round trip. A share is granted only while each of its budgets
stays under half used once it is booked, the provider is neither paused nor lowered, and no call
has to wait. It lives at most ``share_ttl``, less when its rate's burst is small: its tokens are
booked as if used at the end of its life, the latest they may be, so a late use never adds to a
burst; then its unused places are given back. A pause or a lowering made by any sidecar is
published, and drops every share of that provider at once (``Notices``), including one whose
grant is still on its way back; while that subscription is down, no share is used. A slot from a
share goes back to the share when its call ends, until the share ends. Half used, a share asks for
the next one in the background, which waits its turn (``_Shape.after``): a busy sidecar's calls do
not wait for a round trip each time a share runs out.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import secrets
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sidecar.fleet import limiter_scripts as lua
from sidecar.fleet.client import guarded, unavailable
from sidecar.fleet.keys import FleetKeys
from sidecar.fleet.notices import Notices
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
    "SHARE_SIZE",
    "SHARE_TTL",
    "RedisBackend",
    "fleet_limiter",
]

DEFAULT_LEASE_TTL = 30.0
"""Seconds a slot outlives a sidecar that vanished without giving it back."""
DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between looks while blocked on concurrency (other sidecars' releases are not pushed)."""


SHARE_SIZE = 256
"""Places a share holds at most, besides its call's own."""
SHARE_TTL = 1.0
"""Seconds a share lives at most: a pause another sidecar sets ends it sooner (it is published)."""

_FIRST_SHARE = 8
"""Places of a shape's first share: later ones follow what the last one was used for."""

_MAX_BATCH = 64
"""Calls in one script run at most: a run holds the Redis, so its length stays bounded."""

_MAX_MERGED = 128
"""Lease ids one give-back call carries at most (a turn's give-backs of one shape, merged)."""

_MAX_RENEWED = 1000
"""Lease ids one renewal run carries at most (a run holds the Redis, so its length stays bounded)."""

_WIRE = {completion: completion.value for completion in Completion}  # read once a give-back


class _Shape:
    """What every call of one provider with one set of scopes sends, worked out once."""

    __slots__ = (
        "acquire_args", "acquire_keys", "after", "asking", "lease_keys", "own", "provider",
        "release_keys", "scopes", "share", "share_cap", "want",
    )

    def __init__(
        self, keys: FleetKeys, provider: str, scopes: Sequence[Scope], share_size: int, share_ttl: float
    ) -> None:
        self.provider = provider
        self.scopes = scopes  # held, so the id this shape is cached under stays this object's
        self.share: _Share | None = None  # the share its calls are admitted from, while one lives
        self.after: _Share | None = None  # the next one, asked for ahead: used once that one is spent
        self.asking: asyncio.Future[None] | None = None  # done when the share asked for has come
        # A share never holds more than its rates earn while it lives (below 2 places: none)
        rates = [s.gcra.interval for s in scopes if s.gcra]
        cap = min([share_size, *(math.floor(micros(share_ttl) / i) for i in rates)])
        self.share_cap = cap if cap >= 2 else 0
        # The next share's size: twice what the last one was used for, so a slow caller does not
        # book (and give back) 256 places for the two it uses before its share ends.
        self.want = min(self.share_cap, _FIRST_SHARE)
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


class _Share:
    """Places booked ahead in Redis for this sidecar's next calls of one shape, until ``ends``
    (loop time)."""

    __slots__ = ("admitted_at", "ends", "ids", "shape", "size", "timer", "tokens")

    def __init__(self, shape: _Shape, ids: list[str], admitted_at: int, ends: float) -> None:
        self.shape = shape
        self.ids = ids  # leases free for a call
        self.size = self.tokens = len(ids)  # calls it may admit, still
        self.admitted_at = admitted_at
        self.ends = ends
        self.timer: asyncio.TimerHandle | None = None


class _Call:
    """One call waiting for its loop turn's script run; ``grant`` is set for an acquisition.
    ``future`` is None for a give-back nobody waits for (a failure is logged for it); such a
    give-back carries ``leases`` lease ids (the turn's others of its shape join it)."""

    __slots__ = ("args", "future", "grant", "keys", "leases")

    def __init__(
        self, future: asyncio.Future[Any] | None, keys: list[str], args: list[Any],
        grant: tuple[str, _Shape, str] | None,
    ) -> None:
        self.future = future
        self.keys = keys
        self.args = args
        self.grant = grant  # (provider, shape, lease id): to give back a slot granted to no one
        self.leases = 1


class _FleetLease:
    """A granted slot: renewed in the background until released."""

    __slots__ = ("_backend", "admitted_at", "lease_id", "provider", "shape", "share", "wait")

    def __init__(
        self, backend: RedisBackend, provider: str, shape: _Shape, lease_id: str, wait: float,
        admitted_at: int, share: _Share | None = None,
    ) -> None:
        self._backend = backend
        self.provider = provider
        self.shape = shape
        self.lease_id = lease_id
        self.wait = wait
        self.admitted_at = admitted_at
        self.share = share  # the share it came from: its slot goes back there

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
        share_size: int = SHARE_SIZE,
        share_ttl: float = SHARE_TTL,
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
        self._shapes: dict[tuple[str, int], _Shape] = {}
        # Lease ids: random per sidecar, then a count (unique fleet-wide without a syscall each).
        self._lease_prefix = secrets.token_hex(8) + ":"
        self._lease_count = itertools.count()
        self._acquires: dict[str, list[_Call]] = {}  # by provider, this turn of the loop
        self._releases: dict[str, list[_Call]] = {}
        # This turn's give-back nobody waits for, by shape and completion ('ok' or 'abandoned'):
        # the turn's others join it (a share ends with dozens; one call, not one each)
        self._merged: dict[tuple[_Shape, Completion], _Call] = {}
        self._flush_due = False
        self._runs: set[asyncio.Future[Any]] = set()
        self._share_size = share_size
        self._share_ttl = share_ttl
        self._share_ttl_us = micros(share_ttl)
        self._shares: set[_Share] = set()  # the shares alive: retiring one takes it out
        self._chores: set[asyncio.Future[None]] = set()  # shares asked for ahead, waiting give-backs
        self._notices: Notices | None = None  # started with the first call
        # Notices heard, by key, and losses of the subscription: a share whose grant crossed one
        # on its way back is ended at once.
        self._noticed: dict[str, int] = {}
        self._downs = 0
        self.log = get_logger("limits")

    @property
    def poll_interval(self) -> float | None:
        return self._poll_interval

    @property
    def hearing_notices(self) -> bool:
        """Whether other sidecars' pauses and lowerings are heard at once (shares can be used)."""
        return self._notices is not None and self._notices.live

    def lease_at_once(self, provider: str, scopes: Sequence[Scope]) -> _FleetLease | None:
        """A place from this sidecar's share, decided in memory; None when there is none left."""
        return self._from_share(self._shape(provider, scopes))

    def _from_share(self, shape: _Shape) -> _FleetLease | None:
        share = shape.share
        if share is None or not share.tokens or not share.ids:
            share = shape.after
            if share is None:
                return None
            shape.share, shape.after = share, None  # the one asked for ahead takes over
            if not share.tokens or not share.ids:
                return None
        if asyncio.get_running_loop().time() >= share.ends:  # its timer has not run yet
            self._retire(share)
            return self._from_share(shape) if shape.share is not None else None
        share.tokens -= 1
        if share.tokens <= share.size // 2 and shape.asking is None and shape.after is None:
            self._ask_ahead(shape, share.size)
        return _FleetLease(
            self, shape.provider, shape, share.ids.pop(), 0.0, share.admitted_at, share
        )

    async def try_acquire(
        self, provider: str, scopes: Sequence[Scope], max_wait: float
    ) -> _FleetLease | Blocked:
        shape = self._shape(provider, scopes)
        from_share = self._from_share(shape)
        if from_share is not None:
            return from_share
        if shape.asking is not None:  # a share is on its way: wait for it rather than ask Redis too
            await asyncio.shield(shape.asking)
            from_share = self._from_share(shape)
            if from_share is not None:
                return from_share
        return await self._decide(shape, self._share_wanted(shape), max_wait)

    async def _decide(
        self, shape: _Shape, want: int, max_wait: float, mark: tuple[int, int, int] | None = None
    ) -> _FleetLease | Blocked:
        """Redis decides one call (and books ``want`` places more for a share, when it may).
        ``mark``: what had been heard when the share was wanted (default: now)."""
        provider, scopes = shape.provider, shape.scopes
        lease_id = f"{self._lease_prefix}{next(self._lease_count):x}"
        args = [
            lease_id, self._lease_ttl_us, micros(max(0.0, max_wait)), *shape.acquire_args, want,
            self._share_ttl_us,
        ]
        grant = (provider, shape, lease_id)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        sent_at = loop.time()  # before Redis decides: the share's clock
        if mark is None:
            mark = self._mark(shape)
        self._queue(self._acquires, provider, _Call(answer, shape.acquire_keys, args, grant))
        try:
            status, index, amount, now, shared, life = await answer
        except CancelledError:
            # Cancelled while queued: never sent; while Redis decides: a slot granted to nobody is
            # given back when the answer comes (``_answered``); just after it came: here.
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                self._give_back_unclaimed(grant, answer.result())
            raise
        except FleetUnavailable:
            # The script may have run and its answer been lost: give back what it may have booked
            # (a place that was never booked is no harm); if Redis can't take it, the leases expire.
            self._give_back_grant(provider, shape, lease_id, want, 0)
            raise
        finally:
            if want and shape.asking is not None:
                shape.asking.set_result(None)
                shape.asking = None
        if status == lua.GRANTED:
            # booked with a share, the call's place goes back to it too when the call ends
            share = None
            if shared:
                ends = sent_at + seconds(life)
                share = self._open_share(shape, lease_id, shared, now, ends, mark)
            lease = _FleetLease(self, provider, shape, lease_id, seconds(amount), now, share)
            lease.start_renewing()
            return lease
        if status == lua.PAUSED:
            return Blocked(Reason.PROVIDER_PAUSE, seconds(amount))
        scope = scopes[index - 1].name if index else None
        if status == lua.FULL:
            return Blocked(Reason.CONCURRENCY, CONCURRENCY_RETRY_AFTER, scope)
        return Blocked(Reason.RATE, seconds(amount), scope)

    async def _give_back_after(
        self, coming: list[asyncio.Future[None]], lease: _FleetLease, completion: Completion,
        future: asyncio.Future[Any] | None,
    ) -> None:
        await asyncio.wait(coming)  # not cancelled here: their askers are waiting for them too
        self._give_back(lease.provider, lease.shape, lease.lease_id, completion, lease.admitted_at, future)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; ``aclose`` ends it before the last give-backs go."""
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    def _ask_ahead(self, shape: _Shape, size: int) -> None:
        """A share half used: the next one is asked for now, twice as large, and waits its turn,
        so the calls after this one find places instead of waiting for a round trip."""
        shape.want = min(shape.share_cap, 2 * size)
        want = self._share_wanted(shape)
        if not want:
            return
        # marked now: a pause or a lowering heard before the task runs ends the share it brings
        self._later(self._refill(shape, want, self._mark(shape)))

    async def _refill(self, shape: _Shape, want: int, mark: tuple[int, int, int]) -> None:
        """Ask Redis for a share with no call of its own: the place booked for the asking call
        joins the share (or goes back when there is none)."""
        try:
            lease = await self._decide(shape, want, 0.0, mark)
        except FleetUnavailable:
            return  # what it may have booked is given back; callers will ask Redis themselves
        if isinstance(lease, Blocked):
            return
        share = lease.share
        if share is not None and share in self._shares:
            share.ids.append(lease.lease_id)
            share.size += 1
            share.tokens += 1
        else:  # no share came with it (or it was ended on arrival): a place nobody will use
            self._give_back_grant(shape.provider, shape, lease.lease_id, 0, lease.admitted_at)

    def _share_wanted(self, shape: _Shape) -> int:
        """The places to ask a share of with this call (0: none); marks the shape as asking.
        The notices are started with the first call that could take a share."""
        if not shape.share_cap or shape.asking is not None:
            return 0
        notices = self._notices
        if notices is None:
            notices = self._notices = Notices(
                self.redis.url, self.keys.notices(), timeout=self.redis.read_timeout,
                on_notice=self._heard, on_down=self._notices_down,
            )
            notices.start()
        if not notices.live:
            return 0
        shape.asking = asyncio.get_running_loop().create_future()
        return shape.want

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
        share = lease.share
        if completion is Completion.CONCURRENCY_LIMITED:
            # The provider says it is full: ask Redis from now on, and let the lowering count only
            # the calls in flight. This sidecar's unused places are given back first, those of a
            # share still on its way too: it is ended on arrival (as if the lowering's notice had
            # crossed it), and the lowering waits for it.
            self._heard(self.keys.aimd(lease.provider))
            coming = [
                shape.asking for shape in self._shapes.values()
                if shape.provider == lease.provider and shape.asking is not None
            ]
            if coming:
                self._later(self._give_back_after(coming, lease, completion, future))
                return
        elif share is not None and share in self._shares:
            share.ids.append(lease.lease_id)  # still booked in Redis: the next call's
            if future is not None:
                future.set_result(0)
            return
        self._give_back(lease.provider, lease.shape, lease.lease_id, completion, lease.admitted_at, future)

    def _give_back(
        self, provider: str, shape: _Shape, lease_id: str, completion: Completion, admitted_at: int,
        future: asyncio.Future[Any] | None,
    ) -> None:
        concurrency = completion is Completion.CONCURRENCY_LIMITED
        if future is None and not concurrency:
            self._give_back_unheard(shape, [lease_id], completion, admitted_at)
            return
        self._held.pop(lease_id, None)
        args: list[Any] = [lease_id, _WIRE[completion], admitted_at, *shape.own]
        if concurrency:
            args.append(self.keys.notices())  # a lowering is announced: shares of it end
        self._queue(self._releases, provider, _Call(future, shape.release_keys, args, None))

    def _give_back_unheard(
        self, shape: _Shape, lease_ids: list[str], completion: Completion, admitted_at: int
    ) -> None:
        """Give-backs nobody waits for ('ok' or 'abandoned'): they join this turn's call of their
        shape and ending (``_MAX_MERGED`` ids a call), so a share's end is a call, not one a place."""
        held = self._held
        key = (shape, completion)
        merged = self._merged.get(key)
        for lease_id in lease_ids:
            held.pop(lease_id, None)
            if merged is not None and merged.leases < _MAX_MERGED:
                merged.args.append(lease_id)
                merged.leases += 1
                continue
            args: list[Any] = [lease_id, _WIRE[completion], admitted_at, *shape.own]
            merged = self._merged[key] = _Call(None, shape.release_keys, args, None)
            self._queue(self._releases, shape.provider, merged)

    def _mark(self, shape: _Shape) -> tuple[int, int, int]:
        """What has been heard so far that would end a share of ``shape``."""
        noticed = self._noticed
        keys = shape.acquire_keys
        return noticed.get(keys[0], 0), noticed.get(keys[1], 0), self._downs

    def _open_share(
        self, shape: _Shape, lease_id: str, size: int, admitted_at: int, ends: float,
        mark: tuple[int, int, int],
    ) -> _Share:
        ids = [f"{lease_id}.{j}" for j in range(size, 0, -1)]
        for id_ in ids:
            self._held[id_] = shape.lease_keys
        share = _Share(shape, ids, admitted_at, ends)
        current = shape.share
        if current is not None and current.tokens and current.ids and current in self._shares:
            # asked for ahead: it waits its turn while the one in use still has places
            if shape.after is not None:
                self._retire(shape.after)
            shape.after = share
        else:
            if current is not None:
                self._retire(current)
            shape.share = share
        self._shares.add(share)
        notices = self._notices
        if notices is None or not notices.live or self._mark(shape) != mark:
            # a pause, a lowering or a lost subscription crossed the grant on its way back
            self._retire(share)
        else:
            share.timer = asyncio.get_running_loop().call_at(ends, self._retire, share)
        return share

    def _retire(self, share: _Share) -> None:
        """End ``share``: its unused places go back to Redis, those in use when their calls end."""
        if share not in self._shares:
            return
        self._shares.remove(share)
        shape = share.shape
        shape.want = min(shape.share_cap, max(2, 2 * (share.size - share.tokens)))
        share.tokens = 0
        if share.timer is not None:
            share.timer.cancel()
        if shape.after is share:
            shape.after = None
        if shape.share is share:
            shape.share, shape.after = shape.after, None  # the one asked for ahead, if any
        ids, share.ids = share.ids, []
        self._give_back_unheard(shape, ids, Completion.ABANDONED, share.admitted_at)

    def _retire_all(self) -> None:
        for share in list(self._shares):
            self._retire(share)

    def _notices_down(self) -> None:
        self._downs += 1
        self._retire_all()

    def _heard(self, key: str) -> None:
        """A pause or a lowering of the provider whose key this is: its shares end."""
        self._noticed[key] = self._noticed.get(key, 0) + 1
        for share in list(self._shares):
            keys = share.shape.acquire_keys
            if key == keys[0] or key == keys[1]:
                self._retire(share)

    def _release_failed(self, provider: str, error: BaseException, leases: int) -> None:
        """Give-backs nobody waited for failed: the leases will expire; say so."""
        if isinstance(error, FleetUnavailable):
            self.not_released(provider, error, leases)
        else:
            self.log.error(
                "fleet_lease_release_failed", provider=provider, error=repr(error), leases=leases
            )

    def not_released(self, provider: str, error: FleetUnavailable, leases: int = 1) -> None:
        self.log.warning(
            "fleet_lease_not_released", provider=provider, error=str(error), leases=leases,
            expires_in=self.lease_ttl,
        )

    def _shape(self, provider: str, scopes: Sequence[Scope]) -> _Shape:
        key = (provider, id(scopes))  # the shape holds ``scopes``: no other object has its id meanwhile
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= 1024:  # callers pass their routes' fixed tuples: never, in use
                self._retire_all()
                self._shapes.clear()
            shape = self._shapes[key] = _Shape(
                self.keys, provider, scopes, self._share_size, self._share_ttl
            )
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
        self._merged.clear()
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
                unheard = 0  # give-backs nobody waits for (a share's are many): one log line
                for call in calls:  # each its own exception: each caller's traceback grows on it
                    if call.future is None:
                        unheard += call.leases
                    elif not call.future.done():
                        call.future.set_exception(unavailable(error, what))
                if unheard:
                    self._release_failed(provider, unavailable(error, what), unheard)
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
        if reply[0] == lua.GRANTED:
            provider, shape, lease_id = grant
            self._give_back_grant(provider, shape, lease_id, reply[4], reply[3])

    def _give_back_grant(
        self, provider: str, shape: _Shape, lease_id: str, shared: int, admitted_at: int
    ) -> None:
        """Give back a grant nobody will use: the call's place and the share booked with it."""
        ids = [lease_id, *(f"{lease_id}.{j}" for j in range(1, shared + 1))]
        self._give_back_unheard(shape, ids, Completion.ABANDONED, admitted_at)

    def hold(self, lease_id: str, keys: list[str]) -> None:
        """Keep ``lease_id`` renewed until it is released."""
        self._held[lease_id] = keys
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_held(), name="sidecar-fleet-lease-renewal")

    async def _renew_held(self) -> None:
        """Every third of ``lease_ttl``, push out the expiry of every lease still held; ends once none
        is. The leases of one set of budgets go in one script run (up to ``_MAX_RENEWED`` each): a
        sidecar with hundreds of long calls, or a share's places, sends a few runs a tick."""
        while self._held:
            await self._sleep(self.lease_ttl / 3)
            by_keys: dict[tuple[str, ...], list[str]] = {}
            for lease_id, keys in self._held.items():
                by_keys.setdefault(tuple(keys), []).append(lease_id)
            ttl = self._lease_ttl_us
            runs = [
                (list(keys), ids[first:first + _MAX_RENEWED])
                for keys, ids in by_keys.items() for first in range(0, len(ids), _MAX_RENEWED)
            ]
            results = await asyncio.gather(
                *(self._guard(self._renew(keys, [ttl, *ids]), "renew") for keys, ids in runs),
                return_exceptions=True,
            )
            failed = [(len(ids), r) for (_, ids), r in zip(runs, results, strict=True)
                      if isinstance(r, BaseException)]
            if failed:
                leases = sum(n for n, _ in failed)
                self.log.warning("fleet_lease_not_renewed", leases=leases, error=str(failed[0][1]))

    async def pause(self, provider: str, seconds_: float) -> float:
        key = self.keys.pause(provider)
        self._heard(key)  # this sidecar's own calls stop at once, before its notice comes back
        left = await self._guard(
            self._pause([key], [micros(max(0.0, seconds_)), self.keys.notices()]), "pause"
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
        while self._chores:  # each ends within a round trip
            await asyncio.gather(*list(self._chores), return_exceptions=True)
        self._retire_all()
        if self._notices is not None:
            await self._notices.aclose()
        while True:
            if self._acquires or self._releases:
                self._flush()
            pending = list(self._runs)
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
    share_size: int = SHARE_SIZE,
    share_ttl: float = SHARE_TTL,
) -> QueuedLimiter:
    """The limiter whose budgets the whole fleet shares (``clock``: monotonic, for the waits)."""
    keys = FleetKeys() if prefix is None else FleetKeys(prefix)
    backend = RedisBackend(
        redis, keys=keys, lease_ttl=lease_ttl, poll_interval=poll_interval, sleep=sleep,
        share_size=share_size, share_ttl=share_ttl,
    )
    return QueuedLimiter(backend, clock=clock, sleep=sleep)
