"""What the provider registry reports to, as structural types (``ops.metrics`` satisfies them).

The registry resolves one ``ProviderMetrics`` per provider at start-up: the attempt loop's counters,
plus the breaker transitions it counts and the gauges it exports. Declaring them here keeps the
metrics layer above the providers: ``ops`` may read the registry, the registry never imports ``ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from ..upstream.observer import AttemptMetrics

__all__ = ["MetricsSource", "ProviderMetrics"]


class ProviderMetrics(AttemptMetrics, Protocol):
    def transition(self, from_state: str, to_state: str) -> None:
        """Count one breaker transition (of the provider or of one of its download hosts)."""

    def export_state(self, current: Callable[[], str]) -> None:
        """Read the breaker state from ``current()`` at each scrape."""

    def export_inflight(self, current: Callable[[], float]) -> None:
        """Read the requests in flight from ``current()`` at each scrape."""


class MetricsSource(Protocol):
    def provider(self, name: str, routes: Iterable[str] = ()) -> ProviderMetrics:
        """The metrics of provider ``name``, with a series per named route."""
