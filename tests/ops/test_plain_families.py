"""Counters and histograms in plain numbers expose exactly what prometheus_client's own would."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

from sidecar.ops.plain_families import PlainCounter, PlainHistogram, library_has_created

from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LABELS = st.tuples(st.sampled_from(["replicate", "eleven labs", 'q"uote']), st.sampled_from(["200", "503"]))
AMOUNTS = st.one_of(st.sampled_from([0.0, *BUCKETS]), st.floats(0, 100, allow_nan=False))


def _text(registry: CollectorRegistry) -> list[str]:
    """The exposition with each ``_created`` timestamp blanked (the two families are built at
    different instants)."""
    lines = generate_latest(registry).decode().splitlines()
    return [re.sub(r"(_created(\{.*\})?) \S+$", r"\1 <t>", line) for line in lines]


@given(st.lists(st.tuples(LABELS, st.sampled_from([1, 1, 2.5])), max_size=30))
def test_a_counter_exposes_what_prometheus_clients_would(incs: list[tuple[tuple[str, str], float]]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainCounter("x_requests_total", "Requests.", ("provider", "code"), registry=ours)
    reference = Counter("x_requests_total", "Requests.", ("provider", "code"), registry=theirs)
    for labels, amount in incs:
        plain.labels(*labels).inc(amount)
        reference.labels(*labels).inc(amount)
        assert _text(ours) == _text(theirs)
    assert _text(ours) == _text(theirs)


@given(st.lists(st.tuples(LABELS, AMOUNTS), max_size=40))
def test_a_histogram_exposes_what_prometheus_clients_would(
    observed: list[tuple[tuple[str, str], float]],
) -> None:
    """Same bucket for every boundary value (``le`` is inclusive), same counts, sum and names, a
    series from its creation on, before any observation."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainHistogram("x_seconds", "Time.", ("provider", "code"), buckets=BUCKETS, registry=ours)
    reference = Histogram("x_seconds", "Time.", ("provider", "code"), buckets=BUCKETS, registry=theirs)
    for labels, amount in observed:
        series, child = plain.labels(*labels), reference.labels(*labels)
        assert _text(ours) == _text(theirs)
        series.observe(amount)
        child.observe(amount)
    assert _text(ours) == _text(theirs)


def test_created_series_can_be_left_out() -> None:
    registry = CollectorRegistry()
    PlainCounter("x_total", "X.", ("p",), registry=registry, created=False).labels("a").inc()
    PlainHistogram("x_seconds", "X.", ("p",), buckets=BUCKETS, registry=registry,
                   created=False).labels("a").observe(1)
    text = generate_latest(registry).decode()
    assert "x_total{p=\"a\"} 1.0" in text
    assert "_created" not in text


@pytest.fixture
def created_off() -> Iterator[None]:
    """prometheus_client's process-wide switch off, as the entry point sets it; back on after."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        enable_created_metrics()  # type: ignore[no-untyped-call]


async def test_with_the_librarys_switch_off_no_family_has_created_series(
    created_off: None, sidecar: Callable[..., Any], fake: FakeProvider
) -> None:
    """The entry point turns prometheus_client's ``_created`` series off (they would double the
    scrape): the families counted in plain numbers leave theirs out too."""
    assert not library_has_created()
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    async with client.get("/p/x") as resp:
        assert resp.status == 200
    async with client.get("/metrics") as resp:
        text = await resp.text()
    assert 'sidecar_requests_total{code="200",operation="other",provider="p",source="provider"} 1.0' in text
    assert "_created" not in text


def test_with_the_switch_on_the_library_has_created_series() -> None:
    assert library_has_created()


def test_a_name_taken_twice_is_refused_as_the_library_refuses_it() -> None:
    registry = CollectorRegistry()
    PlainHistogram("x_seconds", "X.", ("p",), buckets=BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("x_seconds_count", "X.", registry=registry)


def test_wrong_labels_and_buckets_are_refused() -> None:
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="expected 2 label values"):
        PlainCounter("x_total", "X.", ("p", "q"), registry=registry).labels("a")
    with pytest.raises(ValueError, match="sorted"):
        PlainHistogram("y_seconds", "Y.", ("p",), buckets=(1, 0.5), registry=registry)
