"""The verdict on one attempt, row by row, and the attempt loop driven through a fake ``send``."""

from __future__ import annotations

import dataclasses
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import sidecar
from sidecar.config import BreakerConfig, RetryConfig, RouteConfig, Timeouts
from sidecar.errors import ErrorCode, RequestBodyError
from sidecar.policy.breaker import CircuitBreaker, Outcome
from sidecar.policy.retry import RetryBudget
from sidecar.upstream.attempts import AttemptLoop
from sidecar.upstream.h1pool import PoolTimeout
from sidecar.upstream.verdict import AttemptOutcome, Ending, Verdict, classify

from ..support.fakes import FakeClock, seeded_rng
from ..support.layers import scan

FAILURES = frozenset({500, 502, 503, 504})
RETRIES = frozenset({429, 500, 502, 503, 504})
UNREACHABLE, TIMEOUT = ErrorCode.UPSTREAM_UNREACHABLE, ErrorCode.UPSTREAM_TIMEOUT
FAIL, IGNORE, OK = Outcome.FAILURE, Outcome.IGNORED, Outcome.SUCCESS

TABLE = [
    # outcome, then the verdict: breaker, attempt result, error, retryable, timed
    pytest.param(AttemptOutcome(Ending.CONNECT_ERROR),
                 FAIL, "connect_error", UNREACHABLE, True, True, id="connect-error"),
    pytest.param(AttemptOutcome(Ending.CONNECT_ERROR, sent=False),
                 FAIL, "connect_error", UNREACHABLE, True, True, id="connect-refused-unsent"),
    pytest.param(AttemptOutcome(Ending.TIMEOUT),
                 FAIL, "timeout", TIMEOUT, True, True, id="timeout"),
    pytest.param(AttemptOutcome(Ending.TIMEOUT, sent=False),
                 FAIL, "timeout", TIMEOUT, True, True, id="connect-timeout-unsent"),
    pytest.param(AttemptOutcome(Ending.POOL_TIMEOUT, sent=False),
                 IGNORE, "timeout", TIMEOUT, True, False, id="pool-timeout"),
    pytest.param(AttemptOutcome(Ending.REQUEST_BODY_ERROR),
                 IGNORE, None, None, False, False, id="request-body-error"),
    pytest.param(AttemptOutcome(Ending.RESPONSE, 503),
                 FAIL, "failure", None, True, True, id="failure-status"),
    pytest.param(AttemptOutcome(Ending.RESPONSE, 501),
                 OK, "success", None, False, True, id="unlisted-5xx"),
    pytest.param(AttemptOutcome(Ending.RESPONSE, 429),
                 IGNORE, "success", None, True, True, id="429"),
    pytest.param(AttemptOutcome(Ending.RESPONSE, 200),
                 OK, "success", None, False, True, id="success"),
    pytest.param(AttemptOutcome(Ending.RESPONSE, 404),
                 OK, "success", None, False, True, id="client-error-status"),
]


@pytest.mark.parametrize(("outcome", "breaker", "result", "error", "retryable", "timed"), TABLE)
def test_each_row_of_the_table(
    outcome: AttemptOutcome, breaker: Outcome, result: str | None, error: ErrorCode | None,
    retryable: bool, timed: bool,
) -> None:
    """Each way an attempt can end gets its breaker outcome, counter, error code, retry and timing."""
    verdict = classify(outcome, failure_statuses=FAILURES, retry_statuses=RETRIES)
    assert verdict == Verdict(breaker, result, error, retryable, timed)


def test_a_listed_429_is_a_failure_and_an_unlisted_503_is_not() -> None:
    """The route's failure_statuses decide first; retry_statuses only decide the retry."""
    verdict = classify(AttemptOutcome(Ending.RESPONSE, 429), failure_statuses=frozenset({429}),
                       retry_statuses=frozenset())
    assert (verdict.breaker, verdict.result, verdict.retryable) == (FAIL, "failure", False)
    verdict = classify(AttemptOutcome(Ending.RESPONSE, 503), failure_statuses=frozenset(),
                       retry_statuses=frozenset({503}))
    assert (verdict.breaker, verdict.result, verdict.retryable) == (OK, "success", True)


def test_a_response_without_a_status_is_refused() -> None:
    """A response outcome must carry its status."""
    with pytest.raises(ValueError):
        classify(AttemptOutcome(Ending.RESPONSE), failure_statuses=FAILURES, retry_statuses=RETRIES)


def test_the_verdict_module_is_pure() -> None:
    """It imports no aiohttp, asyncio, clock or I/O: only the sidecar's errors, config and policy."""
    module = scan(Path(sidecar.__file__).resolve().parent)["sidecar.upstream.verdict"]
    allowed = {"sidecar", "enum", "dataclasses", "typing", "__future__"}
    assert {m.split(".")[0] for m in module.imports} <= allowed
    assert not {m for m in module.imports if m.startswith(("sidecar.upstream.", "sidecar.providers"))}


# -- the loop through a fake transport ------------------------------------------------------------


