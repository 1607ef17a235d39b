"""The circuit breaker: the original system's 11 tests as behaviours, then one test per old bug."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sidecar.config import BreakerConfig
from sidecar.policy.breaker import (
    LEGAL_TRANSITIONS,
    BreakerState,
    CircuitBreaker,
    Outcome,
    Permit,
    Rejection,
    Transition,
)
from sidecar.policy.window import SlidingCounter
from tests.support.fakes import FakeClock, seeded_rng

S = BreakerState
START = 1000.0
# The original test suite's breaker: 3 failures, 1 s recovery, 5 s window, 2 successes to close.
ORIGINAL = BreakerConfig(
    failure_threshold=3, recovery_timeout=1.0, monitoring_period=5.0, success_threshold=2
)
# Only the rate rule can open this one.
RATE_ONLY = BreakerConfig(
    failure_threshold=1000, monitoring_period=60.0, failure_rate_threshold=0.5, minimum_calls=10
)


class Rig:
    """A breaker on a fake clock, with every transition it emits collected in order."""

    def __init__(self, config: BreakerConfig = ORIGINAL) -> None:
        self.clock = FakeClock(START)
        self.events: list[Transition] = []
        self.breaker = CircuitBreaker(
            "test-service", config, clock=self.clock, on_transition=self.events.append
        )

    def permit(self) -> Permit:
        got = self.breaker.acquire()
        assert isinstance(got, Permit), got
        return got

    def call(self, outcome: Outcome, times: int = 1, duration: float | None = None) -> None:
        for _ in range(times):
            self.breaker.record(self.permit(), outcome, duration)

    def fail(self, times: int = 1) -> None:
        self.call(Outcome.FAILURE, times)

    def succeed(self, times: int = 1) -> None:
        self.call(Outcome.SUCCESS, times)

    def stat(self, key: str) -> object:
        return self.breaker.snapshot()[key]

    def open_it(self) -> None:
        self.fail(self.breaker.config.failure_threshold)
        assert self.breaker.state is S.OPEN


def t(source: S, target: S, reason: str, at: float) -> Transition:
    return Transition("test-service", source, target, reason, at)


@pytest.fixture
def rig() -> Rig:
    return Rig()


# --- the original system's 11 tests, as behaviours of the new breaker -----------------------


def test_starts_closed_with_empty_counters(rig: Rig) -> None:
    """A new breaker is CLOSED, has counted nothing and has emitted no transition."""
    assert rig.breaker.state is S.CLOSED
    assert rig.stat("consecutive_failures") == 0
    assert rig.stat("half_open_successes") == 0
    assert rig.stat("total_calls") == 0
    assert rig.events == []


def test_success_when_closed_is_admitted_and_counted(rig: Rig) -> None:
    """A successful call goes through CLOSED and is counted once in totals and the window."""
    rig.succeed()
    assert rig.breaker.state is S.CLOSED
    assert (rig.stat("total_calls"), rig.stat("total_successes")) == (1, 1)
    assert rig.stat("window_calls") == 1


def test_success_resets_the_failure_run(rig: Rig) -> None:
    """A success between failures starts the consecutive-failure count again."""
    rig.fail()
    assert rig.stat("consecutive_failures") == 1
    rig.succeed()
    assert rig.stat("consecutive_failures") == 0
    rig.fail(2)
    assert rig.breaker.state is S.CLOSED


def test_failures_below_threshold_stay_closed(rig: Rig) -> None:
    """Two failures against a threshold of three leave the breaker CLOSED."""
    rig.fail(2)
    assert rig.breaker.state is S.CLOSED
    assert (rig.stat("consecutive_failures"), rig.stat("total_failures")) == (2, 2)
    assert rig.events == []


def test_threshold_failures_open_the_breaker(rig: Rig) -> None:
    """The third consecutive failure opens it, and that is reported as one transition."""
    rig.fail(3)
    assert rig.events == [t(S.CLOSED, S.OPEN, "consecutive_failures", START)]
    assert rig.stat("consecutive_failures") == 3
    assert rig.stat("opened_count") == 1


def test_open_breaker_rejects_without_admitting_a_call(rig: Rig) -> None:
    """While OPEN, acquire returns a Rejection saying when trials start, not a Permit."""
    rig.open_it()
    assert rig.breaker.acquire() == Rejection(S.OPEN, 1.0)
    assert rig.stat("total_rejected") == 1
    assert rig.stat("total_calls") == 3


def test_recovery_timeout_moves_to_half_open(rig: Rig) -> None:
    """Once recovery_timeout has passed the breaker is HALF_OPEN; one success is not enough."""
    rig.open_it()
    rig.clock.advance(1.0)
    assert rig.breaker.state is S.HALF_OPEN
    rig.succeed()
    assert rig.breaker.state is S.HALF_OPEN
    assert rig.stat("half_open_successes") == 1
    assert rig.events == [
        t(S.CLOSED, S.OPEN, "consecutive_failures", START),
        t(S.OPEN, S.HALF_OPEN, "recovery_timeout_elapsed", START + 1.0),
    ]


def test_success_threshold_trials_close_it(rig: Rig) -> None:
    """Two consecutive trial successes close the breaker with fresh counters."""
    rig.open_it()
    rig.clock.advance(1.0)
    rig.succeed(2)
    assert rig.breaker.state is S.CLOSED
    assert rig.stat("consecutive_failures") == 0
    assert rig.stat("window_calls") == 0
    assert [e.reason for e in rig.events] == [
        "consecutive_failures",
        "recovery_timeout_elapsed",
        "trials_succeeded",
    ]


def test_trial_failure_reopens(rig: Rig) -> None:
    """A failed trial sends the breaker straight back to OPEN."""
    rig.open_it()
    rig.clock.advance(1.0)
    rig.fail()
    assert rig.breaker.state is S.OPEN
    assert rig.events[-1] == t(S.HALF_OPEN, S.OPEN, "trial_failed", START + 1.0)
    assert rig.stat("opened_count") == 2


def test_statistics_track_every_outcome(rig: Rig) -> None:
    """Totals count every recorded call; the run of failures reflects only the latest calls."""
    rig.succeed()
    rig.fail()
    rig.succeed()
    snap = rig.breaker.snapshot()
    assert (snap["total_calls"], snap["total_successes"], snap["total_failures"]) == (3, 2, 1)
    assert (snap["window_calls"], snap["window_failures"], snap["failure_rate"]) == (3, 1, 0.3333)
    assert snap["consecutive_failures"] == 0


def test_reset_returns_to_closed_with_fresh_counters(rig: Rig) -> None:
    """reset() closes an open breaker, clears its counters and keeps the lifetime totals."""
    rig.open_it()
    rig.breaker.reset()
    assert rig.breaker.state is S.CLOSED
    assert rig.events[-1] == t(S.OPEN, S.CLOSED, "admin_reset", START)
    assert (rig.stat("consecutive_failures"), rig.stat("window_calls")) == (0, 0)
    assert rig.stat("total_failures") == 3
    rig.fail(2)
    assert rig.breaker.state is S.CLOSED


# --- regressions: one per bug of the original breaker ----------------------------------------


def test_failures_spread_wider_than_monitoring_period_do_not_open(rig: Rig) -> None:
    """Three failures spanning more than the 5 s window don't open it; three within it do."""
    rig.fail()
    rig.clock.advance(3.0)
    rig.fail()
    rig.clock.advance(3.0)
    rig.fail()
    assert rig.breaker.state is S.CLOSED
    rig.clock.advance(1.0)
    rig.fail()  # the last three now span 4 s
    assert rig.events == [t(S.CLOSED, S.OPEN, "consecutive_failures", START + 7.0)]


