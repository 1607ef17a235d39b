"""The in-process limiter: every budget in this sidecar's memory (one budget per sidecar).

Used when no Redis is configured, and as the fallback while the fleet's Redis is unreachable. The
decision is ``sidecar.policy.admission.admit``; this module keeps its state and applies completions
(AIMD) and pauses. Leases here never expire: the process holding them is the one that would die.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Sequence

from sidecar.limits.api import Completion
from sidecar.limits.queue import QueuedLimiter
from sidecar.policy.admission import PROVIDER_SCOPE, Blocked, Budget, Granted, Scope, admit
from sidecar.policy.concurrency import (
    AimdState,
    aimd_after_concurrency_429,
    aimd_after_success,
    aimd_limit,
)
from sidecar.policy.gcra import micros, seconds

__all__ = ["LocalBackend", "local_limiter"]


class _LocalLease:
    __slots__ = ("_backend", "_budgets", "_granted", "_provider")

    def __init__(
        self,
        backend: LocalBackend,
        provider: str,
        budgets: list[tuple[Scope, Budget]],
        granted: Granted,
    ) -> None:
        self._backend = backend
        self._provider = provider
        self._budgets = budgets
        self._granted = granted

    @property
    def wait(self) -> float:
        return self._granted.wait

    @property
    def admitted_at(self) -> int:
        return self._granted.admitted_at

    async def release(self, completion: Completion) -> None:
        self.release_soon(completion)

    def release_soon(self, completion: Completion) -> None:
        """Given back at once: the budgets are in memory."""
        self._backend.release(self._provider, self._budgets, self._granted, completion)


class _OpenLease:
    """A place in budgets that limit nothing: counted per provider (the base of a lowering after a
    concurrency 429), booked nowhere."""

    __slots__ = ("_backend", "_provider", "admitted_at")
    wait = 0.0

    def __init__(self, backend: LocalBackend, provider: str, admitted_at: int) -> None:
        self._backend = backend
        self._provider = provider
        self.admitted_at = admitted_at

    async def release(self, completion: Completion) -> None:
        self.release_soon(completion)

    def release_soon(self, completion: Completion) -> None:
        self._backend.release_open(self._provider, self.admitted_at, completion)


class LocalBackend:
    """Budgets, pauses and lowered concurrencies of this process; ``clock`` is monotonic seconds."""

    poll_interval: float | None = None  # every release happens here and wakes the waiters

    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._budgets: dict[tuple[str, str], Budget] = {}
        self._paused_until: dict[str, int] = {}
        self._aimd: dict[str, AimdState] = {}
        self._open: dict[str, int] = {}  # per provider: calls in flight on open leases
        # (provider, id(scopes)) -> (scopes, their budgets): kept alive here, so an id is never reused
        self._by_scopes: dict[tuple[str, int], tuple[Sequence[Scope], list[tuple[Scope, Budget]]]] = {}
        self._ids = itertools.count(1)

    async def try_acquire(
        self, provider: str, scopes: Sequence[Scope], max_wait: float
    ) -> _LocalLease | _OpenLease | Blocked:
        return self.acquire_now(provider, scopes, max_wait)

    def acquire_now(
        self, provider: str, scopes: Sequence[Scope], max_wait: float
    ) -> _LocalLease | _OpenLease | Blocked:
        """``try_acquire`` without a coroutine: the decision is made in memory and nothing waits.

        Budgets that limit nothing (no rate, no concurrency: a provider without ``rate_limit``) admit
        at once while the provider is neither paused nor lowered, with nothing booked: the common
        case costs a count, not a lease in each budget.
        """
        for scope in scopes:  # Scope.limits_nothing, written out: every limited call passes here
            if scope.gcra is not None or scope.concurrency is not None:
                break
        else:
            admitted_at = self.open_now(provider)
            if admitted_at is not None:
                return _OpenLease(self, provider, admitted_at)
        now = micros(self._clock())
        budgets = self._budgets_of(provider, scopes)
        lowered = self._aimd.get(provider)
        result = admit(
            now,
            budgets,
            paused_until=self._paused_until.get(provider, 0),
            lowered_limit=None if lowered is None else aimd_limit(lowered, now),
            max_wait=micros(max_wait),
            lease_id=str(next(self._ids)),
            lease_expires_at=math.inf,
            unbooked=self._open.get(provider, 0),
        )
        if isinstance(result, Blocked):
            return result
        return _LocalLease(self, provider, budgets, result)

    def _budgets_of(self, provider: str, scopes: Sequence[Scope]) -> list[tuple[Scope, Budget]]:
        """Each scope with its budget; the list is kept per sequence of scopes (a route's plan asks
        with the same one every time), checked by identity so a new sequence is never mistaken."""
        key = (provider, id(scopes))
        known = self._by_scopes.get(key)
        if known is not None and known[0] is scopes:
            return known[1]
        if len(self._by_scopes) >= 1024:  # callers pass their plans' fixed tuples: never, in use
            self._by_scopes.clear()
        budgets = [(s, self._budget(provider, s)) for s in scopes]
        self._by_scopes[key] = (scopes, budgets)
        return budgets

    def open_now(self, provider: str) -> int | None:
        """Admit a call whose budgets limit nothing: counted, not booked; its admission time (µs),
        or None while the provider is paused or its concurrency lowered (its budgets decide then)."""
        now = micros(self._clock())
        if self._paused_until.get(provider, 0) > now:
            return None
        if provider in self._aimd:
            if aimd_limit(self._aimd[provider], now) is not None:
                return None
            del self._aimd[provider]  # forgotten: as if never lowered
        self._open[provider] = self._open.get(provider, 0) + 1
        return now

    def _budget(self, provider: str, scope: Scope) -> Budget:
        key = (provider, scope.name)
        budget = self._budgets.get(key)
        if budget is None:  # not setdefault: a Budget (and its lease table) per call adds up
            budget = self._budgets[key] = Budget()
        return budget

    def release(
        self,
        provider: str,
        budgets: list[tuple[Scope, Budget]],
        granted: Granted,
        completion: Completion,
    ) -> None:
        if completion is Completion.CONCURRENCY_LIMITED or provider in self._aimd:
            own = next((s for s, _ in budgets if s.name == PROVIDER_SCOPE), None)
            configured = own.concurrency if own is not None else None
            # counted before this call's lease goes, so it counts itself
            self._aimd_step(provider, completion, micros(self._clock()), granted.admitted_at, configured)
        for _, budget in budgets:
            budget.leases.release(granted.lease_id)

    def release_open(self, provider: str, admitted_at: int, completion: Completion) -> None:
        if completion is Completion.CONCURRENCY_LIMITED or provider in self._aimd:
            # counted before this call leaves the open count, so it counts itself
            self._aimd_step(provider, completion, micros(self._clock()), admitted_at, None)
        self._open[provider] -= 1

    def _in_flight(self, provider: str, now: int) -> int:
        """The provider's calls holding a place: leases in its own budget, and open ones."""
        own = self._budgets.get((provider, PROVIDER_SCOPE))
        return (own.leases.count(now) if own is not None else 0) + self._open.get(provider, 0)

    def _aimd_step(
        self, provider: str, completion: Completion, now: int, admitted_at: int,
        configured: int | None,
    ) -> None:
        """Lower the provider's concurrency after its concurrency 429, grow it back after successes."""
        state = self._aimd.get(provider)
        if completion is Completion.CONCURRENCY_LIMITED:
            state = aimd_after_concurrency_429(
                state, now=now, admitted_at=admitted_at, in_flight=self._in_flight(provider, now),
                configured=configured,
            )
        elif completion is Completion.OK:
            if state is None:
                return  # nothing lowered: nothing to grow back
            state = aimd_after_success(state, now)
        else:
            return
        if state is None:
            self._aimd.pop(provider, None)
        else:
            self._aimd[provider] = state

    def lowered_limit(self, provider: str) -> int | None:
        """The AIMD limit in force for ``provider`` (None: not lowered), for inspection."""
        return aimd_limit(self._aimd.get(provider), micros(self._clock()))

    def usage(self, provider: str, scope: Scope) -> tuple[int, float]:
        """(slots held, seconds until a start would be allowed) of one budget, for inspection."""
        now = micros(self._clock())
        budget = self._budgets.get((provider, scope.name))
        open_ = self._open.get(provider, 0) if scope.name == PROVIDER_SCOPE else 0
        if budget is None:
            return open_, 0.0
        gcra = scope.gcra
        wait = 0 if gcra is None else max(0, gcra.earliest(budget.tat) - now)
        return budget.leases.count(now) + open_, seconds(wait)

    async def pause(self, provider: str, seconds_: float) -> float:
        now = micros(self._clock())
        until = max(self._paused_until.get(provider, 0), now + micros(max(0.0, seconds_)))
        self._paused_until[provider] = until
        return seconds(until - now)

    async def paused_for(self, provider: str) -> float:
        now = micros(self._clock())
        return seconds(max(0, self._paused_until.get(provider, 0) - now))

    async def aclose(self) -> None:
        """Nothing to close: the state is plain memory."""


def local_limiter(
    *, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
) -> QueuedLimiter:
    """The per-sidecar limiter (monotonic ``clock``, ``sleep`` as ``asyncio.sleep``)."""
    return QueuedLimiter(LocalBackend(clock=clock), clock=clock, sleep=sleep)
