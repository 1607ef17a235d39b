"""The rate-limit wait histogram, counted in plain integers, exposes what prometheus_client's would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from sidecar.ops.limit_metrics import WAIT_BUCKETS, LimitFamilies

HELP = "Time requests waited for a place under the provider's limits (refused ones too)."
BOUNDARIES = st.sampled_from([0.0, *WAIT_BUCKETS])
WAITS = st.lists(st.one_of(BOUNDARIES, st.floats(0, 120, allow_nan=False)), max_size=40)


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "wait_seconds" in line and "_created" not in line]


@given(st.dictionaries(st.sampled_from(["replicate", "elevenlabs", "p"]), WAITS, min_size=1))
def test_the_exposition_is_prometheus_clients_own(waits: dict[str, list[float]]) -> None:
    """Same bucket of every boundary value (``le`` is inclusive), same counts, sum and names, a
    series for a provider from its creation on, before any observation."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    families = LimitFamilies(ours)
    reference = Histogram("sidecar_rate_limit_wait_seconds", HELP, ("provider",),
                          buckets=WAIT_BUCKETS, registry=theirs)
    for provider, seconds in waits.items():
        metrics, child = families.provider(provider), reference.labels(provider)
        assert _lines(ours) == _lines(theirs)
        for value in seconds:
            metrics.waited(value)
            child.observe(value)
    assert _lines(ours) == _lines(theirs)
