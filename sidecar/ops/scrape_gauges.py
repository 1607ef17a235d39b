"""Gauges read at scrape time from the breakers and the connection pools (a custom collector).

Each provider registers where its numbers come from; nothing is stored between scrapes, so a gauge
is never stale and the request path does no extra work. A breaker's snapshot is taken once per
scrape (reading it applies a lazy OPEN -> HALF_OPEN, as the state gauge does).

- ``sidecar_breaker_failure_rate{provider}``: failures / calls in the breaker's window (0 without
  calls); the breaker opens when it reaches ``sidecar_breaker_failure_rate_threshold`` with at least
  ``sidecar_breaker_minimum_calls`` calls (``sidecar_breaker_window_calls``) in the window.
- ``sidecar_upstream_connections{provider, state}`` (``in_use``, ``idle``),
  ``sidecar_upstream_connection_waiters{provider}`` and ``sidecar_upstream_connection_limit{provider}``:
  the lean HTTP/1.1 pool of each proxy provider (download providers have no such pool).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..upstream.h1pool import PoolStats

__all__ = ["CONNECTION_STATES", "ScrapeGauges"]

CONNECTION_STATES = ("in_use", "idle")
Snapshot = Callable[[], Mapping[str, object]]
Stats = Callable[[], PoolStats | None]


class ScrapeGauges(Collector):
    """The breaker and pool gauges of every provider, computed when Prometheus scrapes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._breakers: dict[str, Snapshot] = {}
        self._pools: dict[str, Stats] = {}
        registry.register(self)

    def add_breaker(self, provider: str, snapshot: Snapshot) -> None:
        self._breakers[provider] = snapshot

    def add_pool(self, provider: str, stats: Stats) -> None:
        self._pools[provider] = stats

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        rate, calls, threshold, minimum, conns, waiters, limit = families = self._families()
        for provider, snapshot in self._breakers.items():
            snap = snapshot()
            config = snap.get("config")
            window_calls = _number(snap.get("window_calls"))
            failures = _number(snap.get("window_failures"))
            rate.add_metric([provider], failures / window_calls if window_calls else 0.0)
            calls.add_metric([provider], window_calls)
            if isinstance(config, Mapping):
                threshold.add_metric([provider], _number(config.get("failure_rate_threshold")))
                minimum.add_metric([provider], _number(config.get("minimum_calls")))
        for provider, stats in self._pools.items():
            pool = stats()
            if pool is None:
                continue  # not open, or no upstream: no pool to describe
            conns.add_metric([provider, "in_use"], pool.in_use)
            conns.add_metric([provider, "idle"], pool.idle)
            waiters.add_metric([provider], pool.waiting)
            limit.add_metric([provider], pool.limit)
        return iter(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        def gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=("provider", *labels))

        return (
            gauge("sidecar_breaker_failure_rate",
                  "Failures / calls in the breaker's window (0 without calls)."),
            gauge("sidecar_breaker_window_calls", "Calls in the breaker's window."),
            gauge("sidecar_breaker_failure_rate_threshold",
                  "The failure rate that opens the breaker (configured)."),
            gauge("sidecar_breaker_minimum_calls",
                  "Calls the window must hold before the failure rate can open it (configured)."),
            gauge("sidecar_upstream_connections",
                  "Open connections to the provider, answering a request (in_use) or kept (idle).",
                  "state"),
            gauge("sidecar_upstream_connection_waiters",
                  "Requests waiting for a connection to the provider (the pool is at its limit)."),
            gauge("sidecar_upstream_connection_limit", "Open connections allowed to the provider."),
        )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