def test_half_open_admits_only_max_calls_trials_at_once() -> None:
    """HALF_OPEN hands out half_open_max_calls trial permits; the rest are told to retry in 1 s."""
    rig = Rig(BreakerConfig(failure_threshold=1, recovery_timeout=1.0, half_open_max_calls=2))
    rig.open_it()
    rig.clock.advance(1.0)
    first, second = rig.permit(), rig.permit()
    assert first.trial and second.trial
    assert rig.breaker.acquire() == Rejection(S.HALF_OPEN, 1.0)
    assert rig.stat("half_open_in_flight") == 2
    rig.breaker.record(first, Outcome.SUCCESS)
    assert rig.permit().trial


def test_late_failure_from_before_opening_does_not_extend_open_period(rig: Rig) -> None:
    """A call admitted while CLOSED that fails after the breaker opened changes nothing."""
    late = rig.permit()
    rig.open_it()
    rig.clock.advance(0.5)
    rig.breaker.record(late, Outcome.FAILURE)
    assert rig.breaker.acquire() == Rejection(S.OPEN, 0.5)
    rig.clock.advance(0.5)
    assert rig.breaker.state is S.HALF_OPEN
    assert len(rig.events) == 2
    assert rig.stat("total_failures") == 4


def test_late_closed_success_is_not_a_trial(rig: Rig) -> None:
    """A CLOSED-era success landing in HALF_OPEN neither counts as a trial nor frees a slot."""
    late = rig.permit()
    rig.open_it()
    rig.clock.advance(1.0)
    trial = rig.permit()
    rig.breaker.record(late, Outcome.SUCCESS)
    assert rig.stat("half_open_successes") == 0
    assert rig.stat("half_open_in_flight") == 1
    rig.breaker.record(trial, Outcome.SUCCESS)
    assert rig.stat("half_open_successes") == 1


