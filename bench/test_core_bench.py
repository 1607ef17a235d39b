"""Micro-benchmarks of the pure core, which runs once per upstream attempt on the hot path.

Run with ``.venv/bin/python -m pytest bench/test_core_bench.py`` (not part of ``make test``).
pytest-benchmark reports the time per call; expect a few hundred ns to a few microseconds.
"""

from __future__ import annotations

import random
import time

from multidict import CIMultiDict, CIMultiDictProxy
from pytest_benchmark.fixture import BenchmarkFixture

from sidecar.config import BreakerConfig, RetryConfig, RouteConfig
from sidecar.headers import REQUEST_DROP, filter_headers
from sidecar.policy.breaker import CircuitBreaker, Outcome, Permit
from sidecar.policy.retry import RetryBudget, retry_delay
from sidecar.policy.routes import RouteTable
from sidecar.upstream.h1pool import H1Pool

ROUTES = [
    RouteConfig(name="create_prediction", method="POST", path="/v1/predictions"),
    RouteConfig(name="get_prediction", method="GET", path="/v1/predictions/{id}"),
    RouteConfig(name="cancel_prediction", method="POST", path="/v1/predictions/{id}/cancel"),
    RouteConfig(name="list_models", method="GET", path="/v1/models"),
    RouteConfig(name="get_model", method="GET", path="/v1/models/{owner}/{name}"),
    RouteConfig(name="create_model", method="POST", path="/v1/models"),
    RouteConfig(
        name="create_training",
        method="POST",
        path="/v1/models/{owner}/{name}/versions/{version}/trainings",
    ),
    RouteConfig(name="get_training", method="GET", path="/v1/trainings/{id}"),
    RouteConfig(name="cancel_training", method="POST", path="/v1/trainings/{id}/cancel"),
    RouteConfig(name="account", method="GET", path="/v1/account"),
]


def test_breaker_acquire_and_record(benchmark: BenchmarkFixture) -> None:
    """One CLOSED-state attempt: acquire a permit, record a success with its duration."""
    breaker = CircuitBreaker("bench", BreakerConfig(), clock=time.monotonic)

    def attempt() -> None:
        permit = breaker.acquire()
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.SUCCESS, 0.05)

    benchmark(attempt)
    assert breaker.state.value == "closed"


def test_retry_decision(benchmark: BenchmarkFixture) -> None:
    """The decision before a retry: the jittered delay, then a budget spend."""
    config = RetryConfig()
    rng = random.Random(1)
    budget = RetryBudget(0.2, 1e9, clock=time.monotonic)  # a floor no benchmark run exhausts

    def decide() -> bool:
        delay = retry_delay(2, config, rng, 1.0)
        return delay is not None and budget.try_spend()

    assert benchmark(decide)


def test_route_match_last_of_ten(benchmark: BenchmarkFixture) -> None:
    """The worst case of a 10-route table: the request matches the last entry."""
    table = RouteTable(ROUTES)
    result = benchmark(table.match, "GET", "/v1/account")
    assert result is not None and result.name == "account"


def test_route_match_miss(benchmark: BenchmarkFixture) -> None:
    """A path that no route matches tries all ten templates and yields None."""
    table = RouteTable(ROUTES)
    assert benchmark(table.match, "GET", "/v1/collections/abc") is None


# What a bot's HTTP library typically sends (aiohttp/httpx defaults plus auth and JSON).
BOT_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        [
            ("Host", "127.0.0.1:8080"),
            ("User-Agent", "python-httpx/0.27.0"),
            ("Accept", "*/*"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Connection", "keep-alive"),
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer r8_0123456789abcdef"),
            ("X-Request-Id", "0123456789abcdef0123456789abcdef"),
        ]
    )
)


def test_filter_request_headers(benchmark: BenchmarkFixture) -> None:
    """The bot's eight headers minus hop-by-hop ones, copied for the upstream."""
    out = benchmark(filter_headers, BOT_HEADERS, REQUEST_DROP)
    assert "Host" not in out and "Connection" not in out and len(out) == 6


def test_h1_request_head(benchmark: BenchmarkFixture) -> None:
    """The lean client's request head and a 200-byte body, as bytes for one transport.write."""
    pool = H1Pool("https://api.replicate.com")
    headers = filter_headers(BOT_HEADERS, REQUEST_DROP)
    body = b"x" * 200
    data = benchmark(pool._head, "POST", "/v1/predictions?wait=1", headers, body)
    assert data.startswith(b"POST /v1/predictions?wait=1 HTTP/1.1\r\nHost: api.replicate.com\r\n")
