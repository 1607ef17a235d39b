"""Leases with expiry, and the AIMD concurrency that backs off on a provider's concurrency 429."""

from __future__ import annotations

import math

from sidecar.policy.concurrency import (
    AIMD_FORGET_AFTER,
    AIMD_INCREASE_INTERVAL,
    AimdState,
    LeaseTable,
    aimd_after_concurrency_429,
    aimd_after_success,
    aimd_limit,
)
from sidecar.policy.gcra import MICROS

T0 = 1_000 * MICROS


def test_a_lease_counts_until_released() -> None:
    """A slot taken is in use until given back; giving it back twice is reported."""
    table = LeaseTable()
    table.take("a", math.inf)
    table.take("b", math.inf)
    assert table.count(T0) == 2
    assert table.release("a")
    assert not table.release("a")
    assert table.count(T0) == 1


def test_an_expired_lease_no_longer_counts() -> None:
    """A holder that never releases loses its slot when the lease time passes."""
    table = LeaseTable()
    table.take("dead", T0 + 30 * MICROS)
    table.take("alive", T0 + 60 * MICROS)
    assert table.count(T0 + 30 * MICROS - 1) == 2
    assert table.count(T0 + 30 * MICROS) == 1
    assert not table.release("dead")


def test_renewal_keeps_a_long_call_counted() -> None:
    """A renewed lease outlives its first expiry; a reaped one is counted again once renewed."""
    table = LeaseTable()
    table.take("long", T0 + 10)
    table.renew("long", T0 + 100)
    assert table.count(T0 + 50) == 1
    assert table.count(T0 + 100) == 0
    table.renew("long", T0 + 200)
    assert table.count(T0 + 150) == 1


def test_a_concurrency_429_halves_the_configured_limit() -> None:
    """Configured 8: the first 429 lowers it to 4, with 8 as the ceiling to grow back to."""
    state = aimd_after_concurrency_429(None, now=T0, admitted_at=T0 - 5, in_flight=8, configured=8)
    assert state == AimdState(4, 8, T0)
    assert aimd_limit(state, T0) == 4


def test_without_a_configured_limit_the_in_flight_count_is_halved() -> None:
    """No concurrency configured: 6 calls in flight met the 429, so 3 may run for a while."""
    state = aimd_after_concurrency_429(None, now=T0, admitted_at=T0, in_flight=6, configured=None)
    assert state == AimdState(3, 6, T0)


def test_the_limit_never_drops_below_one() -> None:
    """Repeated 429s of fresh calls halve down to 1 and stay there."""
    state = None
    now = T0
    for _ in range(10):
        state = aimd_after_concurrency_429(state, now=now, admitted_at=now, in_flight=1, configured=16)
        now += 1
    assert aimd_limit(state, now) == 1


def test_429s_of_calls_admitted_before_the_decrease_do_not_halve_again() -> None:
    """The other calls that were in flight with the first 429 say nothing about the lower limit."""
    first = aimd_after_concurrency_429(None, now=T0, admitted_at=T0 - 10, in_flight=8, configured=8)
    again = aimd_after_concurrency_429(first, now=T0 + 5, admitted_at=T0 - 9, in_flight=7, configured=8)
    assert again is first
    fresh = aimd_after_concurrency_429(first, now=T0 + 6, admitted_at=T0 + 1, in_flight=4, configured=8)
    assert fresh == AimdState(2, 8, T0 + 6)


def test_successes_give_one_slot_back_per_interval_up_to_the_ceiling() -> None:
    """Additive increase: +1 per success spaced by the interval, and the state is dropped at the top."""
    state: AimdState | None = AimdState(2, 4, T0)
    assert aimd_after_success(state, T0 + AIMD_INCREASE_INTERVAL - 1) is state
    state = aimd_after_success(state, T0 + AIMD_INCREASE_INTERVAL)
    assert state == AimdState(3, 4, T0 + AIMD_INCREASE_INTERVAL)
    assert aimd_after_success(state, T0 + AIMD_INCREASE_INTERVAL + 1) is state
    assert aimd_after_success(state, T0 + 2 * AIMD_INCREASE_INTERVAL) is None


def test_a_reduction_is_forgotten_after_a_quiet_while() -> None:
    """With no 429 and no growth for the forget time, the full limit is back."""
    state = AimdState(1, 8, T0)
    assert aimd_limit(state, T0 + AIMD_FORGET_AFTER - 1) == 1
    assert aimd_limit(state, T0 + AIMD_FORGET_AFTER) is None
    assert aimd_after_success(state, T0 + AIMD_FORGET_AFTER) is None
    fresh = aimd_after_concurrency_429(
        state, now=T0 + AIMD_FORGET_AFTER, admitted_at=T0, in_flight=8, configured=8
    )
    assert fresh == AimdState(4, 8, T0 + AIMD_FORGET_AFTER)
