"""A circuit breaker as a pure state machine: callers ask for a permit, then report the outcome.

Modelled on resilience4j's ``CircuitBreakerStateMachine``: the breaker never wraps the call, every
state change goes through one transition function checked against ``LEGAL_TRANSITIONS``, and the
clock (monotonic seconds) is injected so tests move time by hand. No I/O, no sleeping, no aiohttp.

Window granularity: the failure-rate rule counts calls in ``WINDOW_BUCKETS`` (60) buckets of
``monitoring_period / 60`` seconds (1 s for the default 60 s), so memory is fixed at any request
rate. The window spans between 59/60 of ``monitoring_period`` and all of it: a call is forgotten at
most one bucket early, never late.

Under concurrency the order in which outcomes arrive is not the order of events at the provider:
a fast failure overtakes slower calls sent before it, and calls sent together that time out
together arrive as one burst. So both rules look past arrival order:

- Consecutive failures are counted in the order the calls were *sent* (each permit carries a
  sequence number). A run is a stretch of calls, adjacent in sending order, that all failed; an
  ignored outcome is transparent, and a call still in flight separates until it is answered. A run
  opens the breaker when its latest ``failure_threshold`` failures fell within
  ``monitoring_period`` and, while it was in flight, at least ``failure_rate_threshold`` of all
  the answers counted were failures. A run among mostly good answers (calls sent together that
  time out together while the provider answers everybody else) is left to the failure-rate rule.
  One call at a time, a run is "N failures in a row with no success between" and every answer in
  its flight is one of its own failures: the classic rule.
- The failure rate counts the calls still in flight as calls (not failures), so the failures
  that arrive first after a quiet spell or a reset do not make up a rate on their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import NamedTuple

from ..config import BreakerConfig
from .window import SlidingCounter

__all__ = [
    "LEGAL_TRANSITIONS",
    "WINDOW_BUCKETS",
    "BreakerState",
    "CircuitBreaker",
    "IllegalTransitionError",
    "Outcome",
    "Permit",
    "Rejection",
    "Transition",
]

WINDOW_BUCKETS = 60


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"  # 429, client-side limit, cancelled: frees a trial slot, counts nowhere


class Permit(NamedTuple):
    """Proof that a call was admitted: its generation, and its place in the sending order (a
    named tuple: one is made for every call)."""

    generation: int
    trial: bool
    started_at: float
    seq: int  # its place in the sending order (the consecutive-failure rule's order)


@dataclass(frozen=True, slots=True)
class Rejection:
    """No call may be made; ``retry_after`` is None when no time will help (forced open)."""

    state: BreakerState
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class Transition:
    provider: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float


class IllegalTransitionError(RuntimeError):
    """A state change outside ``LEGAL_TRANSITIONS``: always a bug in this module."""


_S = BreakerState
_AUTOMATIC: dict[tuple[BreakerState, BreakerState], set[str]] = {
    (_S.OPEN, _S.HALF_OPEN): {"recovery_timeout_elapsed"},
    (_S.HALF_OPEN, _S.CLOSED): {"trials_succeeded", "shared_closed"},
    # Following the fleet's shared record (``breaker.shared``): opened or closed elsewhere.
    (_S.CLOSED, _S.OPEN): {"consecutive_failures", "failure_rate", "shared_open"},
    (_S.HALF_OPEN, _S.OPEN): {"trial_failed", "shared_open"},
    (_S.OPEN, _S.CLOSED): {"shared_closed"},
}
_ADMIN = {
    _S.CLOSED: "admin_reset",
    _S.FORCED_OPEN: "admin_force_open",
    _S.DISABLED: "admin_disable",
}


def _legal_transitions() -> dict[tuple[BreakerState, BreakerState], frozenset[str]]:
    """The automatic edges, plus every admin action from every other state."""
    table = {edge: set(reasons) for edge, reasons in _AUTOMATIC.items()}
    for target, reason in _ADMIN.items():
        for source in BreakerState:
            if source is not target:
                table.setdefault((source, target), set()).add(reason)
    return {edge: frozenset(reasons) for edge, reasons in table.items()}


LEGAL_TRANSITIONS = _legal_transitions()
# Rejections that carry no time are shared, so the short-circuit path allocates nothing.
_HALF_OPEN_FULL = Rejection(_S.HALF_OPEN, 1.0)
_FORCED = Rejection(_S.FORCED_OPEN, None)


class _Run:
    """Calls ``lo..hi`` (sequence numbers), adjacent in sending order, none of them a success."""

    __slots__ = ("answers_before", "failures", "hi", "lo", "times")

    def __init__(
        self, lo: int, hi: int, failures: int, times: list[float], answers_before: tuple[int, int]
    ) -> None:
        self.lo = lo
        self.hi = hi
        self.failures = failures
        self.times = times  # record times of the run's latest failures, oldest first
        self.answers_before = answers_before  # (answers, failed answers) when ``lo`` was sent


class _SentOrderRuns:
    """The consecutive-failure rule's memory: runs of failures in the order calls were sent.

    Calls in flight are kept with the answer counts of the moment they were sent. A run is kept
    only while it may still grow (a neighbour in flight, or the next call not sent yet), so there
    are at most about twice as many runs as calls in flight.
    """

    __slots__ = ("_by_hi", "_by_lo", "_in_flight", "_keep", "_last_sent")

    def __init__(self, keep: int) -> None:
        self._keep = keep  # failure times kept per run: failure_threshold
        self._by_lo: dict[int, _Run] = {}
        self._by_hi: dict[int, _Run] = {}
        self._in_flight: dict[int, tuple[int, int]] = {}
        self._last_sent = 0

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def sent(self, seq: int, answers: tuple[int, int]) -> None:
        self._in_flight[seq] = answers
        self._last_sent = seq

    def success(self, seq: int) -> None:
        """A success separates: the runs on either side of it may stop growing."""
        if self._in_flight.pop(seq, None) is None:
            return
        for run in (self._by_hi.get(seq - 1), self._by_lo.get(seq + 1)):
            if run is not None and not self._may_grow(run):
                self._drop(run)

    def failure(self, seq: int, now: float) -> _Run | None:
        """Join the failure to its neighbours; the run it is now part of."""
        return self._join(seq, now)

    def ignored(self, seq: int) -> None:
        """Neither a failure nor a success: it only bridges the calls on either side."""
        self._join(seq, None)

    def longest(self) -> int:
        return max((r.failures for r in self._by_lo.values()), default=0)

    def clear(self) -> None:
        """Forget every run; calls still in flight keep their places in the sending order."""
        self._by_lo.clear()
        self._by_hi.clear()

    def forget_in_flight(self) -> None:
        """A new generation: the calls in flight will never be counted."""
        self._in_flight.clear()

    def _join(self, seq: int, failed_at: float | None) -> _Run | None:
        before = self._in_flight.pop(seq, None)
        if before is None:
            return None  # not a call of this generation, or recorded twice
        lo = hi = seq
        failures, times = (0, []) if failed_at is None else (1, [failed_at])
        left = self._by_hi.pop(seq - 1, None)
        if left is not None:
            del self._by_lo[left.lo]
            lo, before = left.lo, left.answers_before
            failures, times = failures + left.failures, times + left.times
        right = self._by_lo.pop(seq + 1, None)
        if right is not None:
            del self._by_hi[right.hi]
            hi, failures, times = right.hi, failures + right.failures, times + right.times
        run = _Run(lo, hi, failures, sorted(times)[-self._keep:], before)
        if self._may_grow(run):
            self._by_lo[lo] = self._by_hi[hi] = run
        return run

    def _may_grow(self, run: _Run) -> bool:
        """A neighbour still in flight, or the next call not sent yet."""
        after = run.hi + 1
        return after > self._last_sent or after in self._in_flight or run.lo - 1 in self._in_flight

    def _drop(self, run: _Run) -> None:
        del self._by_lo[run.lo], self._by_hi[run.hi]


class CircuitBreaker:
    """One provider's breaker. ``acquire()`` before each attempt, ``record()`` after it, always.

    A trial permit that is never recorded keeps its HALF_OPEN slot, so callers record in a
    ``finally`` (``Outcome.IGNORED`` for cancellations).
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float],
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._open_duration = config.recovery_timeout
        self._opened_count = 0
        self._seq = 0
        self._runs = _SentOrderRuns(config.failure_threshold)
        self._answers = 0  # outcomes counted while CLOSED (or DISABLED), ever
        self._failed_answers = 0
        self._calls = SlidingCounter(config.monitoring_period, WINDOW_BUCKETS)
        self._failures = SlidingCounter(config.monitoring_period, WINDOW_BUCKETS)
        self._trials_in_flight = 0
        self._trial_successes = 0
        self._total_successes = 0
        self._total_failures = 0
        self._total_rejected = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN:
            self._maybe_half_open(self._clock())
        return self._state

    def acquire(self) -> Permit | Rejection:
        state = self._state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            self._seq = seq = self._seq + 1
            self._runs.sent(seq, (self._answers, self._failed_answers))
            return Permit(self._generation, False, self._clock(), seq)
        return self._acquire_guarded(self._clock())

    def _acquire_guarded(self, now: float) -> Permit | Rejection:
        """Not CLOSED: admit a trial if a slot is free, else say when to come back."""
        if self._state is BreakerState.OPEN:
            self._maybe_half_open(now)
        state = self._state
        if state is BreakerState.HALF_OPEN:
            if self._trials_in_flight < self.config.half_open_max_calls:
                self._trials_in_flight += 1
                self._seq += 1
                return Permit(self._generation, True, now, self._seq)
            self._total_rejected += 1
            return _HALF_OPEN_FULL
        self._total_rejected += 1
        if state is BreakerState.OPEN:
            return Rejection(state, self._opened_at + self._open_duration - now)
        return _FORCED

    def record(self, permit: Permit, outcome: Outcome, duration: float | None = None) -> None:
        """Count an outcome; only a permit of the current generation may move the state."""
        current = permit.generation == self._generation
        if current and permit.trial and self._trials_in_flight > 0:
            self._trials_in_flight -= 1
        if outcome is Outcome.IGNORED:
            if current and not permit.trial:
                self._runs.ignored(permit.seq)
            return
        now = self._clock()
        failed = outcome is Outcome.FAILURE or self._is_slow(permit, duration, now)
        if failed:
            self._total_failures += 1
        else:
            self._total_successes += 1
        if not current:
            return  # admitted before the last transition: it says nothing about the new state
        state = self._state
        if state is BreakerState.HALF_OPEN:
            self._on_trial(failed, now)
            return
        run = self._count(permit.seq, failed, now)  # CLOSED or DISABLED: the others' permits
        if state is BreakerState.CLOSED:
            self._check_thresholds(run, now)

    @property
    def openings(self) -> int:
        """How many times this breaker has opened (followed openings included)."""
        return self._opened_count

    @property
    def open_duration(self) -> float:
        """The open time in force (grown by re-opens when ``max_recovery_timeout`` is set)."""
        return self._open_duration

    def follow_open(self, retry_after: float, open_for: float) -> None:
        """Follow a shared record that is open for ``open_for`` s, ``retry_after`` s of it still to
        run (0: due, trials allowed): this breaker is open until the same moment. Admin modes
        (forced open, disabled) are this sidecar's own and are left as they are."""
        now = self._clock()
        if self._state is BreakerState.OPEN:
            self._maybe_half_open(now)
        state = self._state
        if state is BreakerState.FORCED_OPEN or state is BreakerState.DISABLED:
            return
        opened_at = now + max(0.0, retry_after) - open_for
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and retry_after <= 0):
            self._opened_at, self._open_duration = opened_at, open_for  # the same opening
            return
        self._open_duration = open_for
        self._opened_at = opened_at
        self._opened_count += 1
        self._transition(BreakerState.OPEN, "shared_open", now)

    def follow_closed(self) -> None:
        """Follow a shared record that closed (its trials succeeded elsewhere, or an operator)."""
        if self._state is BreakerState.OPEN or self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.CLOSED, "shared_closed", self._clock())

    def reset(self) -> None:
        """Back to CLOSED with fresh counters (totals kept); a no-op transition is not reported."""
        if self._state is BreakerState.CLOSED:
            self._clear_counts()
        else:
            self._transition(BreakerState.CLOSED, "admin_reset", self._clock())

    def force_open(self) -> None:
        if self._state is not BreakerState.FORCED_OPEN:
            self._transition(BreakerState.FORCED_OPEN, "admin_force_open", self._clock())

    def disable(self) -> None:
        if self._state is not BreakerState.DISABLED:
            self._transition(BreakerState.DISABLED, "admin_disable", self._clock())

    def snapshot(self) -> dict[str, object]:
        """A JSON-able view for /admin and /health/detailed (seconds rounded to ms)."""
        now = self._clock()
        if self._state is BreakerState.OPEN:
            self._maybe_half_open(now)
        state = self._state
        calls = self._calls.total(now)
        failures = self._failures.total(now)
        retry_after = None
        if state is BreakerState.OPEN:
            retry_after = round(self._opened_at + self._open_duration - now, 3)
        return {
            "state": state.value,
            "consecutive_failures": self._runs.longest(),
            "window_calls": calls,
            "window_failures": failures,
            "failure_rate": round(failures / calls, 4) if calls else None,
            "half_open_in_flight": self._trials_in_flight,
            "half_open_successes": self._trial_successes,
            "current_recovery_timeout_seconds": round(self._open_duration, 3),
            "retry_after_seconds": retry_after,
            "opened_count": self._opened_count,
            "total_calls": self._total_successes + self._total_failures,
            "total_successes": self._total_successes,
            "total_failures": self._total_failures,
            "total_rejected": self._total_rejected,
            "config": dataclasses.asdict(self.config),
        }

    def _is_slow(self, permit: Permit, duration: float | None, now: float) -> bool:
        limit = self.config.slow_call_duration
        if limit is None:
            return False
        if duration is None:
            duration = now - permit.started_at
        return duration > limit

    def _count(self, seq: int, failed: bool, now: float) -> _Run | None:
        """Count the call in the window and the answers; a failure's run in sending order."""
        self._calls.add(now)
        self._answers += 1
        if failed:
            self._failures.add(now)
            self._failed_answers += 1
            return self._runs.failure(seq, now)
        self._runs.success(seq)
        return None

    def _check_thresholds(self, run: _Run | None, now: float) -> None:
        """Checked after every call, as resilience4j does: a success may complete the window."""
        cfg = self.config
        if run is not None and self._run_opens(run, now):
            self._open(now, "consecutive_failures")
            return
        if cfg.minimum_calls <= 0:
            return  # the rate rule is switched off
        calls = self._calls.total(now)
        if calls < cfg.minimum_calls:
            return
        # Calls still in flight are calls made, not failures (yet): fast failures that arrive
        # ahead of the slower calls sent with them do not make up a rate on their own.
        rate = self._failures.total(now) / (calls + self._runs.in_flight)
        if rate >= cfg.failure_rate_threshold:
            self._open(now, "failure_rate")

    def _run_opens(self, run: _Run, now: float) -> bool:
        """failure_threshold failures in a row (in sending order) within monitoring_period, while
        at least failure_rate_threshold of all answers failed: not a burst among good answers."""
        cfg = self.config
        if run.failures < cfg.failure_threshold or now - run.times[0] > cfg.monitoring_period:
            return False
        answers_before, failed_before = run.answers_before
        answers = self._answers - answers_before
        return self._failed_answers - failed_before >= cfg.failure_rate_threshold * answers

    def _on_trial(self, failed: bool, now: float) -> None:
        if failed:
            self._open_duration = self._grown_open_duration()
            self._open(now, "trial_failed")
            return
        self._trial_successes += 1
        if self._trial_successes >= self.config.success_threshold:
            self._transition(BreakerState.CLOSED, "trials_succeeded", now)

    def _grown_open_duration(self) -> float:
        """Each re-open straight from HALF_OPEN doubles the open time, up to the cap (if any)."""
        cfg = self.config
        if cfg.max_recovery_timeout is None:
            return cfg.recovery_timeout
        grown = min(self._open_duration * 2, cfg.max_recovery_timeout)
        return max(cfg.recovery_timeout, grown)

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._opened_count += 1
        self._transition(BreakerState.OPEN, reason, now)

    def _maybe_half_open(self, now: float) -> None:
        if now - self._opened_at >= self._open_duration:
            self._transition(BreakerState.HALF_OPEN, "recovery_timeout_elapsed", now)

    def _clear_counts(self) -> None:
        self._runs.clear()
        self._calls.clear()
        self._failures.clear()

    def _transition(self, target: BreakerState, reason: str, now: float) -> None:
        """The only place the state changes; a new generation orphans every permit in flight."""
        source = self._state
        if reason not in LEGAL_TRANSITIONS.get((source, target), ()):
            edge = f"{source.value} -> {target.value} ({reason})"
            raise IllegalTransitionError(f"{self.name}: {edge}")
        self._state = target
        self._generation += 1
        self._runs.forget_in_flight()  # their outcomes will not be counted
        self._trials_in_flight = 0
        self._trial_successes = 0
        if target is BreakerState.CLOSED:
            self._clear_counts()
            self._open_duration = self.config.recovery_timeout
        if self._on_transition is not None:
            self._on_transition(Transition(self.name, source, target, reason, now))
