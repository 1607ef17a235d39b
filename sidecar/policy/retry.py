"""Retry decisions as pure functions: which requests may repeat, how long to wait, and the budget.

Nothing here sleeps or reads a clock of its own: the caller injects the rng and the clock, so the
numbers are exact in tests and the attempt loop owns all waiting.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

from ..config import RetryConfig
from .window import SlidingCounter

__all__ = [
    "IDEMPOTENT_METHODS",
    "RetryBudget",
    "backoff_delay",
    "parse_retry_after",
    "request_is_retryable",
    "retry_delay",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# RFC 9110 says 1*DIGIT; a sign or a fraction is tolerated because servers send them.
_DELTA_SECONDS = re.compile(r"[+-]?\d+(?:\.\d+)?")


def request_is_retryable(
    method: str, has_idempotency_key: bool, route_idempotent: bool | None
) -> bool:
    """May this request be sent twice? A route's explicit declaration beats method and key.

    Without one, only idempotent methods or a client-supplied ``Idempotency-Key`` qualify, so a POST
    that creates a paid job is never repeated unless the client asked for it.
    """
    if route_idempotent is not None:
        return route_idempotent
    return has_idempotency_key or method.upper() in IDEMPOTENT_METHODS


def backoff_delay(retry_number: int, config: RetryConfig, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry ``retry_number`` (1 = the first retry)."""
    if retry_number < 1:
        raise ValueError(f"retry_number starts at 1, got {retry_number}")
    try:
        raw = config.base_delay * config.exponential_base ** (retry_number - 1)
    except OverflowError:
        raw = math.inf
    cap = min(config.max_delay, raw)
    return rng.uniform(0.0, cap) if config.jitter else cap


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date), None if unusable.

    ``now`` is wall-clock epoch seconds, needed only for the date form; a time in the past is 0.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return max(0.0, float(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" dates carry no zone; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_delay(
    retry_number: int, config: RetryConfig, rng: random.Random, retry_after: float | None
) -> float | None:
    """The wait before retry ``retry_number``; None when the server asks for more than max_delay."""
    if retry_after is not None and retry_after > config.max_delay:
        return None
    backoff = backoff_delay(retry_number, config, rng)
    return backoff if retry_after is None else max(backoff, retry_after)


class RetryBudget:
    """Caps retries at ``max(ratio x first attempts, min_per_second x window)`` in a sliding window.

    Counted in 1-second buckets: the window spans between ``window - 1`` and ``window`` seconds.
    Retries never count as first attempts, so a retry storm cannot raise its own allowance.
    """

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        *,
        clock: Callable[[], float],
        window: float = 10.0,
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        buckets = max(1, math.ceil(window))
        self._first_attempts = SlidingCounter(window, buckets)
        self._retries = SlidingCounter(window, buckets)

    def record_first_attempt(self) -> None:
        self._first_attempts.add(self._clock())

    def try_spend(self) -> bool:
        """Count one retry and allow it, or refuse it without counting."""
        now = self._clock()
        floor = self.min_per_second * self.window
        allowance = max(self.ratio * self._first_attempts.total(now), floor)
        if self._retries.total(now) >= allowance:
            return False
        self._retries.add(now)
        return True
