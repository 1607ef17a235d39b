"""The attempt loop: each attempt asks the breaker, is sent, classified, and maybe retried.

Breaker and retry sit *per attempt* (the original system wrapped a whole retry sequence in one
breaker call). A retry never starts once the breaker is open, the budget is spent, the wait would pass
the total deadline, or the request cannot be replayed; every response retried over is released.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from ..config import RetryConfig, RouteConfig
from ..errors import ErrorCode, RequestBodyError, SidecarError
from ..headers import RETRY_AFTER
from ..policy.breaker import BreakerState, CircuitBreaker, Outcome, Permit, Rejection
from ..policy.retry import RetryBudget, parse_retry_after, retry_delay
from .h1pool import H1Pool, H1Response, PoolTimeout
from .observer import AttemptMetrics

Body = bytes | AsyncIterable[bytes] | None

# A retried-over response whose body is at most this is read so its connection can be reused.
_DRAIN_LIMIT = 64 * 1024

# Everything else the transport raises: refused/reset/DNS/TLS, and malformed answers.
_CONNECT_ERRORS = (aiohttp.ClientError, OSError)
_OPEN_STATES = (BreakerState.OPEN, BreakerState.FORCED_OPEN)

# The answer type of the transport: aiohttp's (downloads) or the lean pool's (proxied providers).
R = TypeVar("R", aiohttp.ClientResponse, H1Response)
# One send: given the seconds left for this attempt, the response head or an exception.
Send = Callable[[float], Awaitable[R]]


class Target(Protocol):
    """What the loop needs of a provider (or of one download host)."""

    breaker: CircuitBreaker
    budget: RetryBudget

    @property
    def metrics(self) -> AttemptMetrics: ...

    @property
    def name(self) -> str: ...


class SessionTarget(Target, Protocol):
    """A target sent to through an ``aiohttp`` session (one download host)."""

    @property
    def session(self) -> aiohttp.ClientSession: ...


class AttemptGate(Protocol):
    """A say in each retry and a look at each answer, given by the request's limits.

    ``before_retry`` runs after the wait and before the breaker is asked: False keeps the answer
    retried over and sends nothing more. ``answered`` sees every answer from the pool as it comes
    (it may read a small body, as long as the same bytes stay readable).
    """

    async def before_retry(self, remaining: float) -> bool: ...

    async def answered(self, response: H1Response) -> None: ...


@dataclass(slots=True)
class Outbound:
    method: str
    url: URL | None  # for the session; None when sent through a pool with ``target``
    headers: CIMultiDict[str]
    body: Body
    route: RouteConfig  # its retry policy, timeouts and failure statuses
    retryable: bool  # method/key/route allow it and the body can be sent again
    target: str = ""  # origin-form path and query, for a pool
    gate: AttemptGate | None = None  # the limits' say in retries and look at answers (pool only)


@dataclass(slots=True)
class Exchange(Generic[R]):
    """The upstream's response to stream back, or the sidecar error to answer instead."""

    response: R | None
    error: SidecarError | None
    attempts: int


