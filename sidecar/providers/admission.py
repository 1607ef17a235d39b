"""Rate limits, concurrency and provider pauses on the request path (``rate_limit``, a provider's 429).

Every proxied request is admitted before its attempt loop: it asks the limiter for a place in its
provider's budget and, when its route has a ``rate_limit`` of its own, in the route's budget too.
It waits in arrival order up to ``min(max_wait, time left of timeouts.total)``, else the client gets
429 ``rate_limited`` with an honest ``Retry-After``, nothing was sent (``X-Sidecar-Attempts: 0``) and
the breaker heard nothing of it.

The place is held for the whole request: every attempt, the waits between them and the streamed
response body; it goes back when the answer is relayed or the client goes away. A retry is a call
too: it books its own start in the rate budgets (no second concurrency place) and is not sent when
none comes in time; the client then gets the answer retried over, as when the breaker refuses a retry.

Every 429 the provider answers is read (``read_429``, its body too when it is at most 64 KiB, and
the client still gets the same bytes): a pause it announces holds back every caller sharing the
limiter (the fleet's, through Redis), and a "concurrency full" one lowers the provider's concurrency
(AIMD) when the request's place is given back.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp

from ..config import ProviderConfig, RateLimitConfig, RouteConfig
from ..errors import ErrorCode, SidecarError
from ..fleet.wiring import FleetState
from ..limits import Completion, Limiter, RateLimited, Slot
from ..logs import get_logger
from ..policy.admission import PROVIDER_SCOPE, Reason, Scope
from ..policy.pause import MAX_INSPECTED_BODY, read_429
from ..upstream.aiohttp_client_compat import stream_of
from ..upstream.h1pool import H1Response

__all__ = ["LimitMetrics", "LimitMetricsSource", "Limits", "ProviderLimits", "Ticket"]

_BODY_ERRORS = (OSError, TimeoutError, aiohttp.ClientError, asyncio.IncompleteReadError)


class LimitMetrics(Protocol):
    """One provider's limit metrics (``ops.metrics`` provides them)."""

    def refused(self, reason: str) -> None:
        """Count a request answered ``rate_limited`` for ``reason``."""

    def waited(self, seconds: float) -> None:
        """Observe how long a request waited for its place (refused ones too)."""

    def at_once(self) -> None:
        """Observe a wait of 0: the request had its place at once."""

    def export_paused_until(self, current: Callable[[], float]) -> None:
        """Read the end of the provider's pause (Unix time, 0 when none) at each scrape."""


class LimitMetricsSource(Protocol):
    def limits(self, provider: str) -> LimitMetrics: ...


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one route's calls ask the limiter for."""

    scopes: tuple[Scope, ...]
    retry_scopes: tuple[Scope, ...]  # the same rates, no concurrency: a retry keeps its place
    max_wait: float
    max_pause: float
    open: bool  # no rate and no concurrency anywhere: only a pause or a lowering can hold it back


def _plan(provider: RateLimitConfig, route: RouteConfig | None) -> _Plan:
    own = Scope.of(PROVIDER_SCOPE, provider)
    scopes = [own]
    limit = provider
    if route is not None and route.rate_limit is not None:
        limit = route.rate_limit
        scopes.append(Scope.of(limit.budget or route.name, limit))
    retry_scopes = tuple(dataclasses.replace(s, concurrency=None) for s in scopes)
    open_ = all(s.limits_nothing for s in scopes)
    return _Plan(tuple(scopes), retry_scopes, limit.max_wait, limit.max_pause, open_)


class ProviderLimits:
    """One provider's plans by route, its metrics, and what this sidecar knows of its state."""

    def __init__(self, config: ProviderConfig, metrics: LimitMetrics, wall: Callable[[], float]) -> None:
        self.name = config.name
        self.config = config.rate_limit
        own = config.rate_limit or RateLimitConfig()
        self.plans = {route.name: _plan(own, route) for route in config.routes}
        self.other = _plan(own, None)
        self.budgets: dict[str, RateLimitConfig] = {PROVIDER_SCOPE: own}
        for route in config.routes:
            if route.rate_limit is not None:
                self.budgets[route.rate_limit.budget or route.name] = route.rate_limit
        self.metrics = metrics
        self.in_flight = 0  # this sidecar's requests holding a place
        self.paused_until = 0.0  # Unix time: the end of the last pause this sidecar heard of
        self.wall = wall
        metrics.export_paused_until(self._paused_gauge)

    def plan(self, route: str) -> _Plan:
        return self.plans.get(route, self.other)

    def heard_of_pause(self, seconds_left: float) -> None:
        self.paused_until = max(self.paused_until, self.wall() + seconds_left)

    def _paused_gauge(self) -> float:
        until = self.paused_until
        return until if until > self.wall() else 0.0


