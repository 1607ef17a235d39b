"""GCRA: the window bound, honest waits, bookings, on integer microseconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.gcra import MICROS, Gcra, micros
from tests.support.rate_windows import assert_window_bound

rates = st.sampled_from([1.0, 6.0, 7.0, 60.0, 600.0, 3000.0, 45_000.0])
bursts = st.integers(min_value=1, max_value=8)
gaps = st.lists(st.integers(min_value=0, max_value=3 * MICROS), min_size=1, max_size=120)


def _arrivals(gap_list: list[int]) -> list[int]:
    times, now = [], 10 * MICROS
    for gap in gap_list:
        now += gap
        times.append(now)
    return times


@given(rates, bursts, gaps)
def test_admitted_calls_never_exceed_rate_times_window_plus_burst(
    rpm: float, burst: int, gap_list: list[int]
) -> None:
    """Whatever the arrivals, no window admits more than burst + rate x window."""
    gcra, tat, admitted = Gcra.per_minute(rpm, burst), 0, []
    for now in _arrivals(gap_list):
        decision = gcra.decide(now, tat)
        if decision.allowed:
            tat = decision.tat
            admitted.append(now)
    assert_window_bound(admitted, rpm, burst)


@given(rates, bursts, gaps, st.integers(min_value=0, max_value=5 * MICROS))
def test_booked_calls_keep_the_bound_and_never_wait_past_max_wait(
    rpm: float, burst: int, gap_list: list[int], max_wait: int
) -> None:
    """Callers that book a later start wait at most max_wait, and the starts keep the window bound."""
    gcra, tat, starts = Gcra.per_minute(rpm, burst), 0, []
    for now in _arrivals(gap_list):
        start = max(now, gcra.earliest(tat))
        if start - now > max_wait:
            continue
        tat = gcra.reserve(tat, start)
        starts.append(start)
        assert start - now <= max_wait
    assert_window_bound(sorted(starts), rpm, burst)


@given(rates, bursts, gaps)
def test_a_refusal_names_the_exact_wait(rpm: float, burst: int, gap_list: list[int]) -> None:
    """A refused call is admitted exactly ``wait`` later, not a microsecond sooner."""
    gcra, tat = Gcra.per_minute(rpm, burst), 0
    for now in _arrivals(gap_list):
        decision = gcra.decide(now, tat)
        if decision.allowed:
            tat = decision.tat
            continue
        assert decision.tat == tat
        assert not gcra.decide(now + decision.wait - 1, tat).allowed
        assert gcra.decide(now + decision.wait, tat).allowed


def test_burst_calls_go_at_once_then_one_per_interval() -> None:
    """With burst 3 at 60/min, three calls go together, the fourth waits a full second."""
    gcra, tat, now = Gcra.per_minute(60, burst=3), 0, 100 * MICROS
    for _ in range(3):
        decision = gcra.decide(now, tat)
        assert decision.allowed
        tat = decision.tat
    refused = gcra.decide(now, tat)
    assert not refused.allowed
    assert refused.wait == MICROS


def test_default_burst_spaces_calls_by_the_interval() -> None:
    """Burst 1: a call every 100 ms at 600/min is admitted, one 1 µs early is not."""
    gcra, tat, now = Gcra.per_minute(600), 0, 5 * MICROS
    for _ in range(20):
        assert gcra.decide(now - 1, tat).allowed is (tat == 0)
        decision = gcra.decide(now, tat)
        assert decision.allowed
        tat = decision.tat
        now += micros(0.1)


def test_no_double_burst_at_a_window_boundary() -> None:
    """Calls spent at the end of one minute are not given back at the start of the next."""
    gcra, tat = Gcra.per_minute(60, burst=5), 0
    admitted = 0
    for now in (59 * MICROS, 59 * MICROS + 1, 60 * MICROS, 60 * MICROS + 1):
        for _ in range(5):
            decision = gcra.decide(now, tat)
            if decision.allowed:
                tat, admitted = decision.tat, admitted + 1
    assert admitted == 6  # the burst of 5, then one more after a second


def test_interval_is_rounded_up_to_whole_microseconds() -> None:
    """7/min is 8571428.57 µs: the interval rounds up, so the rate is never exceeded."""
    assert Gcra.per_minute(7).interval == 8_571_429


def test_booking_before_the_earliest_start_is_refused() -> None:
    """reserve() refuses a start that decide() would refuse."""
    gcra = Gcra.per_minute(60)
    with pytest.raises(ValueError, match="earliest"):
        gcra.reserve(10 * MICROS, 9 * MICROS)


@pytest.mark.parametrize(("rpm", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (60, 0)])
def test_bad_rates_are_refused(rpm: float, burst: int) -> None:
    """A rate must be positive and finite, a burst at least 1."""
    with pytest.raises(ValueError):
        Gcra.per_minute(rpm, burst)
