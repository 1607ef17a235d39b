"""One admission decision over a provider's budgets: pause, concurrency, rate, in that order.

A call is checked against its provider's budget and, when its route has a ``rate_limit`` of its
own, that one too (a route's limit applies on top of its provider's). It is admitted only if every
budget has a free slot and the provider is not paused; its rate bookings are then made in every
budget for one common start time, the latest any of them allows, so each budget counts the call at
the moment it really goes. A start further away than ``max_wait`` is refused (reason ``rate``)
rather than booked, so a refused caller uses up nothing.

Pure and synchronous: the in-process limiter calls it under the event loop; the Redis script of the
fleet limiter is the same algorithm, line for line, on the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from sidecar.config import RateLimitConfig
from sidecar.policy.concurrency import LeaseTable
from sidecar.policy.gcra import MICROS, Gcra

__all__ = [
    "CONCURRENCY_RETRY_AFTER",
    "PROVIDER_SCOPE",
    "Blocked",
    "Budget",
    "Granted",
    "RateLimitConfig",
    "Reason",
    "Scope",
    "admit",
]

PROVIDER_SCOPE = "*"
"""The scope name of a provider's own budget; route scopes are named after their route."""
CONCURRENCY_RETRY_AFTER = 1.0
"""No one can say when a call in flight ends: a caller refused for concurrency is told 1 s."""


class Reason(StrEnum):
    RATE = "rate"
    CONCURRENCY = "concurrency"
    PROVIDER_PAUSE = "provider_pause"


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget of a provider: its own (``PROVIDER_SCOPE``) or a route's."""

    name: str
    gcra: Gcra | None = None
    concurrency: int | None = None

    @property
    def limits_nothing(self) -> bool:
        """No rate and no concurrency: only a pause or a lowering can hold a call back here."""
        return self.gcra is None and self.concurrency is None

    @classmethod
    def of(cls, name: str, limit: RateLimitConfig) -> Scope:
        rpm = limit.requests_per_minute
        gcra = None if rpm is None else Gcra.per_minute(rpm, limit.burst)
        return cls(name, gcra, limit.concurrency)


class Granted(NamedTuple):
    """Admitted: the call may start ``wait`` seconds from now, holding ``lease_id`` in every scope
    (a named tuple: one is made for every limited call).

    ``admitted_at`` is the limiter's own clock in µs (Redis server time for the fleet): a later
    concurrency 429 from this call is compared with it.
    """

    lease_id: str
    wait: float
    admitted_at: int


@dataclass(frozen=True, slots=True)
class Blocked:
    """Not now. ``scope`` names the full budget (None for a pause, which covers the provider)."""

    reason: Reason
    retry_after: float
    scope: str | None = None


@dataclass(slots=True)
class Budget:
    """The mutable state of one scope in one process: the GCRA TAT and the leases."""

    tat: int = 0
    leases: LeaseTable = field(default_factory=LeaseTable)


def admit(
    now: int,
    budgets: Sequence[tuple[Scope, Budget]],
    *,
    paused_until: int,
    lowered_limit: int | None,
    max_wait: int,
    lease_id: str,
    lease_expires_at: float,
    unbooked: int = 0,
) -> Granted | Blocked:
    """Decide at ``now`` (µs) and, when admitted, book the call in every budget.

    ``lowered_limit`` is the AIMD limit of the provider's scope, if one is in force; ``max_wait``
    is how long this caller may still wait (µs); ``unbooked`` counts the provider's calls in flight
    that hold no lease (admitted while its budgets limited nothing), for its concurrency.
    """
    if paused_until > now:
        return Blocked(Reason.PROVIDER_PAUSE, (paused_until - now) / MICROS)
    start, rate_scope = now, None
    for scope, budget in budgets:
        limit = _limit(scope, lowered_limit)
        held = budget.leases.count(now) + (unbooked if scope.name == PROVIDER_SCOPE else 0)
        if limit is not None and held >= limit:
            return Blocked(Reason.CONCURRENCY, CONCURRENCY_RETRY_AFTER, scope.name)
        if scope.gcra is not None and (earliest := scope.gcra.earliest(budget.tat)) > start:
            start, rate_scope = earliest, scope.name
    if start - now > max_wait:
        return Blocked(Reason.RATE, (start - now) / MICROS, rate_scope)
    for scope, budget in budgets:
        if scope.gcra is not None:
            budget.tat = scope.gcra.reserve(budget.tat, start)
        budget.leases.take(lease_id, lease_expires_at)
    return Granted(lease_id, (start - now) / MICROS, now)


def _limit(scope: Scope, lowered: int | None) -> int | None:
    if scope.name != PROVIDER_SCOPE or lowered is None:
        return scope.concurrency
    return lowered if scope.concurrency is None else min(lowered, scope.concurrency)