class AttemptLoop:
    def __init__(
        self,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        wall: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._wall = wall

    async def run(self, target: SessionTarget, out: Outbound) -> Exchange[aiohttp.ClientResponse]:
        """Send through the target's ``aiohttp`` session."""
        session = target.session
        url = out.url
        assert url is not None, "a session request needs a URL"

        async def send(seconds: float) -> aiohttp.ClientResponse:
            async with asyncio.timeout(seconds):
                return await session.request(
                    out.method, url, headers=out.headers, data=out.body, allow_redirects=False
                )

        return await self._run(target, out, send)

    async def run_pooled(self, target: Target, pool: H1Pool, out: Outbound) -> Exchange[H1Response]:
        """Send through a lean connection pool (it enforces the attempt timeout itself)."""

        timeouts = out.route.timeouts

        def send(seconds: float) -> Awaitable[H1Response]:
            return pool.request(
                out.method, out.target, out.headers, out.body, seconds,
                connect_timeout=timeouts.connect, read_timeout=timeouts.attempt,
            )

        gate = out.gate
        if gate is None:
            return await self._run(target, out, send)

        async def send_through_gate(seconds: float) -> H1Response:
            response = await send(seconds)
            try:
                await gate.answered(response)
            except BaseException:
                response.close()
                raise
            return response

        return await self._run(target, out, send_through_gate)

    async def _run(self, target: Target, out: Outbound, send: Send[R]) -> Exchange[R]:
        clock = self._clock
        deadline = clock() + out.route.timeouts.total
        retry_cfg = out.route.retry
        max_attempts = retry_cfg.max_attempts if out.retryable else 1
        target.budget.record_first_attempt()
        attempts = 0
        # The answer retried over is held through the wait: if the breaker refuses the retry,
        # the client still gets the provider's last answer, not a sidecar error.
        held: tuple[R | None, SidecarError | None] | None = None
        while True:
            permit = target.breaker.acquire()
            if isinstance(permit, Rejection):
                if held is not None:
                    return _finish(*held, attempts)
                target.metrics.short_circuited.inc()
                return Exchange(None, _circuit_open(target.name, permit), 0)
            if held is not None and held[0] is not None:
                try:
                    await _release(held[0])
                except BaseException:  # cancelled while draining: never leak a trial slot
                    target.breaker.record(permit, Outcome.IGNORED)
                    raise
            attempts += 1
            response, error, retry_after = await self._attempt(
                target, out, permit, deadline - clock(), send
            )
            if attempts >= max_attempts or not _retry_wanted(response, retry_cfg):
                return _finish(response, error, attempts)
            delay = retry_delay(attempts, retry_cfg, self._rng, retry_after)
            if delay is None or not self._may_retry(target, out.route, delay, deadline):
                return _finish(response, error, attempts)
            held = (response, error)
            try:
                await self._sleep(delay)
                go_on = out.gate is None or await out.gate.before_retry(deadline - clock())
            except BaseException:
                if response is not None:
                    response.release()
                raise
            if not go_on:
                return _finish(response, error, attempts)
            target.metrics.retries.inc()

    async def _attempt(
        self, target: Target, out: Outbound, permit: Permit, remaining: float, send: Send[R]
    ) -> tuple[R | None, SidecarError | None, float | None]:
        policy = out.route
        metrics = target.metrics
        clock = self._clock
        t0 = clock()
        timeout = min(policy.timeouts.attempt, remaining)
        try:
            if timeout <= 0:
                raise TimeoutError
            response = await send(timeout)
        except RequestBodyError as exc:
            # The client's body failed (limit, cut off, stalled): no verdict on the provider.
            target.breaker.record(permit, Outcome.IGNORED)
            return None, exc.with_context(provider=target.name), None
        except PoolTimeout as exc:
            # Every pooled connection stayed busy: local saturation, nothing reached the provider.
            target.breaker.record(permit, Outcome.IGNORED)
            metrics.attempt["timeout"].inc()
            return None, SidecarError(ErrorCode.UPSTREAM_TIMEOUT, str(exc), provider=target.name), None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            elapsed = clock() - t0
            target.breaker.record(permit, Outcome.FAILURE, elapsed)
            metrics.attempt["timeout"].inc()
            metrics.attempt_duration.observe(elapsed)
            detail = f"no response within {timeout:.3g}s"
            return None, SidecarError(ErrorCode.UPSTREAM_TIMEOUT, detail, provider=target.name), None
        except _CONNECT_ERRORS as exc:
            elapsed = clock() - t0
            target.breaker.record(permit, Outcome.FAILURE, elapsed)
            metrics.attempt["connect_error"].inc()
            metrics.attempt_duration.observe(elapsed)
            error = SidecarError(ErrorCode.UPSTREAM_UNREACHABLE, _describe(exc), provider=target.name)
            return None, error, None
        except BaseException:
            target.breaker.record(permit, Outcome.IGNORED)
            raise
        elapsed = clock() - t0
        status = response.status
        if status in policy.failure_statuses:
            target.breaker.record(permit, Outcome.FAILURE, elapsed)
            metrics.attempt["failure"].inc()
        elif status == 429:
            target.breaker.record(permit, Outcome.IGNORED, elapsed)
            metrics.attempt["success"].inc()
        else:
            target.breaker.record(permit, Outcome.SUCCESS, elapsed)
            metrics.attempt["success"].inc()
        metrics.attempt_duration.observe(elapsed)
        retry_after = None
        if status in policy.retry.retry_statuses:
            retry_after = parse_retry_after(response.headers.get(RETRY_AFTER), now=self._wall())
        return response, None, retry_after

    def _may_retry(self, target: Target, route: RouteConfig, delay: float, deadline: float) -> bool:
        if target.breaker.state in _OPEN_STATES:
            return False
        # A retry must have time to do something after its wait: at least a connect or an attempt.
        useful = min(route.timeouts.attempt, route.timeouts.connect)
        if deadline - (self._clock() + delay) < useful:
            return False
        if not target.budget.try_spend():
            target.metrics.budget_exhausted.inc()
            return False
        return True


def _describe(exc: BaseException) -> str:
    """What went wrong, without echoing URLs (a download URL may carry a token in its path)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status} {exc.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _retry_wanted(response: R | None, retry_cfg: RetryConfig) -> bool:
    """Connection errors and timeouts are retryable; responses only with a retry status."""
    return response is None or response.status in retry_cfg.retry_statuses


def _finish(response: R | None, error: SidecarError | None, attempts: int) -> Exchange[R]:
    if error is not None:
        error = error.with_context(attempts=attempts)
    return Exchange(response, error, attempts)


def _circuit_open(provider: str, rejection: Rejection) -> SidecarError:
    state = rejection.state.value
    return SidecarError(
        ErrorCode.CIRCUIT_OPEN,
        f"circuit breaker for {provider} is {state}",
        provider=provider,
        retry_after=rejection.retry_after,
        extra={"state": state},
    )


async def _release(response: R) -> None:
    """Drop a response we retry over; read a small body first so its connection is reused."""
    try:
        length = response.content_length
        if length is not None and length <= _DRAIN_LIMIT:
            await response.read()
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    finally:
        response.release()
