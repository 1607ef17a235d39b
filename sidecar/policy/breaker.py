"""A circuit breaker as a pure state machine: callers ask for a permit, then report the outcome.

Modelled on resilience4j's ``CircuitBreakerStateMachine``: the breaker never wraps the call, every
state change goes through one transition function checked against ``LEGAL_TRANSITIONS``, and the
clock (monotonic seconds) is injected so tests move time by hand. No I/O, no sleeping, no aiohttp.

Window granularity: the failure-rate rule counts calls in ``WINDOW_BUCKETS`` (60) buckets of
``monitoring_period / 60`` seconds (1 s for the default 60 s), so memory is fixed at any request
rate. The window spans between 59/60 of ``monitoring_period`` and all of it: a call is forgotten at
most one bucket early, never late. The consecutive-failure rule is exact: it keeps the timestamps of
the last ``failure_threshold`` failures.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

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


@dataclass(frozen=True, slots=True)
class Permit:
    """Proof that a call was admitted, stamped with the generation it was admitted in."""

    generation: int
    trial: bool
    started_at: float


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
        self._consecutive = 0
        self._failure_times: deque[float] = deque(maxlen=config.failure_threshold)
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
            return Permit(self._generation, False, self._clock())
        return self._acquire_guarded(self._clock())

    def _acquire_guarded(self, now: float) -> Permit | Rejection:
        """Not CLOSED: admit a trial if a slot is free, else say when to come back."""
        if self._state is BreakerState.OPEN:
            self._maybe_half_open(now)
        state = self._state
        if state is BreakerState.HALF_OPEN:
            if self._trials_in_flight < self.config.half_open_max_calls:
                self._trials_in_flight += 1
                return Permit(self._generation, True, now)
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
        self._count(failed, now)  # CLOSED or DISABLED, the other states that hand out permits
        if state is BreakerState.CLOSED:
            self._check_thresholds(failed, now)

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
            "consecutive_failures": self._consecutive,
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

    def _count(self, failed: bool, now: float) -> None:
        self._calls.add(now)
        if failed:
            self._failures.add(now)
            self._consecutive += 1
            self._failure_times.append(now)
        elif self._consecutive:
            self._consecutive = 0
            self._failure_times.clear()

    def _check_thresholds(self, failed: bool, now: float) -> None:
        """Checked after every call, as resilience4j does: a success may complete the window."""
        cfg = self.config
        times = self._failure_times
        full_run = failed and len(times) == cfg.failure_threshold
        if full_run and now - times[0] <= cfg.monitoring_period:
            self._open(now, "consecutive_failures")
            return
        if cfg.minimum_calls <= 0:
            return  # the rate rule is switched off
        calls = self._calls.total(now)
        if calls < cfg.minimum_calls:
            return
        if self._failures.total(now) / calls >= cfg.failure_rate_threshold:
            self._open(now, "failure_rate")

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
        self._consecutive = 0
        self._failure_times.clear()
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
        self._trials_in_flight = 0
        self._trial_successes = 0
        if target is BreakerState.CLOSED:
            self._clear_counts()
            self._open_duration = self.config.recovery_timeout
        if self._on_transition is not None:
            self._on_transition(Transition(self.name, source, target, reason, now))
