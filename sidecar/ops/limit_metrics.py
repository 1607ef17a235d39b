"""The metrics of rate limits, provider pauses and the fleet's shared state (Redis), on the app's registry.

``sidecar_rate_limited_total{provider, reason}`` counts requests answered 429 ``rate_limited``;
``sidecar_rate_limit_wait_seconds{provider}`` is how long requests waited for their place (refused
ones included); ``sidecar_provider_paused_until_seconds{provider}`` is the end of the provider's
pause as a Unix time (0 when none); ``sidecar_fleet_fallbacks_total{component, to}`` counts the
switches between the fleet's state in Redis and this sidecar's own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["WAIT_BUCKETS", "LimitFamilies", "ProviderLimitMetrics"]

REASONS = ("rate", "concurrency", "provider_pause")
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_NAME = "sidecar_rate_limit_wait_seconds"
_WAIT_HELP = "Time requests waited for a place under the provider's limits (refused ones too)."


class _Waits:
    """One provider's wait counts: per bucket (not cumulative; the last is +Inf) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(WAIT_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(WAIT_BUCKETS, seconds)] += 1  # the first bound >= seconds
        self.total += seconds


class _WaitHistogram(Collector):
    """``sidecar_rate_limit_wait_seconds``, counted in plain integers.

    Every proxied request observes its wait, nearly always 0, so this is on the path of every
    request; prometheus_client's ``Histogram`` takes two locks and four calls an observation. The
    event loop is the only writer, and scrapes run on it too, so a scrape reads whole observations.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[str, _Waits] = {}
        self._bounds = [floatToGoString(b) for b in WAIT_BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]
        registry.register(self)

    def series(self, provider: str) -> _Waits:
        return self._series.setdefault(provider, _Waits())

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(_WAIT_NAME, _WAIT_HELP, labels=("provider",))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(_WAIT_NAME, _WAIT_HELP, labels=("provider",))
        for provider, waits in self._series.items():
            cumulative = map(float, accumulate(waits.counts))
            family.add_metric([provider], list(zip(self._bounds, cumulative, strict=True)), waits.total)
        yield family


class LimitFamilies:
    """The metric families; one ``ProviderLimitMetrics`` per provider reads them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rate_limited = Counter(
            "sidecar_rate_limited_total",
            "Requests answered 429 rate_limited, by why no place was free in time.",
            ("provider", "reason"),
            registry=registry,
        )
        self.wait = _WaitHistogram(registry)
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
        self._wait = families.wait.series(name)
        self._gauge = families.paused_until.labels(name)

    def refused(self, reason: str) -> None:
        self._reasons[reason].inc()

    def waited(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def at_once(self) -> None:
        self._wait.counts[0] += 1  # a wait of 0: the first bucket, the sum unchanged

    def export_paused_until(self, current: Callable[[], float]) -> None:
        self._gauge.set_function(current)
