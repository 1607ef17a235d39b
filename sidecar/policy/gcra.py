"""The Generic Cell Rate Algorithm: a smooth rate limit with a bounded burst, in integer microseconds.

The whole state of one budget is a single number, the *theoretical arrival time* (TAT): when the
next call would be due if every call so far had come exactly at the steady rate. A call may go
when it is no more than ``tolerance`` ahead of that schedule. With ``burst`` B and the steady
interval T (60 s / requests_per_minute), ``tolerance`` is (B - 1) x T: B calls may go at once, and
then one every T. Any window of length W then admits at most ``B + floor(W / T)`` calls, wherever
it starts: unlike fixed-window counters there is no double burst at a window boundary.

Times are integer microseconds so that this module and the Redis script that shares the fleet's
budget compute exactly the same numbers (Lua numbers are doubles: integers up to 2^53 are exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MICROS", "Gcra", "GcraDecision", "micros", "seconds"]

MICROS = 1_000_000


def micros(seconds_: float) -> int:
    """Seconds (a clock reading or a duration) as integer microseconds."""
    return round(seconds_ * MICROS)


def seconds(micros_: int) -> float:
    return micros_ / MICROS


@dataclass(frozen=True, slots=True)
class GcraDecision:
    """``allowed`` with the new TAT to store, or refused with the microseconds until it would be."""

    allowed: bool
    tat: int
    wait: int


@dataclass(frozen=True, slots=True)
class Gcra:
    """One rate: ``interval`` microseconds between calls, ``tolerance`` microseconds of burst."""

    interval: int
    tolerance: int

    @classmethod
    def per_minute(cls, requests_per_minute: float, burst: int = 1) -> Gcra:
        """The rate for ``requests_per_minute`` letting ``burst`` calls (at least 1) go at once."""
        if not requests_per_minute > 0 or not math.isfinite(requests_per_minute):
            raise ValueError(f"requests_per_minute must be > 0, got {requests_per_minute!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        # Rounded up: a microsecond of rounding may make the rate a hair slower, never faster.
        interval = max(1, math.ceil(60 * MICROS / requests_per_minute))
        return cls(interval, (burst - 1) * interval)

    def earliest(self, tat: int) -> int:
        """The first instant a call may go, given the stored TAT (0 for a budget never used)."""
        return tat - self.tolerance

    def decide(self, now: int, tat: int) -> GcraDecision:
        """Admit a call at ``now`` or say how long until one would be admitted; never waits."""
        wait = self.earliest(tat) - now
        if wait > 0:
            return GcraDecision(False, tat, wait)
        return GcraDecision(True, max(tat, now) + self.interval, 0)

    def reserve(self, tat: int, at: int) -> int:
        """The TAT after booking a call that will go at ``at`` (not before ``earliest(tat)``).

        A caller that may wait books its future start now, so callers are served in the order they
        booked, and the call counts at the time it really goes.
        """
        if at < self.earliest(tat):
            raise ValueError(f"a call at {at} is before the earliest admissible {self.earliest(tat)}")
        return max(tat, at) + self.interval
