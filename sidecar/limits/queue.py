"""Waiting in arrival order: callers that can't go at once queue per provider, up to their budget.

A caller first asks the backend directly when nobody of its provider is waiting. Otherwise, or when
told "not now" with time left to wait, it joins its provider's line. One task per provider with a
line (and only while it has one) serves it front to back: a caller blocked on a full budget holds
back the callers behind it that need that same budget (they may not overtake it), while callers
that need other budgets go on. A pause holds back everyone of the provider. Rate bookings are made
at once for a start within the caller's wait, so the order of bookings is the order of service.

Refusals are immediate when waiting can't help: a pause or a rate start beyond what is left of the
caller's wait is refused at once with the honest time (it would be refused anyway, later). A
caller blocked on concurrency waits to its deadline, then is refused with ``retry_after`` 1 s.

Time comes from the injected ``clock`` and ``sleep``; nothing else in here waits.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.limits.api import (
    Backend,
    Completion,
    DecidesInMemory,
    GrantsAtOnce,
    Lease,
    RateLimited,
    Slot,
)
from sidecar.policy.admission import Blocked, Reason, Scope

__all__ = ["QueuedLimiter"]


@dataclass(slots=True, eq=False)
class _Waiter:
    scopes: Sequence[Scope]
    deadline: float
    arrived: float
    future: asyncio.Future[Lease]
    names: frozenset[str] = field(init=False)
    last: Blocked | None = None  # what the backend said the last time this waiter asked

    def __post_init__(self) -> None:
        self.names = frozenset(scope.name for scope in self.scopes)


def _final(blocked: Blocked, remaining: float) -> bool:
    """Would waiting out ``remaining`` seconds be pointless?"""
    if remaining <= 0 or blocked.reason is Reason.RATE:
        return True  # a rate refusal already means: not within what is left of the wait
    return blocked.reason is Reason.PROVIDER_PAUSE and blocked.retry_after > remaining


class QueuedLimiter:
    """FIFO admission over a ``Backend``; implements ``Limiter``."""

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.backend = backend
        self._clock = clock
        self._sleep = sleep
        self._lines: dict[str, deque[_Waiter]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._servers: dict[str, asyncio.Task[None]] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self._wakers: dict[str, Callable[[], None]] = {}  # each provider's slot release callback
        # A backend that decides in memory (the local one) is asked without a coroutine, and so
        # is one that sometimes can (the fleet's, from a share).
        self._memory = backend if isinstance(backend, DecidesInMemory) else None
        self._at_once = backend if isinstance(backend, GrantsAtOnce) else None

    def acquire_at_once(self, provider: str, scopes: Sequence[Scope]) -> Slot | None:
        """The slot ``acquire`` would give without any wait, decided without a coroutine; None when
        that can't be said here (a wait would be needed, callers are in line, the fleet's backend
        has no share left): then ``acquire`` decides, as if this had not been asked (a refusal
        books nothing)."""
        memory = self._memory
        if self._lines.get(provider):
            return None
        if memory is None:
            at_once = self._at_once
            lease = None if at_once is None else at_once.lease_at_once(provider, scopes)
            return None if lease is None else Slot(lease, 0.0, self._waker(provider))
        result = memory.acquire_now(provider, scopes, 0.0)
        if isinstance(result, Blocked):
            return None
        return Slot(result, 0.0, self._waker(provider))

    def pass_open(self, provider: str) -> int | None:
        """A call whose budgets limit nothing goes at once unless the provider is held back or has
        callers in line (they are not overtaken); None: ``acquire`` decides."""
        memory = self._memory
        if memory is None or self._lines.get(provider):
            return None
        return memory.open_now(provider)

    def release_open(self, provider: str, admitted_at: int, completion: Completion) -> None:
        memory = self._memory
        assert memory is not None  # only a backend in memory gives open places
        memory.release_open(provider, admitted_at, completion)
        # under a lowered concurrency, open calls count: one may have freed a slot (tested here,
        # as in _wake, to spare the call when nobody waits: the common case)
        if provider in self._servers or self._lines.get(provider):
            self._wake(provider)

    async def acquire(self, provider: str, scopes: Sequence[Scope], *, max_wait: float) -> Slot:
        """A slot within ``max_wait`` seconds (bound it by the time left of ``timeouts.total``)."""
        arrived = self._clock()
        budget = max(0.0, max_wait)
        if not self._lines.get(provider):
            result = await self.backend.try_acquire(provider, scopes, budget)
            if not isinstance(result, Blocked):
                return await self._start(provider, result, arrived)
            waited = self._clock() - arrived
            if _final(result, budget - waited):
                raise RateLimited(provider, result.reason, result.retry_after, waited)
        lease = await self._wait_in_line(provider, scopes, arrived + budget, arrived)
        return await self._start(provider, lease, arrived)

    async def pause(self, provider: str, seconds: float) -> float:
        """Pause the provider (the longer of this and any pause in force); returns what is left."""
        remaining = await self.backend.pause(provider, seconds)
        self._wake(provider)
        return remaining

    async def paused_for(self, provider: str) -> float:
        return await self.backend.paused_for(provider)

    async def aclose(self) -> None:
        """Stop serving (at shutdown, once requests are done): callers still waiting are cancelled."""
        servers = list(self._servers.values())
        for task in servers:
            task.cancel()
        await asyncio.gather(*servers, *self._chores, return_exceptions=True)
        await self.backend.aclose()

    async def _start(self, provider: str, lease: Lease, arrived: float) -> Slot:
        """Sit out the booked rate wait, then hand over the slot."""
        if lease.wait > 0:
            try:
                await self._sleep(lease.wait)
            except BaseException:
                self._spawn(lease.release(Completion.ABANDONED))
                raise
        return Slot(lease, self._clock() - arrived, self._waker(provider))

    async def _wait_in_line(
        self, provider: str, scopes: Sequence[Scope], deadline: float, arrived: float
    ) -> Lease:
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(scopes, deadline, arrived, future)
        self._lines.setdefault(provider, deque()).append(waiter)
        self._wake(provider)
        try:
            return await future
        except asyncio.CancelledError:
            admitted = future.done() and not future.cancelled() and future.exception() is None
            if admitted:  # admitted just as the caller gave up
                self._spawn(future.result().release(Completion.ABANDONED))
            line = self._lines.get(provider)
            if line is not None and waiter in line:
                line.remove(waiter)
                self._wake(provider)
            raise

    def _waker(self, provider: str) -> Callable[[], None]:
        waker = self._wakers.get(provider)
        if waker is None:
            waker = self._wakers[provider] = functools.partial(self._wake, provider)
        return waker

    def _wake(self, provider: str) -> None:
        """Something changed for ``provider``: let its server look again (start one if needed)."""
        serving = provider in self._servers
        if not serving and not self._lines.get(provider):
            return  # nobody waits and nobody serves: nothing to tell (the common case, kept cheap)
        changed = self._changed.get(provider)
        if changed is None:
            changed = self._changed[provider] = asyncio.Event()
        changed.set()
        if not serving:
            self._servers[provider] = asyncio.create_task(self._serve(provider))

    async def _serve(self, provider: str) -> None:
        line = self._lines[provider]
        changed = self._changed[provider]
        try:
            while line:
                changed.clear()
                wake_at = await self._serve_once(provider, line)
                if line:
                    await self._wait_for_change(changed, wake_at - self._clock())
        except BaseException as error:
            # Waiters must never hang: they get the store's failure (FleetUnavailable: the caller
            # falls back), a bug's exception, or, when the limiter is closed, a cancellation.
            while line:
                waiter = line.popleft()
                if waiter.future.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    waiter.future.cancel()
                else:
                    waiter.future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            del self._servers[provider]

    async def _serve_once(self, provider: str, line: deque[_Waiter]) -> float:
        """One pass front to back; returns when to look again if nothing changes before."""
        now = self._clock()
        holds: dict[str | None, Blocked] = {}  # scope name (None: the whole provider) -> why
        wake_at = math.inf
        for waiter in list(line):
            if waiter.future.done():
                line.remove(waiter)
                continue
            blocked = holds.get(None) or next((holds[n] for n in waiter.names if n in holds), None)
            remaining = waiter.deadline - now
            if blocked is None and (remaining > 0 or waiter.last is None):
                result = await self.backend.try_acquire(provider, waiter.scopes, max(0.0, remaining))
                now = self._clock()
                if not isinstance(result, Blocked):
                    line.remove(waiter)
                    self._hand_over(waiter, result)
                    continue
                blocked = waiter.last = result
                if blocked.reason is not Reason.RATE:
                    holds[blocked.scope] = blocked
            elif blocked is None:
                blocked = waiter.last
            assert blocked is not None  # asked just now, or asked before and out of time
            if _final(blocked, waiter.deadline - now):
                line.remove(waiter)
                if not waiter.future.done():
                    error = RateLimited(provider, blocked.reason, blocked.retry_after, now - waiter.arrived)
                    waiter.future.set_exception(error)
                continue
            wake_at = min(wake_at, waiter.deadline, now + self._recheck_after(blocked))
        return wake_at

    def _recheck_after(self, blocked: Blocked) -> float:
        if blocked.reason is Reason.PROVIDER_PAUSE:
            return blocked.retry_after
        poll = self.backend.poll_interval
        return math.inf if poll is None else poll

    def _hand_over(self, waiter: _Waiter, lease: Lease) -> None:
        if waiter.future.done():  # cancelled while the backend answered
            self._spawn(lease.release(Completion.ABANDONED))
        else:
            waiter.future.set_result(lease)

    async def _wait_for_change(self, changed: asyncio.Event, longest: float) -> None:
        if longest <= 0 or changed.is_set():
            return
        event = asyncio.ensure_future(changed.wait())
        timer = asyncio.ensure_future(self._sleep(longest))
        try:
            await asyncio.wait({event, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            event.cancel()
            timer.cancel()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