class Ticket:
    """A request's place: the attempt loop's gate, given back when the request is done.

    ``slot`` is the limiter's booking; None for a call let through with nothing booked
    (``Limiter.pass_open``, its admission time in ``admitted_at``). ``waited``: seconds between
    asking for the place and getting it.
    """

    __slots__ = (
        "_admitted_at", "_concurrency_429", "_final", "_limiter", "_plan", "_provider", "_slot",
        "waited",
    )

    def __init__(
        self, limiter: Limiter, provider: ProviderLimits, plan: _Plan, slot: Slot | None,
        admitted_at: int = 0,
    ) -> None:
        self._limiter = limiter
        self._provider = provider
        self._plan = plan
        self._slot = slot
        self._admitted_at = admitted_at
        self.waited = 0.0 if slot is None else slot.waited
        self._concurrency_429 = False  # the last 429 said the account's concurrency is full
        self._final: int | None = None

    def finish(self, status: int | None) -> None:
        """The status the client gets from the provider (None: a sidecar error, no answer)."""
        self._final = status

    async def before_retry(self, remaining: float) -> bool:
        plan = self._plan
        wait = max(0.0, min(plan.max_wait, remaining))
        try:
            slot = await self._limiter.acquire(self._provider.name, plan.retry_scopes, max_wait=wait)
        except RateLimited as refused:
            if refused.reason is Reason.PROVIDER_PAUSE:
                self._provider.heard_of_pause(refused.retry_after)
            return False
        slot.release_soon(Completion.ABANDONED)  # only its rate booking mattered
        return True

    async def answered(self, response: H1Response) -> None:
        if response.status != 429:
            return
        body = await _peek_body(response)
        throttle = read_429(response.headers, body, now=self._provider.wall(), max_pause=self._plan.max_pause)
        self._concurrency_429 = throttle.concurrency
        log = get_logger("limits")
        if throttle.concurrency:
            log.warning("provider_concurrency_full", provider=self._provider.name)
        elif throttle.pause is not None:
            left = await self._limiter.pause(self._provider.name, throttle.pause)
            self._provider.heard_of_pause(left)
            log.warning("provider_paused", provider=self._provider.name, seconds=round(left, 3))

    def close(self) -> None:
        """Give the place back, reporting how the request ended (once the answer is relayed).

        Nothing waits for the fleet's Redis to hear of it: the release goes with the loop turn's
        others, and one that fails is logged (the lease then expires on its own)."""
        status = self._final
        if status is None or (status == 429 and not self._concurrency_429):
            completion = Completion.ABANDONED  # no answer, or a 429 that says nothing of concurrency
        elif status != 429:
            completion = Completion.OK
        else:
            completion = Completion.CONCURRENCY_LIMITED
        provider = self._provider
        try:
            slot = self._slot
            if slot is None:
                self._limiter.release_open(provider.name, self._admitted_at, completion)
            else:
                slot.release_soon(completion)
        finally:
            provider.in_flight -= 1