def test_trial_outcome_after_reopening_is_ignored() -> None:
    """When one trial re-opens the breaker, a sibling trial's late success doesn't close it."""
    rig = Rig(BreakerConfig(failure_threshold=1, success_threshold=1, half_open_max_calls=2))
    rig.open_it()
    rig.clock.advance(30.0)
    first, second = rig.permit(), rig.permit()
    rig.breaker.record(first, Outcome.FAILURE)
    rig.breaker.record(second, Outcome.SUCCESS)
    assert rig.breaker.state is S.OPEN
    assert [e.reason for e in rig.events][-1] == "trial_failed"


def test_failure_rate_opens_it() -> None:
    """Half the calls in the window failing, with minimum_calls reached, opens it."""
    rig = Rig(RATE_ONLY)
    for _ in range(4):
        rig.succeed()
        rig.fail()
    rig.succeed()
    assert rig.breaker.state is S.CLOSED  # 4 of 9: too few calls and too low a rate
    rig.fail()
    assert rig.events == [t(S.CLOSED, S.OPEN, "failure_rate", START)]


def test_failure_rate_forgets_calls_older_than_the_window() -> None:
    """Failures that slid out of monitoring_period no longer weigh on the rate."""
    rig = Rig(RATE_ONLY)
    rig.fail(9)
    rig.clock.advance(61.0)
    rig.succeed(9)
    rig.fail()
    assert rig.breaker.state is S.CLOSED
    assert (rig.stat("window_calls"), rig.stat("window_failures")) == (10, 1)


def test_minimum_calls_zero_disables_the_rate_rule() -> None:
    """With minimum_calls 0 even a 50 % failure rate over many calls never opens it."""
    rig = Rig(BreakerConfig(failure_threshold=1000, failure_rate_threshold=0.5, minimum_calls=0))
    for _ in range(100):
        rig.fail()
        rig.succeed()
    assert rig.breaker.state is S.CLOSED
    assert rig.events == []


def test_open_time_doubles_up_to_the_cap_and_returns_to_base_on_close() -> None:
    """Each trial failure doubles the open time up to max_recovery_timeout; closing restores it."""
    rig = Rig(BreakerConfig(failure_threshold=1, recovery_timeout=1.0, max_recovery_timeout=3.0))
    rig.open_it()
    seen = []
    for _ in range(3):
        seen.append(rig.stat("current_recovery_timeout_seconds"))
        rig.clock.advance(rig.stat("retry_after_seconds"))  # type: ignore[arg-type]
        rig.fail()
    assert seen == [1.0, 2.0, 3.0]
    assert rig.breaker.acquire() == Rejection(S.OPEN, 3.0)
    rig.clock.advance(3.0)
    rig.succeed(2)
    rig.fail()
    assert rig.breaker.acquire() == Rejection(S.OPEN, 1.0)


