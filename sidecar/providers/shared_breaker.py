"""``breaker.shared: true``: a provider's breakers on every sidecar follow one record in Redis.

Each sidecar keeps counting its own calls in its ``CircuitBreaker``. Around each request:

- before it, the sidecar publishes an opening of its own that the fleet has not heard of yet
  (``open`` never extends a record already open), then reads the record (at most every 250 ms) and
  follows it: open for the same time, or closed when trials succeeded elsewhere. When the record is
  due (half-open), the request must win the fleet's one trial lease, else it is short-circuited as
  for a full half-open breaker;
- after it, a trial's verdict is published (closing the record after ``success_threshold``
  successes, or re-opening it with the open time doubled) and followed at once.

Redis unreachable: the local breaker alone decides (logged, counted), and Redis is asked again
only after a backoff (1 s doubling to 30 s), so requests never pay its timeout one after another;
the record is followed again from its first answer. One request never switches between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import RouteConfig
from ..fleet.breaker import SharedBreakers, SharedBreakerView, SharedState, Trial
from ..fleet.wiring import FleetState
from ..limits import FleetUnavailable
from ..logs import get_logger
from ..policy.breaker import BreakerState, CircuitBreaker, Rejection
from .registry import ProviderRegistry
from .runtime import ProxyRuntime

__all__ = ["READ_MAX_AGE", "Go", "SharedBreaker", "shared_breakers"]

READ_MAX_AGE = 0.25
"""Seconds a read of the record is reused: an opening elsewhere is followed within this."""
_MIN_BACKOFF, _MAX_BACKOFF = 1.0, 30.0
_TRIAL_FULL = Rejection(BreakerState.HALF_OPEN, 1.0)


@dataclass(frozen=True, slots=True)
class Go:
    """Go ahead; ``trial`` is set when this request runs the fleet's trial call."""

    trial: Trial | None = None


class SharedBreaker:
    """One provider's link between its local breaker and the fleet's record."""

    def __init__(
        self,
        provider: str,
        breaker: CircuitBreaker,
        store: SharedBreakers,
        *,
        clock: Callable[[], float],
        on_reachable: Callable[[bool], None],
    ) -> None:
        self.provider = provider
        self.breaker = breaker
        self._store = store
        self._clock = clock
        self._on_reachable = on_reachable
        self._published = breaker.openings  # openings the fleet knows of (or that came from it)
        self._backoff = _MIN_BACKOFF
        self._retry_at = 0.0
        self._down = False
        self._log = get_logger("breaker")

    async def before(self, route: RouteConfig) -> Go | Rejection:
        """Sync with the record; a ``Rejection`` short-circuits the request."""
        if self._down and self._clock() < self._retry_at:
            return Go()
        try:
            await self._publish_opening()
            view = await self._store.read(self.provider, max_age=READ_MAX_AGE)
            self._reachable()
            self._follow(view)
            if view.state is not SharedState.HALF_OPEN:
                return Go()
            if self.breaker.state is not BreakerState.HALF_OPEN:
                return Go()  # forced open or disabled here: the local rule answers
            won = await self._store.try_trial(self.provider, lease=route.timeouts.attempt)
        except FleetUnavailable as error:
            self._unreachable(error)
            return Go()
        if isinstance(won, Trial):
            return Go(won)
        self._follow(won)
        return _TRIAL_FULL

    async def after(self, go: Go, success: bool | None) -> None:
        """Publish an opening this request caused and, for a trial, its verdict (None: no verdict)."""
        if self._down and self._clock() < self._retry_at:
            return
        try:
            await self._publish_opening()
            if go.trial is not None and success is not None:
                cfg = self.breaker.config
                view = await self._store.report_trial(
                    self.provider, go.trial, success=success, success_threshold=cfg.success_threshold,
                    recovery_timeout=cfg.recovery_timeout, max_recovery_timeout=cfg.max_recovery_timeout,
                )
                self._follow(view)
        except FleetUnavailable as error:
            self._unreachable(error)
            return
        self._reachable()

    async def reset(self) -> bool:
        """An operator's reset for the whole fleet: the shared record closes too, so the next request
        does not follow it back open. False when the fleet's store can't be reached."""
        try:
            view = await self._store.reset(self.provider)
        except FleetUnavailable as error:
            self._unreachable(error)
            return False
        self._reachable()
        self._follow(view)
        return True

    async def _publish_opening(self) -> None:
        breaker = self.breaker
        if breaker.openings == self._published or breaker.state is not BreakerState.OPEN:
            self._published = breaker.openings
            return
        view = await self._store.open(self.provider, breaker.open_duration)
        self._published = breaker.openings
        self._follow(view)

    def _follow(self, view: SharedBreakerView) -> None:
        breaker = self.breaker
        if view.state is SharedState.CLOSED:
            breaker.follow_closed()
        else:
            breaker.follow_open(view.retry_after, view.open_for)
        self._published = breaker.openings  # an opening that came from the record is not ours

    def _unreachable(self, error: FleetUnavailable) -> None:
        if not self._down:
            self._down = True
            self._backoff = _MIN_BACKOFF
            self._on_reachable(False)
            self._log.warning("shared_breaker_unavailable", provider=self.provider, error=str(error))
        else:
            self._backoff = min(_MAX_BACKOFF, self._backoff * 2)
        self._retry_at = self._clock() + self._backoff

    def _reachable(self) -> None:
        if self._down:
            self._down = False
            self._on_reachable(True)
            self._log.warning("shared_breaker_restored", provider=self.provider)


def shared_breakers(
    registry: ProviderRegistry,
    fleet: FleetState,
    *,
    clock: Callable[[], float],
    on_reachable: Callable[[bool], None],
) -> dict[str, SharedBreaker]:
    """A link for each proxied provider with ``breaker.shared`` (none without the fleet's Redis)."""
    store = fleet.breakers
    if store is None:
        return {}
    return {
        name: SharedBreaker(name, rt.breaker, store, clock=clock, on_reachable=on_reachable)
        for name, rt in registry.providers.items()
        if isinstance(rt, ProxyRuntime) and rt.config.breaker.shared
    }