class Limits:
    """Admission for every proxied provider, over one limiter (local, or the fleet's with fallback)."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        fleet: FleetState,
        *,
        metrics: LimitMetricsSource,
        wall: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.limiter = fleet.limiter
        self._wall = wall
        self.providers = {
            p.name: ProviderLimits(p, metrics.limits(p.name), wall)
            for p in providers if p.kind == "proxy"
        }

    def admit_at_once(self, provider: str, route: RouteConfig) -> Ticket | None:
        """The request's place when it can be given at once, without a coroutine (the limiter
        decides in memory); None when not: then ``admit`` decides, as if this had not been asked."""
        limits = self.providers[provider]
        plan = limits.plans.get(route.name, limits.other)  # limits.plan(), inlined: every request
        limiter = self.limiter
        slot: Slot | None = None
        # the common case: no limit configured, let through with nothing booked
        admitted_at = limiter.pass_open(provider) if plan.open else None
        if admitted_at is None:
            slot = limiter.acquire_at_once(provider, plan.scopes)
            if slot is None:
                return None
        limits.metrics.at_once()
        limits.in_flight += 1
        return Ticket(limiter, limits, plan, slot, admitted_at or 0)

    async def admit(self, provider: str, route: RouteConfig, time_left: float) -> Ticket:
        """A place for one request, within its wait; raises ``SidecarError`` (429 rate_limited).
        The request path asks ``admit_at_once`` first."""
        limits = self.providers[provider]
        plan = limits.plan(route.name)
        wait = max(0.0, min(plan.max_wait, time_left))
        try:
            slot = await self.limiter.acquire(provider, plan.scopes, max_wait=wait)
        except RateLimited as refused:
            limits.metrics.refused(refused.reason.value)
            limits.metrics.waited(refused.waited)
            if refused.reason is Reason.PROVIDER_PAUSE:
                limits.heard_of_pause(refused.retry_after)
            raise _rate_limited(provider, refused) from None
        limits.metrics.waited(slot.waited)
        limits.in_flight += 1
        return Ticket(self.limiter, limits, plan, slot)

    async def aclose(self) -> None:
        """Stop the limiter and close the fleet's Redis (at shutdown, once requests are done)."""
        await self.fleet.aclose()

    async def usage(self, provider: str) -> dict[str, object] | None:
        """The provider's limits as /health/detailed shows them (None: a download provider).

        ``budgets`` lists the provider's own (``*``) and each route budget: its configured terms,
        the slots held now (fleet-wide on the fleet limiter) and the seconds until a start would be
        allowed. ``in_flight`` counts this sidecar's requests holding a place.
        """
        limits = self.providers.get(provider)
        if limits is None:
            return None
        fleet = self.fleet
        budgets: dict[str, object] = {}
        for name, limit in limits.budgets.items():
            held, wait = await fleet.usage(provider, Scope.of(name, limit))
            budgets[name] = {
                "requests_per_minute": limit.requests_per_minute, "burst": limit.burst,
                "concurrency": limit.concurrency, "in_use": held,
                "next_start_in_seconds": round(wait, 3),
            }
        left = await self.limiter.paused_for(provider)
        pause = None
        if left > 0:
            until = datetime.fromtimestamp(self._wall() + left, UTC)
            pause = {"reason": "provider_429", "seconds_left": round(left, 3),
                     "until": until.isoformat(timespec="milliseconds")}
        return {
            "backend": fleet.mode,
            "in_flight": limits.in_flight,
            "lowered_concurrency": await fleet.lowered(provider),
            "pause": pause,
            "budgets": budgets,
        }


_WHY = {
    Reason.RATE: "the rate limit allows no start within the wait",
    Reason.CONCURRENCY: "the concurrency limit stayed full for the whole wait",
    Reason.PROVIDER_PAUSE: "the provider asked for a pause (its own 429) that outlasts the wait",
}


def _rate_limited(provider: str, refused: RateLimited) -> SidecarError:
    return SidecarError(
        ErrorCode.RATE_LIMITED,
        f"{provider}: {_WHY[refused.reason]}",
        provider=provider,
        retry_after=refused.retry_after,
        extra={"reason": refused.reason.value},
    )


async def _peek_body(response: H1Response) -> bytes:
    """A 429's body when it is small (``Content-Length`` at most 64 KiB), else nothing.

    What was read is put back as a fresh stream, so the client gets the same bytes.
    """
    length = response.content_length
    if length is None or not 0 < length <= MAX_INSPECTED_BODY:
        return b""
    try:
        body = await response.content.read()
    except _BODY_ERRORS:
        return b""  # the stream is broken anyway: relaying it fails the same way
    response.content = stream_of(body, MAX_INSPECTED_BODY)
    return body
