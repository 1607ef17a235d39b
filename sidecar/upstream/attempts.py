"""The attempt loop: each attempt asks the breaker, is sent, classified, and maybe retried.

Breaker and retry sit *per attempt* (the original system wrapped a whole retry sequence in one
breaker call). A retry never starts once the breaker is open, the budget is spent, the wait would pass
the total deadline, or the request cannot be replayed; every response retried over is released.

The transport is one ``send`` callable (``transports``: the lean pool, or an aiohttp session): given
the seconds left for the attempt, it returns a response head or raises. What it did becomes an
``AttemptOutcome``, and ``verdict.classify`` (pure, one table) says what follows from it.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aiohttp

from ..config import RouteConfig
from ..errors import ErrorCode, RequestBodyError, SidecarError
from ..headers import RETRY_AFTER
from ..policy.breaker import BreakerState, CircuitBreaker, Outcome, Rejection
from ..policy.retry import RetryBudget, parse_retry_after, retry_delay
from .h1pool import ConnectFailed, PoolTimeout
from .observer import AttemptMetrics
from .verdict import AttemptOutcome, Ending, classify

__all__ = ["AttemptLoop", "Exchange", "ResponseHead", "Send", "Target"]

# A retried-over response whose body is at most this is read so its connection can be reused.
_DRAIN_LIMIT = 64 * 1024

# Everything else the transport raises: refused/reset/DNS/TLS, and malformed answers.
_CONNECT_ERRORS = (aiohttp.ClientError, OSError)
_OPEN_STATES = (BreakerState.OPEN, BreakerState.FORCED_OPEN)


class ResponseHead(Protocol):
    """What the loop needs of an answer: ``aiohttp.ClientResponse`` and ``H1Response`` are both one."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self) -> bytes: ...

    def release(self) -> object: ...

    def close(self) -> object: ...


R = TypeVar("R", bound=ResponseHead)
# The transport: given the seconds left for this attempt, the response head, or it raises.
Send = Callable[[float], Awaitable[R]]


class Target(Protocol):
    """What the loop needs of a provider (or of one download host): nothing of its transport."""

    breaker: CircuitBreaker
    budget: RetryBudget

    @property
    def metrics(self) -> AttemptMetrics: ...

    @property
    def name(self) -> str: ...


R_contra = TypeVar("R_contra", bound=ResponseHead, contravariant=True)


class AttemptGate(Protocol[R_contra]):
    """A say in each retry, and a look at each 429, given by the request's limits.

    ``before_retry`` runs after the wait and before the breaker is asked: False keeps the answer
    retried over and sends nothing more. ``answered`` is shown every 429 as it comes, before the
    loop looks at it (a provider's pause must hold back the retry and everyone else).
    """

    async def before_retry(self, remaining: float) -> bool: ...

    async def answered(self, response: R_contra) -> None: ...