def test_open_time_stays_at_recovery_timeout_without_a_cap(rig: Rig) -> None:
    """Without max_recovery_timeout every re-open lasts exactly recovery_timeout."""
    rig.open_it()
    rig.clock.advance(1.0)
    rig.fail()
    assert rig.breaker.acquire() == Rejection(S.OPEN, 1.0)


def test_forced_open_rejects_until_reset(rig: Rig) -> None:
    """force_open() rejects with no retry time, whatever the clock does, until reset()."""
    rig.breaker.force_open()
    rig.clock.advance(3600.0)
    assert rig.breaker.acquire() == Rejection(S.FORCED_OPEN, None)
    assert rig.stat("retry_after_seconds") is None
    rig.breaker.reset()
    assert rig.events == [
        t(S.CLOSED, S.FORCED_OPEN, "admin_force_open", START),
        t(S.FORCED_OPEN, S.CLOSED, "admin_reset", START + 3600.0),
    ]


def test_disabled_admits_everything_and_never_trips(rig: Rig) -> None:
    """A disabled breaker lets every call through and still counts them."""
    rig.breaker.disable()
    rig.fail(10)
    assert rig.breaker.state is S.DISABLED
    assert (rig.stat("total_failures"), rig.stat("window_failures")) == (10, 10)
    rig.breaker.reset()
    assert [(e.to_state, e.reason) for e in rig.events] == [
        (S.DISABLED, "admin_disable"),
        (S.CLOSED, "admin_reset"),
    ]


def test_admin_actions_already_in_effect_emit_nothing(rig: Rig) -> None:
    """Resetting a closed breaker or repeating force_open/disable is not a state transition."""
    rig.fail(2)
    rig.breaker.reset()
    assert rig.stat("consecutive_failures") == 0
    rig.breaker.force_open()
    rig.breaker.force_open()
    rig.breaker.disable()
    rig.breaker.disable()
    assert [e.reason for e in rig.events] == ["admin_force_open", "admin_disable"]


def test_slow_successes_count_as_failures() -> None:
    """A success slower than slow_call_duration is a failure; exactly at the limit it is not."""
    rig = Rig(BreakerConfig(failure_threshold=2, slow_call_duration=2.0))
    rig.call(Outcome.SUCCESS, duration=2.0)
    assert rig.stat("window_failures") == 0
    rig.call(Outcome.SUCCESS, duration=2.5)
    permit = rig.permit()
    rig.clock.advance(3.0)
    rig.breaker.record(permit, Outcome.SUCCESS)  # no duration given: measured from the permit
    assert rig.events == [t(S.CLOSED, S.OPEN, "consecutive_failures", START + 3.0)]


def test_ignored_outcomes_count_nowhere(rig: Rig) -> None:
    """IGNORED neither breaks a failure run nor counts as a call."""
    rig.fail(2)
    rig.call(Outcome.IGNORED, times=5)
    assert rig.stat("total_calls") == 2
    rig.fail()
    assert rig.breaker.state is S.OPEN


def test_ignored_trial_frees_its_slot(rig: Rig) -> None:
    """A cancelled trial gives its HALF_OPEN slot back without counting as a success."""
    rig.open_it()
    rig.clock.advance(1.0)
    trial = rig.permit()
    assert isinstance(rig.breaker.acquire(), Rejection)
    rig.breaker.record(trial, Outcome.IGNORED)
    assert rig.stat("half_open_successes") == 0
    assert rig.permit().trial


def test_retry_after_counts_down_to_the_trials(rig: Rig) -> None:
    """OPEN rejections and the snapshot say how long until trials; other states say null."""
    assert rig.stat("retry_after_seconds") is None
    rig.open_it()
    rig.clock.advance(0.25)
    assert rig.breaker.acquire() == Rejection(S.OPEN, 0.75)
    assert rig.stat("retry_after_seconds") == 0.75
    rig.clock.advance(0.75)
    assert rig.stat("retry_after_seconds") is None


def test_snapshot_has_the_design_keys_and_is_json() -> None:
    """snapshot() returns exactly the documented keys and survives json.dumps."""
    rig = Rig()
    rig.fail()
    snap = rig.breaker.snapshot()
    assert set(snap) == {
        "state", "consecutive_failures", "window_calls", "window_failures", "failure_rate",
        "half_open_in_flight", "half_open_successes", "current_recovery_timeout_seconds",
        "retry_after_seconds", "opened_count", "total_calls", "total_successes",
        "total_failures", "total_rejected", "config",
    }  # fmt: skip
    assert json.loads(json.dumps(snap))["config"]["failure_threshold"] == 3
    assert snap["state"] == "closed"


