"""Calls in flight as leases, and a concurrency limit that backs off when the provider says it is full.

A *lease* is one slot: an id and an expiry (integer microseconds). Slots are given back on completion;
the expiry is the safety net for a holder that vanished (a killed pod never releases), so its slots
return once the lease time passes. Holders of long calls renew their leases.

AIMD (additive increase, multiplicative decrease, as TCP's congestion window): when a provider answers
"too many concurrent requests", the concurrency in force is halved (never below 1); each later success
that comes at least ``AIMD_INCREASE_INTERVAL`` after the last change gives one slot back, until the
*ceiling* is reached and the reduction is dropped. The ceiling is the configured ``concurrency``, or,
for a provider without one, the number of calls in flight when the 429 came (the level that was too
much). A 429 from a call admitted before the last change says nothing about the lowered limit, so it
does not halve it again: a burst of 429s from calls that were all in flight together counts once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidecar.policy.gcra import MICROS

__all__ = [
    "AIMD_DECREASE_FACTOR",
    "AIMD_FORGET_AFTER",
    "AIMD_INCREASE_INTERVAL",
    "AIMD_MIN_LIMIT",
    "AimdState",
    "LeaseTable",
    "aimd_after_concurrency_429",
    "aimd_after_success",
    "aimd_limit",
]

AIMD_DECREASE_FACTOR = 0.5
"""Multiplicative decrease: the limit in force is halved on a concurrency 429."""
AIMD_MIN_LIMIT = 1
"""The floor: at least one call at a time always goes."""
AIMD_INCREASE_INTERVAL = 5 * MICROS
"""Additive increase: one slot back per success, at most once per 5 s."""
AIMD_FORGET_AFTER = 600 * MICROS
"""A reduction with no 429 and no growth for 10 minutes is forgotten (idle providers recover)."""

_NEVER = math.inf


class LeaseTable:
    """The leases of one budget: id -> expiry. Expired leases are dropped whenever it is looked at."""

    __slots__ = ("_expiry", "_next_expiry")

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._next_expiry = _NEVER

    def count(self, now: int) -> int:
        if now >= self._next_expiry:  # else no lease can have expired: the common case, no call
            self._reap(now)
        return len(self._expiry)

    def take(self, lease_id: str, expires_at: float) -> None:
        """Hold a slot until ``expires_at`` (``math.inf``: until released)."""
        self._expiry[lease_id] = expires_at
        self._next_expiry = min(self._next_expiry, expires_at)

    def renew(self, lease_id: str, expires_at: float) -> None:
        """Push a lease's expiry out; a lease that was already reaped is taken again."""
        self.take(lease_id, expires_at)

    def release(self, lease_id: str) -> bool:
        """Give a slot back; False when it was not held (released twice, or expired)."""
        return self._expiry.pop(lease_id, None) is not None

    def _reap(self, now: int) -> None:
        self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        self._next_expiry = min(self._expiry.values(), default=_NEVER)


@dataclass(frozen=True, slots=True)
class AimdState:
    """A lowered concurrency: ``limit`` now, growing back to ``ceiling``; ``changed_at`` in µs."""

    limit: int
    ceiling: int
    changed_at: int


def aimd_limit(state: AimdState | None, now: int) -> int | None:
    """The lowered limit in force at ``now``, or None when nothing is lowered."""
    if state is None or now - state.changed_at >= AIMD_FORGET_AFTER:
        return None
    return state.limit


def aimd_after_concurrency_429(
    state: AimdState | None,
    *,
    now: int,
    admitted_at: int,
    in_flight: int,
    configured: int | None,
) -> AimdState | None:
    """The state after a concurrency 429 of a call admitted at ``admitted_at``.

    ``in_flight`` counts the calls in flight when the 429 came, that one included.
    """
    current = aimd_limit(state, now)
    if state is not None and current is not None and admitted_at <= state.changed_at:
        return state  # admitted under the old limit: already answered by the last decrease
    if current is not None and state is not None:
        base, ceiling = current, state.ceiling
    else:
        base = configured if configured is not None else max(in_flight, AIMD_MIN_LIMIT)
        ceiling = configured if configured is not None else max(in_flight, AIMD_MIN_LIMIT)
    lowered = max(AIMD_MIN_LIMIT, math.floor(base * AIMD_DECREASE_FACTOR))
    return AimdState(lowered, ceiling, now)


def aimd_after_success(state: AimdState | None, now: int) -> AimdState | None:
    """The state after a call the provider accepted: one slot back per interval, None at the ceiling."""
    if aimd_limit(state, now) is None or state is None:
        return None
    if now - state.changed_at < AIMD_INCREASE_INTERVAL:
        return state
    grown = state.limit + 1
    if grown >= state.ceiling:
        return None
    return AimdState(grown, state.ceiling, now)
