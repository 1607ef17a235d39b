"""Per-host breakers of a download provider, as a pure table: no server, an injected clock."""

from __future__ import annotations

import dataclasses

from sidecar.config import BreakerConfig
from sidecar.policy.breaker import BreakerState, CircuitBreaker, Outcome, Permit, Transition
from sidecar.policy.host_breakers import DERIVED, FROM_WORST, SUMMED, HostBreakers

from ..support.fakes import FakeClock


def fail_once(hosts: HostBreakers, host: str) -> None:
    permit = hosts.breaker(host).acquire()
    assert isinstance(permit, Permit)
    hosts.breaker(host).record(permit, Outcome.FAILURE)


def test_host_table_evicts_closed_hosts_first(clock: FakeClock) -> None:
    """Over capacity the least recently used closed host goes; an open one is kept."""
    cfg = BreakerConfig(failure_threshold=1, minimum_calls=0)
    hosts = HostBreakers("dl", cfg, clock=clock, capacity=2)
    sick = hosts.breaker("sick:443")
    permit = sick.acquire()
    assert isinstance(permit, Permit)
    sick.record(permit, Outcome.FAILURE)
    hosts.breaker("a:443")
    hosts.breaker("b:443")
    assert hosts.host_state("sick:443") is BreakerState.OPEN
    assert hosts.host_state("a:443") is None and hosts.host_state("b:443") is BreakerState.CLOSED
    assert hosts.evicted == 1


def test_idle_half_open_host_stops_counting(clock: FakeClock) -> None:
    """A host left half-open and unused for a monitoring period no longer colours the provider."""
    cfg = BreakerConfig(failure_threshold=1, minimum_calls=0, recovery_timeout=5.0,
                        monitoring_period=15.0)
    hosts = HostBreakers("dl", cfg, clock=clock)
    breaker = hosts.breaker("h:443")
    permit = breaker.acquire()
    assert isinstance(permit, Permit)
    breaker.record(permit, Outcome.FAILURE)
    assert hosts.state is BreakerState.OPEN
    clock.advance(6.0)
    assert hosts.state is BreakerState.HALF_OPEN
    clock.advance(10.0)
    assert hosts.state is BreakerState.CLOSED


def test_listeners_hear_each_hosts_transitions_and_evictions(clock: FakeClock) -> None:
    """Transitions arrive with their host and evictions name the host dropped; the table logs nothing."""
    seen: list[tuple[str, Transition]] = []
    evicted: list[str] = []
    cfg = BreakerConfig(failure_threshold=1, minimum_calls=0)
    hosts = HostBreakers("dl", cfg, clock=clock, capacity=2,
                         on_transition=lambda host, t: seen.append((host, t)),
                         on_evict=evicted.append)
    fail_once(hosts, "a:443")
    assert [(h, t.provider, t.from_state, t.to_state) for h, t in seen] == [
        ("a:443", "dl", BreakerState.CLOSED, BreakerState.OPEN)]
    hosts.breaker("b:443")
    hosts.breaker("c:443")
    assert evicted == ["b:443"]  # the open host is kept, the closed one goes
    hosts.reset()
    assert [(h, t.to_state) for h, t in seen[1:]] == [("a:443", BreakerState.CLOSED)]


def test_admin_mode_reaches_hosts_first_seen_later(clock: FakeClock) -> None:
    """force-open applies to a host first used after it, until reset closes every host."""
    hosts = HostBreakers("dl", BreakerConfig(), clock=clock)
    hosts.breaker("a:443")
    hosts.force_open()
    assert hosts.breaker("new:443").state is BreakerState.FORCED_OPEN
    assert hosts.state is BreakerState.FORCED_OPEN
    hosts.reset()
    assert hosts.host_state("new:443") is BreakerState.CLOSED and hosts.state is BreakerState.CLOSED


def record(hosts: HostBreakers, host: str, *outcomes: Outcome) -> None:
    """Send outcomes through ``host``'s breaker as the attempt loop would (permit, then record)."""
    breaker = hosts.breaker(host)
    for outcome in outcomes:
        permit = breaker.acquire()
        assert isinstance(permit, Permit)
        breaker.record(permit, outcome)


def test_every_breaker_key_has_an_aggregation_rule(clock: FakeClock) -> None:
    """Each key of one breaker's object is summed, taken from the worst host or derived: exactly once."""
    rules = [*SUMMED, *FROM_WORST, *DERIVED]
    assert len(rules) == len(set(rules))
    assert set(rules) == set(CircuitBreaker("x", BreakerConfig(), clock=clock).snapshot())


def test_aggregate_takes_the_worst_host_and_sums_the_counters(clock: FakeClock) -> None:
    """A half-open host outranks a closed one with more consecutive failures; counters add up."""
    cfg = BreakerConfig(failure_threshold=2, minimum_calls=0, recovery_timeout=5.0,
                        monitoring_period=60.0, max_recovery_timeout=40.0)
    hosts = HostBreakers("dl", cfg, clock=clock)
    record(hosts, "trial:443", Outcome.FAILURE, Outcome.FAILURE)  # opens
    clock.advance(5.0)
    record(hosts, "trial:443", Outcome.SUCCESS)  # half-open, one trial success
    record(hosts, "flaky:443", Outcome.SUCCESS, Outcome.FAILURE)
    record(hosts, "fine:443", Outcome.SUCCESS)
    agg = hosts.snapshot()
    assert agg["state"] == "half_open" and agg["half_open_successes"] == 1
    assert agg["consecutive_failures"] == 2  # the half-open host's, not flaky's 1
    table = hosts.host_table()["breakers"].values()  # type: ignore[attr-defined]
    for key in ("window_calls", "window_failures"):
        assert agg[key] == sum(h[key] for h in table), key
    assert agg["failure_rate"] == round(agg["window_failures"] / agg["window_calls"], 4)
    assert (agg["total_calls"], agg["total_failures"], agg["total_successes"]) == (6, 3, 3)
    assert (agg["opened_count"], agg["retry_after_seconds"]) == (1, None)
    assert agg["config"] == dataclasses.asdict(cfg)


def test_idle_hosts_add_to_counters_but_do_not_describe_the_state(clock: FakeClock) -> None:
    """A closed host unused for a monitoring period no longer gives its consecutive failures."""
    cfg = BreakerConfig(failure_threshold=5, minimum_calls=0, monitoring_period=15.0)
    hosts = HostBreakers("dl", cfg, clock=clock)
    record(hosts, "old:443", Outcome.FAILURE, Outcome.FAILURE)
    assert hosts.snapshot()["consecutive_failures"] == 2
    clock.advance(16.0)
    agg = hosts.snapshot()
    assert (agg["state"], agg["consecutive_failures"], agg["total_failures"]) == ("closed", 0, 2)
    assert agg["window_calls"] == 0  # the window moved on


def test_evicted_hosts_keep_their_totals(clock: FakeClock) -> None:
    """Totals never go down when a host is evicted from the table."""
    cfg = BreakerConfig(failure_threshold=5, minimum_calls=0)
    hosts = HostBreakers("dl", cfg, clock=clock, capacity=1)
    record(hosts, "a:443", Outcome.SUCCESS, Outcome.FAILURE)
    record(hosts, "b:443", Outcome.SUCCESS)
    agg = hosts.snapshot()
    assert hosts.evicted == 1 and hosts.host_table()["count"] == 1
    assert (agg["total_calls"], agg["total_failures"], agg["total_successes"]) == (3, 1, 2)
    assert agg["window_calls"] == 1  # windows are the hosts' own: only b's is left