def test_transition_callback_sees_the_new_state(rig: Rig) -> None:
    """on_transition runs after the change, so a listener reading the breaker sees the new state."""
    seen: list[object] = []
    breaker = CircuitBreaker(
        "x", ORIGINAL, clock=rig.clock, on_transition=lambda _: seen.append(breaker.snapshot())
    )
    for _ in range(3):
        permit = breaker.acquire()
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.FAILURE)
    assert seen[0]["state"] == "open"  # type: ignore[index]
    assert seen[0]["retry_after_seconds"] == 1.0  # type: ignore[index]


def test_legal_transition_table() -> None:
    """Automatic edges follow the state diagram; admins may move any state to their target."""
    assert (S.CLOSED, S.HALF_OPEN) not in LEGAL_TRANSITIONS
    assert LEGAL_TRANSITIONS[(S.OPEN, S.CLOSED)] == {"admin_reset", "shared_closed"}
    assert LEGAL_TRANSITIONS[(S.CLOSED, S.OPEN)] == {"consecutive_failures", "failure_rate",
                                                     "shared_open"}
    assert LEGAL_TRANSITIONS[(S.FORCED_OPEN, S.DISABLED)] == {"admin_disable"}
    assert (S.FORCED_OPEN, S.FORCED_OPEN) not in LEGAL_TRANSITIONS


def test_sliding_counter_granularity() -> None:
    """Events are kept for at least period minus one bucket and forgotten after the full period."""
    counter = SlidingCounter(period=60.0, buckets=60)
    counter.add(1000.0, 5)
    assert counter.total(1058.9) == 5
    assert counter.total(1060.0) == 0
    counter.add(2000.5)
    assert counter.total(1_000_000.0) == 0  # a long idle empties it in bounded work


# --- concurrency: runs in the order calls were sent, not the order they were answered --------


def sent(rig: Rig, n: int) -> list[Permit]:
    """``n`` calls sent one after the other, all still in flight."""
    return [rig.permit() for _ in range(n)]


def test_failures_answered_before_calls_sent_ahead_of_them_are_not_a_run(rig: Rig) -> None:
    """Four failures interleaved with four slower successes in sending order never make a run."""
    calls = sent(rig, 8)  # success, failure, success, failure, ...
    for permit in calls[1::2]:
        rig.breaker.record(permit, Outcome.FAILURE)  # the fast failures arrive first
    assert rig.breaker.state is S.CLOSED
    for permit in calls[0::2]:
        rig.breaker.record(permit, Outcome.SUCCESS)
    assert rig.events == []
    assert rig.stat("total_failures") == 4


def test_a_call_in_flight_joins_the_run_once_it_fails(rig: Rig) -> None:
    """Failures either side of a call still in flight form a run of three when it fails too."""
    first, middle, last = sent(rig, 3)
    rig.breaker.record(first, Outcome.FAILURE)
    rig.breaker.record(last, Outcome.FAILURE)
    assert rig.breaker.state is S.CLOSED
    assert rig.stat("consecutive_failures") == 1
    rig.breaker.record(middle, Outcome.FAILURE)
    assert rig.events == [t(S.CLOSED, S.OPEN, "consecutive_failures", START)]


def test_ignored_call_in_flight_bridges_the_run(rig: Rig) -> None:
    """A 429 between failures in sending order neither breaks nor lengthens the run."""
    first, bridge, second, third = sent(rig, 4)
    for permit in (first, second):
        rig.breaker.record(permit, Outcome.FAILURE)
    rig.breaker.record(bridge, Outcome.IGNORED)
    assert rig.stat("consecutive_failures") == 2
    rig.breaker.record(third, Outcome.FAILURE)
    assert rig.breaker.state is S.OPEN