class _Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class _Observed:
    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, amount: float) -> None:
        self.values.append(amount)


@dataclasses.dataclass
class _Metrics:
    attempt: dict[str, _Count] = dataclasses.field(
        default_factory=lambda: {k: _Count() for k in ("success", "failure", "timeout", "connect_error")})
    attempt_duration: _Observed = dataclasses.field(default_factory=_Observed)
    retries: _Count = dataclasses.field(default_factory=_Count)
    budget_exhausted: _Count = dataclasses.field(default_factory=_Count)
    short_circuited: _Count = dataclasses.field(default_factory=_Count)


@dataclasses.dataclass
class _Target:
    name: str
    breaker: CircuitBreaker
    budget: RetryBudget
    metrics: _Metrics


class _Response:
    def __init__(self, status: int) -> None:
        self.status = status
        self.headers = CIMultiDictProxy(CIMultiDict[str]())
        self.content_length = 0
        self.released = False

    async def read(self) -> bytes:
        return b""

    def release(self) -> None:
        self.released = True


def _setup(clock: FakeClock) -> tuple[AttemptLoop, _Target]:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    loop = AttemptLoop(clock=clock, sleep=sleep, rng=seeded_rng(), wall=lambda: 0.0)
    breaker = CircuitBreaker("p", BreakerConfig(failure_threshold=100, minimum_calls=1000), clock=clock)
    return loop, _Target("p", breaker, RetryBudget(0.5, 10.0, clock=clock), _Metrics())


ROUTE = RouteConfig(name="r", path="", retry=RetryConfig(max_attempts=3, base_delay=0.01, max_delay=0.1),
                    timeouts=Timeouts(connect=1.0, attempt=5.0, total=30.0))


def _script(clock: FakeClock, *steps: BaseException | int) -> tuple[Callable[[float], Awaitable[_Response]],
                                                                      list[float]]:
    """A transport that answers each send with the next step (raise it, or a response with it as
    status), one second after it was called; it records the seconds it was given."""
    given: list[float] = []
    queue = list(steps)

    async def send(seconds: float) -> _Response:
        given.append(seconds)
        clock.advance(1.0)
        step = queue.pop(0)
        if isinstance(step, BaseException):
            raise step
        return _Response(step)

    return send, given


async def test_the_loop_applies_each_verdict_once() -> None:
    """Pool timeout, connect error, then 200: counters, durations and the sent flag follow the table."""
    clock = FakeClock()
    loop, target = _setup(clock)
    send, given = _script(clock, PoolTimeout("no connection"), aiohttp.ClientOSError(104, "reset"), 200)
    exchange = await loop.run(target, send, route=ROUTE, retryable=True)
    assert exchange.response is not None and exchange.response.status == 200
    assert (exchange.attempts, exchange.error, exchange.sent) == (3, None, True)
    counts = Tally({k: c.value for k, c in target.metrics.attempt.items()})
    assert counts == Tally({"timeout": 1, "connect_error": 1, "success": 1})
    assert target.metrics.attempt_duration.values == [1.0, 1.0]  # the pool timeout is not timed
    assert target.metrics.retries.value == 2
    assert given[0] == 5.0  # each send gets the attempt timeout (the total is far)


async def test_nothing_sent_is_reported_as_not_sent() -> None:
    """A request that never left the sidecar (pool timeouts only) comes back with sent=False."""
    clock = FakeClock()
    loop, target = _setup(clock)
    send, _ = _script(clock, *(PoolTimeout("no connection in time") for _ in range(3)))
    exchange = await loop.run(target, send, route=ROUTE, retryable=True)
    assert exchange.error is not None and exchange.error.code is ErrorCode.UPSTREAM_TIMEOUT
    assert "no connection in time" in exchange.error.detail
    assert (exchange.attempts, exchange.sent) == (3, False)


async def test_a_request_body_error_is_the_clients_and_never_retried() -> None:
    """The client's body failing ends the loop with the client's own error, nothing counted."""
    clock = FakeClock()
    loop, target = _setup(clock)
    send, given = _script(clock, RequestBodyError(ErrorCode.BODY_TOO_LARGE, "too big"), 200)
    exchange = await loop.run(target, send, route=ROUTE, retryable=True)
    assert exchange.error is not None and exchange.error.code is ErrorCode.BODY_TOO_LARGE
    assert exchange.error.provider == "p" and exchange.attempts == 1 and len(given) == 1
    assert all(c.value == 0 for c in target.metrics.attempt.values())


async def test_a_retried_over_answer_is_released() -> None:
    """A 503 retried over is released before the next attempt; the last answer is returned."""
    clock = FakeClock()
    loop, target = _setup(clock)
    first = _Response(503)
    answers = [first, _Response(200)]

    async def send(seconds: float) -> _Response:
        return answers.pop(0)

    exchange = await loop.run(target, send, route=ROUTE, retryable=True)
    assert first.released and exchange.response is not None and exchange.response.status == 200
    assert target.metrics.attempt["failure"].value == 1
