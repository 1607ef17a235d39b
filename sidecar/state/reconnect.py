"""Backoff between reconnection attempts to a shared backend, so an outage costs callers nothing.

After a connection failure, operations fail at once (``StoreUnavailable``) until the next attempt is
due; then one probe goes through while the others keep failing fast. The wait doubles with each
failed probe up to ``cap`` and returns to ``base`` after the first success. Monotonic clock, injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ReconnectGate", "reconnect_delay"]


def reconnect_delay(failures: int, base: float, cap: float) -> float:
    """The wait after ``failures`` consecutive failed attempts (>= 1): ``min(cap, base * 2^(n-1))``."""
    return min(cap, base * 2.0 ** min(failures - 1, 62))


class ReconnectGate:
    def __init__(
        self, *, base: float = 0.05, cap: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.base = base
        self.cap = cap
        self.clock = clock
        self.failures = 0
        self.next_attempt = 0.0
        self.probing = False

    def admit(self) -> float | None:
        """None when the caller may go ahead; else the seconds until the next attempt is due."""
        if self.failures == 0:
            return None
        wait = self.next_attempt - self.clock()
        if wait > 0:
            return wait
        if self.probing:
            return 0.0
        self.probing = True
        return None

    def succeeded(self) -> None:
        self.failures = 0
        self.probing = False

    def failed(self) -> None:
        if self.failures and not self.probing and self.clock() < self.next_attempt:
            return  # a call that started before the outage was noticed: the backoff already runs
        self.failures += 1
        self.probing = False
        self.next_attempt = self.clock() + reconnect_delay(self.failures, self.base, self.cap)

    def abandoned(self) -> None:
        """A probe ended without a verdict (cancelled): let the next caller probe."""
        self.probing = False