def test_calls_timing_out_together_among_good_answers_do_not_open(rig: Rig) -> None:
    """Three calls sent together that time out while later calls succeed are left to the rate."""
    stuck = sent(rig, 3)
    rig.clock.advance(0.1)
    rig.succeed(10)  # the provider answers everybody sent after them
    rig.clock.advance(4.9)
    for permit in stuck:
        rig.breaker.record(permit, Outcome.FAILURE)
    assert rig.events == []
    # Had the later calls failed as well, the same three would have opened it.
    other = Rig()
    stuck = sent(other, 3)
    other.fail(2)
    other.succeed()
    for permit in stuck:
        other.breaker.record(permit, Outcome.FAILURE)
    assert [e.reason for e in other.events] == ["consecutive_failures"]


def test_failure_rate_counts_calls_in_flight_as_calls() -> None:
    """Ten fast failures among thirty calls in flight are a third, not all, of the calls made."""
    rig = Rig(RATE_ONLY)
    calls = sent(rig, 30)
    for permit in calls[:10]:
        rig.breaker.record(permit, Outcome.FAILURE)
    assert rig.breaker.state is S.CLOSED
    for permit in calls[10:15]:
        rig.breaker.record(permit, Outcome.FAILURE)  # 15 of 30: half the calls made
    assert [e.reason for e in rig.events] == ["failure_rate"]


# The load-with-faults scenario's breaker: 8 in a row, a 10 s window, half failing over 20 calls.
LOAD = BreakerConfig(failure_threshold=8, monitoring_period=10.0, recovery_timeout=1.0,
                     success_threshold=1)
RATE = 2000.0  # calls per second
BURST = 200  # calls in flight at once


@dataclass(frozen=True, slots=True)
class Call:
    sent: float
    latency: float
    failed: bool


Stream = Callable[[random.Random, float, float, float], list[Call]]


def interleaved(rng: random.Random, start: float, seconds: float, p: float) -> list[Call]:
    """Calls at random instants, answered after 1-200 ms whatever their outcome."""
    calls, at = [], start
    while at < start + seconds:
        at += rng.expovariate(RATE)
        calls.append(Call(at, rng.uniform(0.001, 0.2), rng.random() < p))
    return calls


def clustered(rng: random.Random, start: float, seconds: float, p: float) -> list[Call]:
    """Bursts of 200 calls sent at once: failures answered in 1 ms, successes in 50-100 ms."""
    calls, at = [], start
    while at < start + seconds:
        for _ in range(BURST):
            failed = rng.random() < p
            calls.append(Call(at, 0.001 if failed else rng.uniform(0.05, 0.1), failed))
        at += BURST / RATE
    return calls


def timeout_bursts(rng: random.Random, start: float, seconds: float, p: float) -> list[Call]:
    """``interleaved``, plus every 2 s forty calls sent at once (new connections to a provider
    slow to accept them) that all time out at 5 s."""
    calls = interleaved(rng, start, seconds, p)
    for at in range(int(start) + 1, int(start + seconds) - 5, 2):
        calls += [Call(at + i * 1e-6, 5.0, True) for i in range(40)]
    return calls


def replay(rig: Rig, calls: list[Call]) -> list[bool]:
    """Send and answer the calls on the fake clock in time order; the outcomes in arrival order."""
    events = [(c.sent, 0, i) for i, c in enumerate(calls)]
    events += [(c.sent + c.latency, 1, i) for i, c in enumerate(calls)]
    heapq.heapify(events)
    permits: dict[int, Permit] = {}
    arrived = []
    while events:
        at, answer, i = heapq.heappop(events)
        rig.clock.advance(max(0.0, at - rig.clock.now))
        if not answer:
            got = rig.breaker.acquire()
            if isinstance(got, Permit):
                permits[i] = got
        elif i in permits:
            arrived.append(calls[i].failed)
            rig.breaker.record(permits.pop(i), Outcome.FAILURE if calls[i].failed else Outcome.SUCCESS)
    return arrived


def longest_run(outcomes: list[bool]) -> int:
    best = run = 0
    for failed in outcomes:
        run = run + 1 if failed else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("stream", [interleaved, clustered, timeout_bursts])