@dataclass(slots=True)
class Exchange(Generic[R]):
    """The upstream's response to stream back, or the sidecar error to answer instead."""

    response: R | None
    error: SidecarError | None
    attempts: int
    sent: bool  # some attempt's request may have reached the provider (False only when sure not)


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

    async def run(
        self, target: Target, send: Send[R], *, route: RouteConfig, retryable: bool,
        gate: AttemptGate[R] | None = None, spent: float = 0.0,
    ) -> Exchange[R]:
        """Send through ``send`` under the target's breaker and the route's retry policy.

        ``retryable``: the method, key and route allow a retry and the body can be sent again.
        ``gate``: the request's limits, asked before each retry.
        ``spent``: seconds of ``timeouts.total`` already gone (waiting for a place in the limits).
        """
        clock = self._clock
        deadline = clock() + max(0.0, route.timeouts.total - spent)
        retry_cfg = route.retry
        max_attempts = retry_cfg.max_attempts if retryable else 1
        target.budget.record_first_attempt()
        attempts = 0
        sent = False
        # The answer retried over is held through the wait: if the breaker refuses the retry,
        # the client still gets the provider's last answer, not a sidecar error.
        held: tuple[R | None, SidecarError | None] | None = None
        while True:
            permit = target.breaker.acquire()
            if isinstance(permit, Rejection):
                if held is not None:
                    return _finish(*held, attempts, sent)
                target.metrics.short_circuited.inc()
                return Exchange(None, _circuit_open(target.name, permit), 0, sent=False)
            if held is not None and held[0] is not None:
                try:
                    await _release(held[0])
                except BaseException:  # cancelled while draining: never leak a trial slot
                    target.breaker.record(permit, Outcome.IGNORED)
                    raise
            attempts += 1
            timeout = min(route.timeouts.attempt, deadline - clock())
            try:
                response, outcome, detail = await self._send(send, timeout, gate)
            except BaseException:  # cancelled, or a bug: no verdict on the provider
                target.breaker.record(permit, Outcome.IGNORED)
                raise
            sent = sent or outcome.sent
            verdict = classify(outcome, failure_statuses=route.failure_statuses,
                               retry_statuses=retry_cfg.retry_statuses)
            metrics = target.metrics
            if verdict.timed:
                target.breaker.record(permit, verdict.breaker, outcome.elapsed)
                metrics.attempt_duration.observe(outcome.elapsed)
            else:
                target.breaker.record(permit, verdict.breaker)
            if verdict.result is not None:
                metrics.attempt[verdict.result].inc()
            error: SidecarError | None = None
            if isinstance(detail, RequestBodyError):
                error = detail.with_context(provider=target.name)
            elif verdict.error is not None:
                error = SidecarError(verdict.error, detail, provider=target.name)
            if attempts >= max_attempts or not verdict.retryable:
                return _finish(response, error, attempts, sent)
            retry_after = None
            if response is not None:  # a retryable status: it may say when to come back
                retry_after = parse_retry_after(response.headers.get(RETRY_AFTER), now=self._wall())
            delay = retry_delay(attempts, retry_cfg, self._rng, retry_after)
            if delay is None or not self._may_retry(target, route, delay, deadline):
                return _finish(response, error, attempts, sent)
            held = (response, error)
            try:
                await self._sleep(delay)
                go_on = gate is None or await gate.before_retry(deadline - clock())
            except BaseException:
                if response is not None:
                    response.release()
                raise
            if not go_on:
                return _finish(response, error, attempts, sent)
            target.metrics.retries.inc()

    async def _send(
        self, send: Send[R], seconds: float, gate: AttemptGate[R] | None
    ) -> tuple[R | None, AttemptOutcome, str | RequestBodyError]:
        """One send, timed: the answer or what went wrong, as an outcome, with the words for the
        sidecar error (the client's own error when its body failed)."""
        clock = self._clock
        t0 = clock()
        if seconds <= 0:  # the total deadline passed before this attempt could be sent
            return None, AttemptOutcome(Ending.TIMEOUT, sent=False), _no_response(seconds)
        try:
            response = await send(seconds)
            if gate is not None and response.status == 429:
                await _show_429(gate, response)
        except RequestBodyError as exc:
            return None, AttemptOutcome(Ending.REQUEST_BODY_ERROR, elapsed=clock() - t0), exc
        except PoolTimeout as exc:
            outcome = AttemptOutcome(Ending.POOL_TIMEOUT, elapsed=clock() - t0, sent=False)
            return None, outcome, str(exc)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            sent = not isinstance(exc, aiohttp.ConnectionTimeoutError)
            outcome = AttemptOutcome(Ending.TIMEOUT, elapsed=clock() - t0, sent=sent)
            return None, outcome, _no_response(seconds)
        except _CONNECT_ERRORS as exc:
            sent = not isinstance(exc, aiohttp.ClientConnectorError | ConnectFailed)
            outcome = AttemptOutcome(Ending.CONNECT_ERROR, elapsed=clock() - t0, sent=sent)
            return None, outcome, _describe(exc)
        return response, AttemptOutcome(Ending.RESPONSE, response.status, clock() - t0), ""

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


async def _show_429(gate: AttemptGate[R], response: R) -> None:
    try:
        await gate.answered(response)
    except BaseException:
        response.close()  # a body half read by the gate: the connection can't be reused
        raise


def _describe(exc: BaseException) -> str:
    """What went wrong, without echoing URLs (a download URL may carry a token in its path)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: {exc.status} {exc.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _no_response(timeout: float) -> str:
    return f"no response within {timeout:.3g}s"


def _finish(response: R | None, error: SidecarError | None, attempts: int, sent: bool) -> Exchange[R]:
    if error is not None:
        error = error.with_context(attempts=attempts)
    return Exchange(response, error, attempts, sent)


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
