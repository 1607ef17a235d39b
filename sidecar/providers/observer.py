"""What the provider registry reports to, as structural types (``ops.metrics`` satisfies them).

The registry resolves one ``ProviderMetrics`` per provider at start-up: the attempt loop's counters,
plus the breaker transitions it counts and the gauges it exports. Declaring them here keeps the
metrics layer above the providers: ``ops`` may read the registry, the registry never imports ``ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from ..upstream.h1pool import PoolStats
from ..upstream.observer import AttemptMetrics

__all__ = ["MetricsSource", "ProviderMetrics"]


class ProviderMetrics(AttemptMetrics, Protocol):
    def transition(self, from_state: str, to_state: str) -> None:
        """Count one breaker transition (of the provider or of one of its download hosts)."""

    def export_state(self, current: Callable[[], str]) -> None:
        """Read the breaker state from ``current()`` at each scrape."""

    def export_inflight(self, current: Callable[[], float]) -> None:
        """Read the requests in flight from ``current()`` at each scrape."""

    def export_breaker(self, snapshot: Callable[[], Mapping[str, object]]) -> None:
        """Read the breaker's window and thresholds from ``snapshot()`` at each scrape."""

    def export_pool(self, stats: Callable[[], PoolStats | None]) -> None:
        """Read the connection pool's numbers from ``stats()`` at each scrape (None: no pool)."""

    def count_transitions(self, edges: Iterable[tuple[str, str]]) -> None:
        """Export every legal (from_state, to_state) edge of the breaker at 0."""


class MetricsSource(Protocol):
    def provider(self, name: str, routes: Iterable[str] = ()) -> ProviderMetrics:
        """The metrics of provider ``name``, with a series per named route."""
