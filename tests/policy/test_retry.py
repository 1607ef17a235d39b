"""Retry decisions: eligibility, backoff maths, Retry-After, and the per-provider budget."""

from __future__ import annotations

import dataclasses

import pytest

from sidecar.config import RetryConfig
from sidecar.policy.retry import (
    IDEMPOTENT_METHODS,
    RetryBudget,
    backoff_delay,
    parse_retry_after,
    request_is_retryable,
    retry_delay,
)
from tests.support.fakes import FakeClock, seeded_rng

DEFAULT = RetryConfig()  # base 1 s, x2, max 10 s, jitter on
NO_JITTER = dataclasses.replace(DEFAULT, jitter=False)
NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(
    ("method", "has_key", "route_idempotent", "expected"),
    [
        ("GET", False, None, True),
        ("head", False, None, True),
        ("OPTIONS", False, None, True),
        ("PUT", False, None, True),
        ("DELETE", False, None, True),
        ("POST", False, None, False),
        ("PATCH", False, None, False),
        ("POST", True, None, True),
        ("PATCH", True, None, True),
        ("POST", False, True, True),
        ("GET", False, False, False),
        ("POST", True, False, False),
    ],
)
def test_request_is_retryable(
    method: str, has_key: bool, route_idempotent: bool | None, expected: bool
) -> None:
    """Idempotent methods or an Idempotency-Key allow retries; a route declaration overrides."""
    assert request_is_retryable(method, has_key, route_idempotent) is expected


def test_idempotent_methods_are_rfc_9110s() -> None:
    """The idempotent set is exactly RFC 9110's idempotent methods, TRACE left out."""
    assert frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}) == IDEMPOTENT_METHODS


def test_backoff_without_jitter_doubles_up_to_max_delay() -> None:
    """With jitter off the delays are 1, 2, 4, 8 s and then stay at max_delay."""
    rng = seeded_rng()
    assert [backoff_delay(n, NO_JITTER, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_backoff_with_jitter_is_uniform_under_the_cap() -> None:
    """Full jitter draws from [0, cap]; a seeded rng gives the same numbers every run."""
    rng = seeded_rng()
    delays = [backoff_delay(n, DEFAULT, rng) for n in range(1, 7)]
    assert delays == [
        0.20227294010591934,
        1.9458486348217188,
        3.8881673629746554,
        4.806067142449169,
        6.0112035499881955,
        6.055248315337756,
    ]


def test_backoff_survives_huge_retry_numbers_and_rejects_zero() -> None:
    """A retry number whose power overflows a float is capped; retry 0 is a caller bug."""
    assert backoff_delay(5000, NO_JITTER, seeded_rng()) == 10.0
    with pytest.raises(ValueError, match="starts at 1"):
        backoff_delay(0, NO_JITTER, seeded_rng())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tuesday, 14-Nov-23 22:14:20 GMT", 60.0),
        ("Tue Nov 14 22:13:21 2023", 1.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        ("1e3", None),
        ("inf", None),
        ("12 seconds", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds and all three HTTP date forms parse; the past is 0; garbage is None."""
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_delay_without_retry_after_is_the_backoff() -> None:
    """With no Retry-After the wait is just the backoff for that retry."""
    assert retry_delay(2, NO_JITTER, seeded_rng(), None) == 2.0


def test_retry_delay_takes_the_longer_of_backoff_and_retry_after() -> None:
    """Retry-After lengthens a short backoff but never shortens a long one."""
    assert retry_delay(1, NO_JITTER, seeded_rng(), 5.0) == 5.0
    assert retry_delay(3, NO_JITTER, seeded_rng(), 0.5) == 4.0
    assert retry_delay(1, NO_JITTER, seeded_rng(), 10.0) == 10.0


def test_retry_after_beyond_max_delay_means_do_not_retry() -> None:
    """A server asking for more than max_delay gets its answer passed back instead of a retry."""
    assert retry_delay(1, NO_JITTER, seeded_rng(), 10.5) is None


def spend_all(budget: RetryBudget) -> int:
    """Spend retries until the budget refuses; return how many it allowed."""
    allowed = 0
    while budget.try_spend():
        allowed += 1
    return allowed


def test_budget_floor_allows_min_per_second_times_window() -> None:
    """With no traffic at all, 3 per second over 10 s still allows 30 retries."""
    budget = RetryBudget(0.2, 3.0, clock=FakeClock())
    assert spend_all(budget) == 30
    assert budget.try_spend() is False


def test_budget_ratio_scales_with_first_attempts() -> None:
    """1000 first attempts in the window allow 20 %, i.e. 200 retries, above the floor."""
    budget = RetryBudget(0.2, 3.0, clock=FakeClock())
    for _ in range(1000):
        budget.record_first_attempt()
    assert spend_all(budget) == 200


def test_budget_retries_do_not_count_as_first_attempts() -> None:
    """Spending retries never raises the allowance: a retry storm can't fund itself."""
    budget = RetryBudget(1.0, 0.1, clock=FakeClock())
    for _ in range(5):
        budget.record_first_attempt()
    assert spend_all(budget) == 5


def test_budget_window_slides_with_the_clock() -> None:
    """Retries older than the 10 s window stop counting; refused retries never counted."""
    clock = FakeClock()
    budget = RetryBudget(0.2, 3.0, clock=clock)
    for _ in range(15):
        assert budget.try_spend()
    clock.advance(5.0)
    assert spend_all(budget) == 15
    clock.advance(4.5)  # 9.5 s after the first batch: it is still in the window
    assert budget.try_spend() is False
    clock.advance(0.5)
    assert spend_all(budget) == 15
    clock.advance(60.0)
    assert spend_all(budget) == 30
