"""What the attempt loop reports to, as structural types: counters and a histogram per provider.

``ops.metrics.ProviderMetrics`` satisfies ``AttemptMetrics`` with Prometheus children. The loop
depends only on these protocols, so the metrics layer sits above it and never the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["ATTEMPT_RESULTS", "AttemptMetrics", "Counter", "Histogram"]

# The keys of ``AttemptMetrics.attempt``: how one attempt ended.
ATTEMPT_RESULTS = ("success", "failure", "timeout", "connect_error")


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class AttemptMetrics(Protocol):
    """One provider's attempt counters, resolved once so the request path only increments."""

    @property
    def attempt(self) -> Mapping[str, Counter]:
        """By result, one of ``ATTEMPT_RESULTS``."""

    @property
    def attempt_duration(self) -> Histogram: ...

    @property
    def retries(self) -> Counter: ...

    @property
    def budget_exhausted(self) -> Counter: ...

    @property
    def short_circuited(self) -> Counter: ...
