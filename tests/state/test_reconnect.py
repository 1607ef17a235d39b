"""The reconnection gate: fail fast during an outage, one probe at a time, doubling waits."""

from __future__ import annotations

import pytest

from sidecar.state.reconnect import ReconnectGate, reconnect_delay
from tests.support.fakes import FakeClock


def test_the_delay_doubles_up_to_the_cap() -> None:
    """base * 2^(n-1), capped; huge failure counts don't overflow."""
    assert [reconnect_delay(n, 0.05, 2.0) for n in (1, 2, 3, 6, 7, 10_000)] == [0.05, 0.1, 0.2, 1.6, 2.0, 2.0]


def test_calls_go_ahead_while_healthy() -> None:
    """No failure yet: every call is admitted."""
    gate = ReconnectGate(clock=FakeClock())
    assert [gate.admit() for _ in range(3)] == [None, None, None]


def test_after_a_failure_calls_wait_then_one_probe_goes() -> None:
    """A failure closes the gate for base seconds; then exactly one probe passes at a time."""
    clock = FakeClock()
    gate = ReconnectGate(base=0.1, cap=1.0, clock=clock)
    gate.failed()
    assert gate.admit() == pytest.approx(0.1)
    clock.advance(0.1)
    assert gate.admit() is None  # the probe
    assert gate.admit() == 0.0  # others fail fast while it runs
    gate.failed()
    assert gate.admit() == pytest.approx(0.2)  # the wait doubled
    clock.advance(0.2)
    assert gate.admit() is None
    gate.succeeded()
    assert [gate.admit(), gate.admit()] == [None, None]
    assert gate.failures == 0


def test_failures_of_calls_already_under_way_do_not_stack() -> None:
    """Ten calls that were in flight when the outage began count as one failure."""
    clock = FakeClock()
    gate = ReconnectGate(base=0.1, cap=5.0, clock=clock)
    for _ in range(10):
        gate.failed()
    assert gate.failures == 1
    assert gate.admit() == pytest.approx(0.1)


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    """A cancelled probe gives no verdict but must not keep the gate shut."""
    clock = FakeClock()
    gate = ReconnectGate(base=0.1, clock=clock)
    gate.failed()
    clock.advance(0.1)
    assert gate.admit() is None
    gate.abandoned()
    assert gate.admit() is None
