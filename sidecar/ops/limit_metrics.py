"""The metrics of rate limits, provider pauses and the fleet's shared state (Redis), on the app's registry.

``sidecar_rate_limited_total{provider, reason}`` counts requests answered 429 ``rate_limited``;
``sidecar_rate_limit_wait_seconds{provider}`` is how long requests waited for their place (refused
ones included); ``sidecar_provider_paused_until_seconds{provider}`` is the end of the provider's
pause as a Unix time (0 when none); ``sidecar_fleet_fallbacks_total{component, to}`` counts the
switches between the fleet's state in Redis and this sidecar's own.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from .plain_families import PlainHistogram

__all__ = ["WAIT_BUCKETS", "LimitFamilies", "ProviderLimitMetrics"]

REASONS = ("rate", "concurrency", "provider_pause")
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_NAME = "sidecar_rate_limit_wait_seconds"
_WAIT_HELP = "Time requests waited for a place under the provider's limits (refused ones too)."


class LimitFamilies:
    """The metric families; one ``ProviderLimitMetrics`` per provider reads them."""

    def __init__(self, registry: CollectorRegistry, *, created_series: bool = True) -> None:
        self.rate_limited = Counter(
            "sidecar_rate_limited_total",
            "Requests answered 429 rate_limited, by why no place was free in time.",
            ("provider", "reason"),
            registry=registry,
        )
        # Every proxied request observes its wait, nearly always 0: counted in plain numbers.
        self.wait = PlainHistogram(_WAIT_NAME, _WAIT_HELP, ("provider",), buckets=WAIT_BUCKETS,
                                   registry=registry, created=created_series)
        self.paused_until = Gauge(
            "sidecar_provider_paused_until_seconds",
            "End of the provider's pause after its own 429, as a Unix time; 0 when not paused.",
            ("provider",),
            registry=registry,
        )
        self.fallbacks = Counter(
            "sidecar_fleet_fallbacks_total",
            "Switches between the fleet's shared state in Redis and this sidecar's own.",
            ("component", "to"),
            registry=registry,
        )

    def provider(self, name: str) -> ProviderLimitMetrics:
        return ProviderLimitMetrics(self, name)

    def fallback(self, component: str, to: str) -> None:
        """``component`` is ``limiter`` or ``breaker``; ``to`` is ``local`` or ``fleet``."""
        self.fallbacks.labels(component, to).inc()


class ProviderLimitMetrics:
    """Children for one provider, resolved once."""

    __slots__ = ("_gauge", "_reasons", "_wait")

    def __init__(self, families: LimitFamilies, name: str) -> None:
        self._reasons = {r: families.rate_limited.labels(name, r) for r in REASONS}
        self._wait = families.wait.labels(name)
        self._gauge = families.paused_until.labels(name)

    def refused(self, reason: str) -> None:
        self._reasons[reason].inc()

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def at_once(self) -> None:
        self._wait.counts[0] += 1  # a wait of 0: the first bucket, the sum unchanged

    def export_paused_until(self, current: Callable[[], float]) -> None:
        self._gauge.set_function(current)
