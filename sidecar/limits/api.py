"""The limiter's seam: what the request path asks for, what it gets back, what a backend provides.

Errors::

    Exception
    ├── RateLimited        no slot within the caller's wait: reason, honest retry_after, time waited
    └── FleetUnavailable   the shared (Redis) limiter could not answer in time: use the local one

Usage on the request path (``max_wait`` already bounded by what is left of ``timeouts.total``)::

    slot = await limiter.acquire(provider, scopes, max_wait=wait)   # may raise RateLimited
    async with slot:
        response = await send()
        if response.status != 429:
            slot.complete(Completion.OK)
        else:
            throttle = read_429(response.headers, first_bytes, now=time.time(), max_pause=...)
            if throttle.concurrency:
                slot.complete(Completion.CONCURRENCY_LIMITED)
            elif throttle.pause is not None:
                await limiter.pause(provider, throttle.pause)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from types import TracebackType
from typing import Protocol, runtime_checkable

from sidecar.policy.admission import Blocked, Reason, Scope
from sidecar.policy.gcra import micros

__all__ = [
    "Backend",
    "Completion",
    "DecidesInMemory",
    "FleetUnavailable",
    "GrantsAtOnce",
    "Lease",
    "Limiter",
    "RateLimited",
    "Slot",
]


class Completion(Enum):
    """How a call ended, as far as concurrency is concerned."""

    OK = "ok"  # the provider took the call: any answer but a 429
    CONCURRENCY_LIMITED = "concurrency"  # a 429 saying the account's concurrency is full
    ABANDONED = "abandoned"  # no answer, another 429, cancelled: says nothing either way


class RateLimited(Exception):
    """Refused: no slot within the caller's wait. ``retry_after`` is seconds (> 0)."""

    def __init__(self, provider: str, reason: Reason, retry_after: float, waited: float) -> None:
        super().__init__(f"{provider}: rate limited ({reason.value}), retry after {retry_after:.3f}s")
        self.provider = provider
        self.reason = reason
        self.retry_after = retry_after
        self.waited = waited


class FleetUnavailable(Exception):
    """The shared limiter's store did not answer within its timeout (or answered with an error)."""


class Lease(Protocol):
    """A backend's grant: start after ``wait`` seconds, then give it back exactly once.

    ``admitted_at`` is the backend's clock in µs (Redis server time for the fleet).
    """

    @property
    def wait(self) -> float: ...

    @property
    def admitted_at(self) -> int: ...

    async def release(self, completion: Completion) -> None:
        """Give it back; returns once the backend has it."""
        ...

    def release_soon(self, completion: Completion) -> None:
        """Give it back without waiting: at once in memory, or sent on (a failure is logged)."""
        ...


class Backend(Protocol):
    """Where the budgets live: in this process, or in Redis for the whole fleet.

    ``poll_interval`` is None when every change is made through this process (a release wakes the
    waiters); otherwise waiters blocked on concurrency look again at that interval.
    """

    @property
    def poll_interval(self) -> float | None: ...

    async def try_acquire(
        self, provider: str, scopes: Sequence[Scope], max_wait: float
    ) -> Lease | Blocked: ...

    async def pause(self, provider: str, seconds: float) -> float: ...

    async def paused_for(self, provider: str) -> float: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class DecidesInMemory(Protocol):
    """A backend whose decisions need no coroutine (the local one): the limiter asks it directly
    when nobody is in line, and callers admitted at once skip the queue's machinery."""

    def acquire_now(self, provider: str, scopes: Sequence[Scope], max_wait: float) -> Lease | Blocked:
        """``Backend.try_acquire``, decided in memory."""
        ...

    def open_now(self, provider: str) -> int | None:
        """Let through a call whose budgets limit nothing: its admission time (µs), or None while
        the provider is paused or its concurrency lowered (then its budgets must decide)."""
        ...

    def release_open(self, provider: str, admitted_at: int, completion: Completion) -> None:
        """Give back an ``open_now`` place (a concurrency 429 lowers the provider's concurrency)."""
        ...


@runtime_checkable
class GrantsAtOnce(Protocol):
    """A backend that can sometimes grant without a coroutine (the fleet's, from a share it holds):
    the limiter asks it first when nobody is in line."""

    def lease_at_once(self, provider: str, scopes: Sequence[Scope]) -> Lease | None:
        """A lease granted in memory, or None: then ``try_acquire`` decides."""
        ...


class Slot:
    """A place held for one call: ``async with`` gives it back, ``complete()`` says how it went.

    ``waited`` is the seconds between asking and being let through (for the wait histogram).
    """

    __slots__ = ("_completion", "_lease", "_on_release", "_released", "waited")

    def __init__(self, lease: Lease, waited: float, on_release: Callable[[], None]) -> None:
        self._lease = lease
        self._on_release = on_release
        self._completion = Completion.ABANDONED
        self._released = False
        self.waited = waited

    @property
    def booked_start(self) -> int:
        """The start the limiter booked for this call, in µs of its clock (for tests and logs)."""
        return self._lease.admitted_at + micros(self._lease.wait)

    def complete(self, completion: Completion) -> None:
        """Record how the call ended; the release at the end of ``async with`` reports it."""
        self._completion = completion

    async def release(self, completion: Completion | None = None) -> None:
        """Give the place back (once; later calls do nothing); returns once the backend has it."""
        if self._released:
            return
        self._released = True
        try:
            await self._lease.release(completion or self._completion)
        finally:
            self._on_release()

    def release_soon(self, completion: Completion | None = None) -> None:
        """Give the place back without waiting for the backend to hear of it: the request path's
        release, where nothing follows that depends on it (once; later calls do nothing)."""
        if self._released:
            return
        self._released = True
        try:
            self._lease.release_soon(completion or self._completion)
        finally:
            self._on_release()

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class Limiter(Protocol):
    """What the request path uses; ``QueuedLimiter`` and ``FallbackLimiter`` provide it."""

    async def acquire(self, provider: str, scopes: Sequence[Scope], *, max_wait: float) -> Slot: ...

    def acquire_at_once(self, provider: str, scopes: Sequence[Scope]) -> Slot | None:
        """The slot ``acquire`` would give without any wait, decided without a coroutine; None
        when it can't be said without one (then ``acquire`` decides)."""
        ...

    def pass_open(self, provider: str) -> int | None:
        """Let a call whose budgets limit nothing (no rate, no concurrency) through at once, with
        nothing booked: its admission time (µs) for ``release_open``. None when that can't be said
        without a coroutine (a pause, a lowered concurrency, callers in line, the fleet's limiter):
        then ``acquire`` decides, as if this had not been asked."""
        ...

    def release_open(self, provider: str, admitted_at: int, completion: Completion) -> None:
        """Give back a place ``pass_open`` gave."""
        ...

    async def pause(self, provider: str, seconds: float) -> float: ...

    async def paused_for(self, provider: str) -> float: ...

    async def aclose(self) -> None: ...