def test_steady_12_percent_failures_at_a_high_rate_never_open(stream: Stream) -> None:
    """20 s at 2000 calls/s with 12% failures: never opened, though arrival order shows long runs."""
    rig = Rig(LOAD)
    rig.clock.now = 0.0
    arrived = replay(rig, stream(seeded_rng(), 0.0, 20.0, 0.12))
    assert rig.events == []
    assert rig.stat("total_calls") == len(arrived) > 35_000
    if stream is not interleaved:
        # Counted as they arrive, these runs would have opened it (8 in a row) again and again.
        assert longest_run(arrived) >= 3 * LOAD.failure_threshold


@pytest.mark.parametrize("stream", [interleaved, clustered])
@pytest.mark.parametrize("failing", [1.0, 0.6])
def test_outage_at_a_high_rate_opens_promptly(stream: Stream, failing: float) -> None:
    """After 10 s at 12%, 100% or 60% failures open it within half a second, and not before."""
    rig = Rig(LOAD)
    rig.clock.now = 0.0
    rng = seeded_rng()
    replay(rig, stream(rng, 0.0, 10.0, 0.12) + stream(rng, 10.0, 2.0, failing))
    opened = [e for e in rig.events if e.from_state is S.CLOSED]
    assert opened and 10.0 <= opened[0].at < 10.5


# --- following the fleet's shared record (breaker.shared) ---------------------------------------

def _shared_breaker(clock: FakeClock, seen: list[Transition]) -> CircuitBreaker:
    config = BreakerConfig(failure_threshold=2, minimum_calls=0, recovery_timeout=10.0,
                           success_threshold=2)
    return CircuitBreaker("p", config, clock=clock, on_transition=seen.append)


def test_following_an_open_record_opens_until_the_same_moment() -> None:
    """A record open for 20 s with 15 s left: rejected for 15 s (Retry-After 15), then one trial."""
    clock, seen = FakeClock(), []
    breaker = _shared_breaker(clock, seen)
    breaker.follow_open(15.0, 20.0)
    rejection = breaker.acquire()
    assert isinstance(rejection, Rejection) and rejection.retry_after == 15.0
    assert [(t.to_state, t.reason) for t in seen] == [(BreakerState.OPEN, "shared_open")]
    assert breaker.open_duration == 20.0 and breaker.openings == 1
    clock.advance(15.0)
    permit = breaker.acquire()
    assert isinstance(permit, Permit) and permit.trial


def test_following_the_same_opening_again_changes_nothing() -> None:
    """A second look at the same record realigns the times without a new transition."""
    clock, seen = FakeClock(), []
    breaker = _shared_breaker(clock, seen)
    breaker.follow_open(10.0, 10.0)
    clock.advance(4.0)
    breaker.follow_open(6.0, 10.0)
    assert len(seen) == 1 and breaker.openings == 1


def test_a_due_record_makes_a_closed_breaker_half_open() -> None:
    """A sidecar that never saw the opening joins at half-open when the record is already due."""
    clock, seen = FakeClock(), []
    breaker = _shared_breaker(clock, seen)
    breaker.follow_open(0.0, 10.0)
    assert breaker.state is BreakerState.HALF_OPEN


def test_following_a_closed_record_closes_and_restores_the_open_time() -> None:
    """Trials that succeeded elsewhere close this breaker too; an old permit can no longer move it."""
    clock, seen = FakeClock(), []
    breaker = _shared_breaker(clock, seen)
    old = breaker.acquire()
    breaker.follow_open(5.0, 40.0)
    breaker.follow_closed()
    assert breaker.state is BreakerState.CLOSED and breaker.open_duration == 10.0
    assert isinstance(old, Permit)
    breaker.record(old, Outcome.FAILURE)
    breaker.record(old, Outcome.FAILURE)
    assert breaker.state is BreakerState.CLOSED
    assert [t.reason for t in seen] == ["shared_open", "shared_closed"]


def test_admin_modes_are_not_overridden_by_the_record() -> None:
    """A forced-open or disabled breaker stays so whatever the fleet's record says."""
    clock, seen = FakeClock(), []
    breaker = _shared_breaker(clock, seen)
    breaker.disable()
    breaker.follow_open(5.0, 10.0)
    assert breaker.state is BreakerState.DISABLED
    breaker.force_open()
    breaker.follow_closed()
    assert breaker.state is BreakerState.FORCED_OPEN
