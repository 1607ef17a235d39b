"""Counters and histograms counted in plain numbers, for the series every request moves.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` check the metric, take a lock per
value and walk the buckets in Python: about four calls and two locks an increment, a quarter of
the sidecar's own instructions for a small proxied request. The event loop is the only writer
and scrapes run on it too, so these families keep a float per series and a list of bucket counts
instead, and a collector exposes exactly what prometheus_client's own would: the same names,
samples and order, ``_created`` included when the library's own families have it (its
process-wide switch: the entry point turns it off, ``PROMETHEUS_DISABLE_CREATED_SERIES`` too).
``tests/ops/test_plain_families.py`` compares the two line by line.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = ["CountedSeries", "PlainCounter", "PlainHistogram", "TimedSeries", "library_has_created"]


S = TypeVar("S")


def library_has_created() -> bool:
    """Whether prometheus_client's own counters expose ``_created`` now (its switch has no public
    getter: a counter on no registry is asked)."""
    probe = Counter("probe", "Probe.", registry=None)
    return any(sample.name.endswith("_created") for metric in probe.collect() for sample in metric.samples)


class CountedSeries:
    """One labelled series of a ``PlainCounter``."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class TimedSeries:
    """One labelled series of a ``PlainHistogram``: counts per bucket (not cumulative; the last
    is +Inf) and their sum."""

    __slots__ = ("_bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self._bounds, amount)] += 1  # the first bound >= amount: le is inclusive
        self.total += amount


class _Family(Collector, Generic[S]):
    """A family's name, help, labels and series by label values; ``_new`` makes a series."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *,
        registry: CollectorRegistry, created: bool,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {}
        self._created = created
        registry.register(self)

    def _new(self) -> S:
        raise NotImplementedError

    def labels(self, *values: object) -> S:
        if len(values) != len(self._labelnames):
            names = ", ".join(self._labelnames)
            raise ValueError(f"expected {len(self._labelnames)} label values ({names}), got {len(values)}")
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new()
        return series


class PlainCounter(_Family[CountedSeries]):
    """A counter family; ``labels(...)`` gives the series to ``inc``."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *,
        registry: CollectorRegistry, created: bool = True,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry=registry, created=created)

    def _new(self) -> CountedSeries:
        return CountedSeries()

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for key, series in list(self._series.items()):
            family.add_metric(key, series.value, created=series.created if self._created else None)
        yield family


class PlainHistogram(_Family[TimedSeries]):
    """A histogram family; ``labels(...)`` gives the series to ``observe``."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *,
        buckets: Sequence[float], registry: CollectorRegistry, created: bool = True,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(self.bounds) or self.bounds[-1:] == (float("inf"),):
            raise ValueError("buckets must be sorted and finite (+Inf is always added)")
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry=registry, created=created)

    def _new(self) -> TimedSeries:
        return TimedSeries(self.bounds)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for key, series in list(self._series.items()):
            cumulative = map(float, accumulate(series.counts))
            family.add_metric(list(key), list(zip(self._les, cumulative, strict=True)), series.total)
            if self._created:
                labels = dict(zip(self._labelnames, key, strict=True))
                family.samples.append(Sample(self._name + "_created", labels, series.created))
        yield family
