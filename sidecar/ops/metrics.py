"""Prometheus metrics on a registry of the app's own (never the global one).

The names and labels are a contract with the dashboard, the alerts and the operators' queries. Label
children are resolved once per provider and route, so the request path only increments. (A route's
name is the ``operation`` label: that is the label's name in the contract.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..state import OperationEvent
from ..upstream.h1pool import PoolStats
from ..upstream.observer import ATTEMPT_RESULTS
from .limit_metrics import LimitFamilies, ProviderLimitMetrics
from .plain_families import CountedSeries, PlainCounter, PlainHistogram, library_has_created
from .scrape_gauges import ScrapeGauges

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
# The ``source`` label of sidecar_requests_total: who produced the status the client got.
SOURCES = ("sidecar", "provider")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LEDGER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# What the job ledger did with a request on a creates_job route (sidecar_idempotency_total).
IDEMPOTENCY_RESULTS = ("first", "replayed", "coalesced", "in_flight", "reused", "unknown",
                       "reconciled", "released", "unprotected")

__all__ = ["CONTENT_TYPE_LATEST", "IDEMPOTENCY_RESULTS", "SOURCES", "JobMetrics", "Metrics",
           "ProviderMetrics", "RouteMetrics"]


class Metrics:
    """Owns the registry and every metric family of one sidecar."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The families counted in plain numbers expose _created when the library's own do.
        created_series = library_has_created()
        r = self.registry
        ProcessCollector(registry=r)
        # The four series every request moves are counted in plain numbers (plain_families).
        self.requests = PlainCounter(
            "sidecar_requests_total",
            "Client requests by the status the client got, and who answered: the sidecar itself "
            "(an error of its own, with X-Sidecar-Error) or the provider.",
            ("provider", "operation", "code", "source"),
            registry=r,
            created=created_series,
        )
        self.request_duration = PlainHistogram(
            "sidecar_request_duration_seconds",
            "Client request duration, retries and waits included.",
            ("provider", "operation"),
            buckets=LATENCY_BUCKETS,
            registry=r,
            created=created_series,
        )
        self.attempts = PlainCounter(
            "sidecar_upstream_attempts_total",
            "Upstream attempts by outcome.",
            ("provider", "result"),
            registry=r,
            created=created_series,
        )
        self.attempt_duration = PlainHistogram(
            "sidecar_upstream_attempt_duration_seconds",
            "Upstream attempt duration to response headers.",
            ("provider",),
            buckets=LATENCY_BUCKETS,
            registry=r,
            created=created_series,
        )
        self.retries = Counter("sidecar_retries_total", "Retries sent.", ("provider",), registry=r)
        self.budget_exhausted = Counter(
            "sidecar_retry_budget_exhausted_total",
            "Retries refused by the retry budget.",
            ("provider",),
            registry=r,
        )
        self.breaker_state = Gauge(
            "sidecar_breaker_state",
            "1 for the breaker's current state, 0 for the others.",
            ("provider", "state"),
            registry=r,
        )
        self.transitions = Counter(
            "sidecar_breaker_transitions_total",
            "Breaker state transitions.",
            ("provider", "from_state", "to_state"),
            registry=r,
        )
        self.short_circuited = Counter(
            "sidecar_short_circuited_total",
            "Requests answered circuit_open without an attempt.",
            ("provider",),
            registry=r,
        )
        self.inflight = Gauge(
            "sidecar_inflight_requests",
            "Client requests in flight.",
            ("provider",),
            registry=r,
        )
        self.probe_up = Gauge(
            "sidecar_probe_up",
            "1 when the last health probe succeeded.",
            ("provider",),
            registry=r,
        )
        self.probe_duration = Gauge(
            "sidecar_probe_duration_seconds",
            "Duration of the last health probe.",
            ("provider",),
            registry=r,
        )
        self.idempotency = Counter(
            "sidecar_idempotency_total",
            "Requests on creates_job routes by what the job ledger did with them.",
            ("provider", "result"),
            registry=r,
        )
        self.ledger_errors = Counter(
            "sidecar_ledger_errors_total",
            "Job ledger operations that failed.",
            ("backend", "op"),
            registry=r,
        )
        self.ledger_duration = Histogram(
            "sidecar_ledger_duration_seconds",
            "Job ledger operation duration.",
            ("backend", "op"),
            buckets=LEDGER_BUCKETS,
            registry=r,
        )
        self.bulkhead_rejected = Counter(
            "sidecar_bulkhead_rejected_total",
            "Requests answered provider_overloaded: max_concurrent requests were in flight.",
            ("provider",),
            registry=r,
        )
        self.scrape_gauges = ScrapeGauges(r)
        build = Gauge("sidecar_build_info", "Build information.", ("version",), registry=r)
        build.labels(version).set(1)
        self.limit_families = LimitFamilies(r, created_series=created_series)
        self._providers: dict[str, ProviderMetrics] = {}

    def provider(self, name: str, routes: Iterable[str] = ()) -> ProviderMetrics:
        pm = self._providers.get(name)
        if pm is None:
            pm = self._providers[name] = ProviderMetrics(self, name, routes)
        return pm

    def limits(self, name: str) -> ProviderLimitMetrics:
        """Rate-limit and pause metrics of provider ``name``."""
        return self.limit_families.provider(name)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def jobs(self, providers: Iterable[str]) -> JobMetrics:
        """The ledger's counters, every result of every given provider present from 0."""
        return JobMetrics(self, providers)


