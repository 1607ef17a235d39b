"""The bounded record of recent breaker transitions behind /status/events."""

from __future__ import annotations

import pytest

from sidecar.config import BreakerConfig
from sidecar.ops.transitions import TransitionLog, iso_utc
from sidecar.policy.breaker import BreakerState, CircuitBreaker, Outcome, Permit, Transition

from ..support.fakes import FakeClock

WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _flap(log: TransitionLog, provider: str, times: int, clock: FakeClock) -> None:
    """Force-open then reset a real breaker ``times`` times: two transitions each."""
    breaker = CircuitBreaker(provider, BreakerConfig(), clock=clock, on_transition=log.record)
    for _ in range(times):
        breaker.force_open()
        clock.advance(1)
        breaker.reset()
        clock.advance(1)


def test_records_a_breaker_opening_with_reason_time_and_age() -> None:
    """A breaker that opens on consecutive failures leaves one entry: states, reason, wall time, age."""
    clock = FakeClock()
    log = TransitionLog(["p", "q"], clock=clock, wall=lambda: WALL)
    breaker = CircuitBreaker("p", BreakerConfig(failure_threshold=2), clock=clock,
                             on_transition=log.record)
    for _ in range(2):
        permit = breaker.acquire()
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.FAILURE)
    clock.advance(2.5)
    assert log.snapshot() == {
        "capacity": 20,
        "last_seq": 1,
        "providers": {
            "p": [{"seq": 1, "host": None, "from_state": "closed", "to_state": "open",
                   "reason": "consecutive_failures", "at": "2023-11-14T22:13:20.000Z",
                   "age_seconds": 2.5}],
            "q": [],
        },
    }


def test_each_provider_keeps_only_its_newest_transitions() -> None:
    """Past ``capacity`` the oldest entries go; another provider's ring is untouched."""
    clock = FakeClock()
    log = TransitionLog(["busy", "calm"], clock=clock, wall=lambda: WALL, capacity=5)
    _flap(log, "calm", 1, clock)
    _flap(log, "busy", 50, clock)
    busy = log.recent("busy")
    assert len(busy) == 5
    assert [r.seq for r in busy] == [98, 99, 100, 101, 102]  # calm took seqs 1 and 2
    assert [(r.from_state, r.to_state, r.reason) for r in busy[-2:]] == [
        ("closed", "forced_open", "admin_force_open"), ("forced_open", "closed", "admin_reset")]
    assert [r.seq for r in log.recent("calm")] == [1, 2]
    snapshot = log.snapshot()
    assert snapshot["last_seq"] == 102
    assert [len(v) for v in snapshot["providers"].values()] == [5, 2]  # type: ignore[attr-defined]


def test_download_host_is_kept_and_unknown_provider_gets_a_ring() -> None:
    """A download host's transition names the host; a provider not listed up front still gets a ring."""
    clock = FakeClock()
    log = TransitionLog([], clock=clock, wall=lambda: WALL, capacity=2)
    t = Transition("file-download", BreakerState.CLOSED, BreakerState.OPEN, "failure_rate", clock())
    for _ in range(3):
        log.record(t, "cdn.example:443")
    entries = log.recent("file-download")
    assert len(entries) == 2 and {e.host for e in entries} == {"cdn.example:443"}
    assert log.recent("nobody") == []


def test_capacity_must_be_positive() -> None:
    """A ring of zero would silently keep nothing: refused."""
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        TransitionLog(["p"], clock=FakeClock(), wall=lambda: WALL, capacity=0)


def test_iso_utc() -> None:
    """Epoch seconds are shown as UTC with milliseconds and a Z, like probe times."""
    assert iso_utc(WALL + 0.1234) == "2023-11-14T22:13:20.123Z"
