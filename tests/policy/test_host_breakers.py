"""Per-host breakers of a download provider, as a pure table: no server, an injected clock."""

from __future__ import annotations

from sidecar.config import BreakerConfig
from sidecar.policy.breaker import BreakerState, Outcome, Permit, Transition
from sidecar.policy.host_breakers import HostBreakers

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