class JobMetrics:
    """``sidecar_idempotency_total`` children by provider, and the store's operation reports."""

    def __init__(self, metrics: Metrics, providers: Iterable[str]) -> None:
        self._metrics = metrics
        self._results = {
            (p, r): metrics.idempotency.labels(p, r) for p in providers for r in IDEMPOTENCY_RESULTS
        }

    def count(self, provider: str, result: str) -> None:
        child = self._results.get((provider, result))
        if child is None:
            child = self._results[(provider, result)] = self._metrics.idempotency.labels(provider, result)
        child.inc()

    def on_operation(self, event: OperationEvent) -> None:
        """The state layer's ``StoreObserver``: time every store operation, count the failures."""
        m = self._metrics
        m.ledger_duration.labels(event.backend, event.op).observe(event.duration)
        # The error series of an operation exists (at 0) once the operation has run, so that
        # increase() and the alert see the first failure.
        errors = m.ledger_errors.labels(event.backend, event.op)
        if event.error is not None:
            errors.inc()


class RouteMetrics:
    """Children for one (provider, route): the per-request counters."""

    __slots__ = ("_by_code", "_family", "_labels", "duration")

    def __init__(self, metrics: Metrics, provider: str, route: str) -> None:
        self._family = metrics.requests
        self._labels = (provider, route)
        self.duration = metrics.request_duration.labels(provider, route)
        self._by_code: dict[tuple[int, str], CountedSeries] = {}

    def observe(self, code: int, seconds: float, source: str) -> None:
        """One request answered ``code`` by ``source`` (``sidecar`` or ``provider``)."""
        child = self._by_code.get((code, source))
        if child is None:
            child = self._family.labels(*self._labels, str(code), source)
            self._by_code[(code, source)] = child
        child.inc()
        self.duration.observe(seconds)


class ProviderMetrics:
    """Children for one provider, resolved at start-up."""

    def __init__(self, metrics: Metrics, name: str, routes: Iterable[str]) -> None:
        self._metrics = metrics
        self.name = name
        self.attempt = {r: metrics.attempts.labels(name, r) for r in ATTEMPT_RESULTS}
        self.attempt_duration = metrics.attempt_duration.labels(name)
        self.retries = metrics.retries.labels(name)
        self.budget_exhausted = metrics.budget_exhausted.labels(name)
        self.short_circuited = metrics.short_circuited.labels(name)
        self.bulkhead_rejected = metrics.bulkhead_rejected.labels(name)
        self._routes: dict[str, RouteMetrics] = {}
        for route in (*routes, "other"):
            self.route(route)

    def route(self, name: str) -> RouteMetrics:
        rm = self._routes.get(name)
        if rm is None:
            rm = self._routes[name] = RouteMetrics(self._metrics, self.name, name)
        return rm

    def export_state(self, current: Callable[[], str]) -> None:
        """Make ``sidecar_breaker_state`` read ``current()`` at each scrape: reading the state is
        what applies a breaker's lazy OPEN -> HALF_OPEN, so the gauge is never stale."""
        for state in BREAKER_STATES:
            self._metrics.breaker_state.labels(self.name, state).set_function(_is(current, state))

    def export_inflight(self, current: Callable[[], float]) -> None:
        """Make ``sidecar_inflight_requests`` read ``current()`` at each scrape."""
        self._metrics.inflight.labels(self.name).set_function(current)

    def export_breaker(self, snapshot: Callable[[], Mapping[str, object]]) -> None:
        """Read the breaker's window and thresholds from ``snapshot()`` at each scrape."""
        self._metrics.scrape_gauges.add_breaker(self.name, snapshot)

    def export_pool(self, stats: Callable[[], PoolStats | None]) -> None:
        """Read the connection pool's numbers from ``stats()`` at each scrape (None: no pool)."""
        self._metrics.scrape_gauges.add_pool(self.name, stats)

    def count_transitions(self, edges: Iterable[tuple[str, str]]) -> None:
        """Export every (from_state, to_state) edge at 0, so that ``increase()`` sees the first."""
        for from_state, to_state in edges:
            self._metrics.transitions.labels(self.name, from_state, to_state)

    def transition(self, from_state: str, to_state: str) -> None:
        self._metrics.transitions.labels(self.name, from_state, to_state).inc()

    def probe(self, up: bool, seconds: float) -> None:
        self._metrics.probe_up.labels(self.name).set(1 if up else 0)
        self._metrics.probe_duration.labels(self.name).set(seconds)


def _is(current: Callable[[], str], state: str) -> Callable[[], float]:
    return lambda: 1.0 if current() == state else 0.0
