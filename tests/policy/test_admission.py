"""One admission decision over a provider's budgets: pause, concurrency and rate together."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.admission import (
    CONCURRENCY_RETRY_AFTER,
    PROVIDER_SCOPE,
    Blocked,
    Budget,
    Granted,
    RateLimitConfig,
    Reason,
    Scope,
    admit,
)
from sidecar.policy.gcra import MICROS

T0 = 100 * MICROS
PROVIDER = Scope.of(PROVIDER_SCOPE, RateLimitConfig(requests_per_minute=60, burst=2, concurrency=3))
ROUTE = Scope.of("create", RateLimitConfig(requests_per_minute=30))


def _admit(now: int, budgets: list[tuple[Scope, Budget]], *, paused_until: int = 0,
           lowered: int | None = None, max_wait: int = 0, lease: str = "x") -> Granted | Blocked:
    return admit(now, budgets, paused_until=paused_until, lowered_limit=lowered, max_wait=max_wait,
                 lease_id=lease, lease_expires_at=math.inf)


def test_a_pause_refuses_with_the_time_left() -> None:
    """During a pause nothing is admitted and the pause's end is the retry time."""
    result = _admit(T0, [(PROVIDER, Budget())], paused_until=T0 + 2_500_000)
    assert result == Blocked(Reason.PROVIDER_PAUSE, 2.5)


def test_full_concurrency_is_refused_and_books_nothing() -> None:
    """With every slot held, the caller is refused and the rate budget is left untouched."""
    budget = Budget()
    for lease in "abc":
        assert isinstance(_admit(T0 + MICROS * ord(lease), [(PROVIDER, budget)], lease=lease), Granted)
    tat = budget.tat
    result = _admit(T0 + 1000 * MICROS, [(PROVIDER, budget)], lease="d")
    assert result == Blocked(Reason.CONCURRENCY, CONCURRENCY_RETRY_AFTER, PROVIDER_SCOPE)
    assert budget.tat == tat


def test_a_lowered_limit_applies_to_the_provider_scope_only() -> None:
    """AIMD's limit caps the provider's budget, not a route's."""
    provider, route = Budget(), Budget()
    route_scope = Scope("create", concurrency=1)
    assert isinstance(_admit(T0, [(PROVIDER, provider)], lowered=1, lease="a"), Granted)
    assert _admit(T0 + 10 * MICROS, [(PROVIDER, provider)], lowered=1, lease="b") == Blocked(
        Reason.CONCURRENCY, CONCURRENCY_RETRY_AFTER, PROVIDER_SCOPE
    )
    assert isinstance(_admit(T0, [(route_scope, route)], lowered=5, lease="c"), Granted)


def test_the_route_rate_applies_on_top_of_the_provider_rate() -> None:
    """The route's 30/min makes the second call wait 2 s although the provider allows a burst."""
    provider, route = Budget(), Budget()
    budgets = [(PROVIDER, provider), (ROUTE, route)]
    assert _admit(T0, budgets, lease="a") == Granted("a", 0.0, T0)
    refused = _admit(T0, budgets, lease="b")
    assert refused == Blocked(Reason.RATE, 2.0, "create")
    waited = _admit(T0, budgets, lease="b", max_wait=2 * MICROS)
    assert waited == Granted("b", 2.0, T0)
    # both budgets booked the call at its real start, T0 + 2 s
    assert provider.tat == T0 + 3 * MICROS
    assert route.tat == T0 + 4 * MICROS


_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2 * MICROS),  # gap before this event
        st.booleans(),  # on the route (True) or provider-only
        st.integers(min_value=0, max_value=3 * MICROS),  # the caller's max_wait
        st.integers(min_value=0, max_value=4),  # how many calls in flight end before it
    ),
    max_size=80,
)


@given(_events)
def test_no_budget_is_ever_exceeded(events: list[tuple[int, bool, int, int]]) -> None:
    """Random arrivals and completions never break a rate, a concurrency or a caller's max_wait."""
    provider, route = Budget(), Budget()
    now, in_flight, starts = T0, [], {PROVIDER_SCOPE: [], "create": []}
    for n, (gap, on_route, max_wait, finished) in enumerate(events):
        now += gap
        for lease, scopes in in_flight[:finished]:
            for scope in scopes:
                scope.leases.release(lease)
        in_flight = in_flight[finished:]
        budgets = [(PROVIDER, provider)] + ([(ROUTE, route)] if on_route else [])
        result = _admit(now, budgets, max_wait=max_wait, lease=str(n))
        if isinstance(result, Granted):
            assert result.wait * MICROS <= max_wait
            start = now + round(result.wait * MICROS)
            in_flight.append((str(n), [b for _, b in budgets]))
            for scope, _ in budgets:
                starts[scope.name].append(start)
        assert provider.leases.count(now) <= 3
    for name, rpm, burst in ((PROVIDER_SCOPE, 60, 2), ("create", 30, 1)):
        times = sorted(starts[name])
        for i in range(len(times)):
            for j in range(i, len(times)):
                assert j - i + 1 <= burst + (times[j] - times[i]) * rpm / (60 * MICROS) + 1e-9
