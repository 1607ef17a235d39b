"""Rate limits, concurrency and provider pauses through a real sidecar app to fake providers.

Time is a ``FakeClock`` moved by the app's own sleeps (``ClockedSleep``): waits for a rate start or
a pause take no real time, and the limiter sees them pass.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from sidecar.config import RateLimitConfig, RetryConfig, RouteConfig
from sidecar.web.app import SERVICES

from ..support.clocked_sleep import ClockedSleep
from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock
from ..support.metric_samples import metric
from ..support.polling import eventually

Start = Callable[..., Awaitable[Any]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start(sidecar: Start, clock: FakeClock) -> Start:
    """Start a sidecar for these providers on the fake clock; the clocked sleep is ``client.sleep``."""

    async def go(*providers: Any) -> Any:
        sleep = ClockedSleep(clock)
        client = await sidecar(sidecar_config(*providers), clock=clock, sleep=sleep)
        client.sleep = sleep
        return client

    return go


def limited(fake: FakeProvider, **limit: Any) -> Any:
    return provider("p", fake.url, rate_limit=RateLimitConfig(**limit))


async def test_a_full_rate_answers_429_rate_limited_with_retry_after(
    fake: FakeProvider, start: Start, clock: FakeClock
) -> None:
    """60/min with burst 2: two go at once, the third is refused with the time until the next start."""
    client = await start(limited(fake, requests_per_minute=60, burst=2))
    assert [(await client.get("/p/x")).status for _ in range(2)] == [200, 200]
    refused = await client.get("/p/x")
    assert refused.status == 429
    assert refused.headers["X-Sidecar-Error"] == "rate_limited"
    assert refused.headers["X-Sidecar-Attempts"] == "0"
    assert refused.headers["Retry-After"] == "1"
    body = await refused.json()
    assert body["error"] == "rate_limited" and body["reason"] == "rate" and body["provider"] == "p"
    assert len(fake.seen) == 2
    clock.advance(1.0)
    assert (await client.get("/p/x")).status == 200
    assert len(fake.seen) == 3
    assert metric(client, "sidecar_rate_limited_total", provider="p", reason="rate") == 1


async def test_a_refused_call_is_not_a_breaker_call(fake: FakeProvider, start: Start) -> None:
    """Refusals leave the breaker's counts alone: only the one call that went is counted."""
    client = await start(limited(fake, requests_per_minute=1))
    for _ in range(5):
        await client.get("/p/x")
    snapshot = client.app[SERVICES].registry.providers["p"].control.snapshot()
    assert snapshot["total_calls"] == 1
    assert metric(client, "sidecar_rate_limited_total", provider="p", reason="rate") == 4


async def test_max_wait_lets_a_caller_wait_for_its_start(
    fake: FakeProvider, start: Start
) -> None:
    """With max_wait 5s, a caller over a 60/min rate waits its second and goes; the wait is observed."""
    client = await start(limited(fake, requests_per_minute=60, max_wait=5.0))
    first, second = await asyncio.gather(client.get("/p/a"), client.get("/p/b"))
    assert (first.status, second.status) == (200, 200)
    assert 1.0 in client.sleep.delays
    assert len(fake.seen) == 2
    assert metric(client, "sidecar_rate_limit_wait_seconds_count", provider="p") == 2
    assert metric(client, "sidecar_rate_limit_wait_seconds_sum", provider="p") == pytest.approx(1.0)


async def test_the_wait_never_passes_timeouts_total(fake: FakeProvider, start: Start) -> None:
    """max_wait 60s but timeouts.total 10s: a start 30 s away is refused at once."""
    base = limited(fake, requests_per_minute=2, max_wait=60.0)
    client = await start(base)
    assert (await client.get("/p/x")).status == 200
    refused = await client.get("/p/x")
    assert refused.status == 429 and refused.headers["Retry-After"] == "30"
    assert client.sleep.delays == []


async def test_concurrency_refuses_while_the_slots_are_taken(fake: FakeProvider, start: Start) -> None:
    """concurrency 1: a second call while the first is in flight gets 429 (reason concurrency, 1 s)."""
    hold = asyncio.Event()
    fake.then(Reply(hold=hold))
    client = await start(limited(fake, concurrency=1))
    first = asyncio.ensure_future(client.get("/p/slow"))
    await eventually(lambda: fake.inflight == 1, interval=0.005)
    refused = await client.get("/p/x")
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert (await refused.json())["reason"] == "concurrency"
    hold.set()
    assert (await first).status == 200
    assert (await client.get("/p/x")).status == 200
    assert metric(client, "sidecar_rate_limited_total", provider="p", reason="concurrency") == 1


async def test_waiting_callers_are_served_in_arrival_order(fake: FakeProvider, sidecar: Start) -> None:
    """concurrency 1, max_wait 5s: callers queued behind a held call reach the provider in order
    (real time: a caller waits for a release, which no clock can hurry)."""
    hold = asyncio.Event()
    fake.then(Reply(hold=hold))
    config = sidecar_config(limited(fake, concurrency=1, max_wait=5.0))
    client = await sidecar(config, sleep=asyncio.sleep)
    runtime = client.app[SERVICES].registry.providers["p"]
    calls = [asyncio.ensure_future(client.get("/p/0"))]
    await eventually(lambda: fake.inflight == 1, interval=0.005)
    for n in range(1, 4):
        calls.append(asyncio.ensure_future(client.get(f"/p/{n}")))
        await eventually(lambda n=n: runtime.inflight == n + 1, interval=0.005)
    hold.set()
    assert [r.status for r in await asyncio.gather(*calls)] == [200] * 4
    assert [s.raw_path for s in fake.seen] == ["/0", "/1", "/2", "/3"]


async def test_a_route_limit_applies_on_top_of_its_providers(fake: FakeProvider, start: Start) -> None:
    """The route's 1/min is spent after one call; the provider's burst of 3 still serves two others."""
    route = RouteConfig(name="create", method="POST", path="/create",
                        rate_limit=RateLimitConfig(requests_per_minute=1))
    client = await start(provider("p", fake.url, routes=(route,),
                                  rate_limit=RateLimitConfig(requests_per_minute=60, burst=3)))
    assert (await client.post("/p/create")).status == 200
    refused = await client.post("/p/create")
    assert refused.status == 429 and refused.headers["Retry-After"] == "60"
    assert [(await client.get("/p/other")).status for _ in range(3)] == [200, 200, 429]


async def test_routes_naming_one_budget_share_it(fake: FakeProvider, start: Start) -> None:
    """Two create routes in budget ``creates`` of 1/min: a call on one spends the other's too."""
    shared = RateLimitConfig(requests_per_minute=1, budget="creates")
    routes = (RouteConfig(name="a", method="POST", path="/a", rate_limit=shared),
              RouteConfig(name="b", method="POST", path="/b", rate_limit=shared))
    client = await start(provider("p", fake.url, routes=routes))
    assert (await client.post("/p/a")).status == 200
    assert (await client.post("/p/b")).status == 429
    assert (await client.get("/p/other")).status == 200


REPLICATE_THROTTLE = json.dumps({"title": "Request was throttled", "status": 429,
                                 "detail": "Request was throttled. Your rate limit resets in ~3s."})


@pytest.mark.parametrize(("headers", "body"), [
    ({"Retry-After": "3"}, b"{}"),
    ({"retry-after-ms": "3000"}, b"{}"),
    ({"x-ratelimit-reset": "3"}, b"{}"),
    ({"ratelimit-reset": "3s"}, b"{}"),
    ({"x-ratelimit-reset-requests": "3s", "x-ratelimit-remaining-requests": "0"}, b"{}"),
    ({}, REPLICATE_THROTTLE.encode()),
    ({}, b'{"detail": "Request was throttled. Expected available in 3 seconds."}'),
], ids=["retry-after", "retry-after-ms", "x-ratelimit-reset", "ratelimit-reset", "kinded", "replicate",
        "replicate-older"])
async def test_a_provider_429_pauses_the_provider(
    fake: FakeProvider, start: Start, clock: FakeClock, headers: dict[str, str], body: bytes
) -> None:
    """The provider's 429 reaches its caller unchanged; the next call is held back for the 3 s pause."""
    fake.then(Reply(status=429, body=body, headers={"Content-Type": "application/json", **headers}))
    client = await start(provider("p", fake.url))  # no rate_limit block: pauses work anyway
    first = await client.post("/p/x")
    assert first.status == 429 and "X-Sidecar-Error" not in first.headers
    assert await first.read() == body
    paused = await client.post("/p/x")
    assert paused.status == 429 and paused.headers["X-Sidecar-Error"] == "rate_limited"
    assert paused.headers["Retry-After"] == "3"
    assert (await paused.json())["reason"] == "provider_pause"
    assert len(fake.seen) == 1
    assert metric(client, "sidecar_provider_paused_until_seconds", provider="p") > 0
    clock.advance(3.0)
    assert (await client.post("/p/x")).status == 200
    assert metric(client, "sidecar_rate_limited_total", provider="p", reason="provider_pause") == 1
    # Every request's wait is observed, 0 for the two let through and for the one refused at once.
    assert metric(client, "sidecar_rate_limit_wait_seconds_count", provider="p") == 3
    assert metric(client, "sidecar_rate_limit_wait_seconds_bucket", provider="p", le="0.001") == 3
    assert metric(client, "sidecar_rate_limit_wait_seconds_sum", provider="p") == 0


async def test_a_pause_is_capped_by_max_pause(fake: FakeProvider, start: Start) -> None:
    """Retry-After: 600 with max_pause 5s pauses for 5 s."""
    fake.then(Reply(status=429, headers={"Retry-After": "600"}))
    client = await start(limited(fake, max_pause=5.0))
    await client.post("/p/x")
    assert (await client.post("/p/x")).headers["Retry-After"] == "5"


async def test_callers_may_wait_out_a_pause(fake: FakeProvider, start: Start) -> None:
    """A caller arriving during a 2 s pause with max_wait 5s waits for its end, then goes."""
    fake.then(Reply(status=429, headers={"Retry-After": "2"}))
    client = await start(limited(fake, max_wait=5.0))
    assert (await client.post("/p/x")).status == 429
    assert (await client.post("/p/x")).status == 200
    assert 2.0 in client.sleep.delays


async def test_a_retried_429_pauses_everyone_until_its_retry(
    fake: FakeProvider, start: Start
) -> None:
    """A GET retried after 429 Retry-After: 1 pauses the provider; the retry itself goes after it."""
    fake.then(Reply(status=429, headers={"Retry-After": "1"}), Reply(status=200))
    client = await start(provider("p", fake.url, retry=RetryConfig(base_delay=0.01, max_delay=2.0)))
    response = await client.get("/p/x")
    assert response.status == 200 and response.headers["X-Sidecar-Attempts"] == "2"
    assert len(fake.seen) == 2


async def test_a_retry_is_not_sent_during_a_longer_pause(fake: FakeProvider, start: Start) -> None:
    """retry-after-ms: 30000 pauses 30 s, past the retry's short backoff: the client gets the 429."""
    fake.then(Reply(status=429, headers={"retry-after-ms": "30000"}))
    client = await start(provider("p", fake.url, retry=RetryConfig(base_delay=0.01, max_delay=2.0)))
    response = await client.get("/p/x")
    assert response.status == 429 and "X-Sidecar-Error" not in response.headers
    assert len(fake.seen) == 1


TOO_MANY = json.dumps({"detail": {"status": "too_many_concurrent_requests",
                                  "message": "Too many concurrent requests."}}).encode()


async def test_a_concurrency_429_halves_the_providers_concurrency(
    fake: FakeProvider, start: Start
) -> None:
    """ElevenLabs' too_many_concurrent_requests lowers concurrency 4 to 2, and no pause is taken."""
    fake.then(Reply(status=429, body=TOO_MANY))
    client = await start(limited(fake, concurrency=4))
    first = await client.post("/p/tts")
    assert first.status == 429 and await first.read() == TOO_MANY
    detailed = await (await client.get("/health/detailed")).json()
    limits = detailed["providers"]["p"]["limits"]
    assert limits["lowered_concurrency"] == 2 and limits["pause"] is None
    hold = asyncio.Event()
    fake.then(Reply(hold=hold), Reply(hold=hold))
    held = [asyncio.ensure_future(client.post("/p/tts")) for _ in range(2)]
    await eventually(lambda: fake.inflight == 2, interval=0.005)
    refused = await client.post("/p/tts")
    assert refused.status == 429 and (await refused.json())["reason"] == "concurrency"
    hold.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]


async def test_health_shows_each_limit_and_its_use(fake: FakeProvider, start: Start) -> None:
    """/health/detailed: the budgets with their terms, what is in use, the backend and no pause."""
    route = RouteConfig(name="create", method="POST", path="/create",
                        rate_limit=RateLimitConfig(requests_per_minute=6))
    client = await start(provider("p", fake.url, routes=(route,),
                                  rate_limit=RateLimitConfig(requests_per_minute=60, concurrency=3)))
    await client.post("/p/create")
    detailed = await (await client.get("/health/detailed")).json()
    limits = detailed["providers"]["p"]["limits"]
    assert limits["backend"] == "local" and limits["in_flight"] == 0
    assert limits["budgets"]["*"] == {"requests_per_minute": 60.0, "burst": 1, "concurrency": 3,
                                      "in_use": 0, "next_start_in_seconds": 1.0}
    assert limits["budgets"]["create"]["next_start_in_seconds"] == 10.0
    assert detailed["providers"]["p"]["shared_breaker"] is None
    assert detailed["providers"]["p"]["breaker"]["config"]["shared"] is False


async def test_the_place_is_held_while_the_body_streams(start: Start) -> None:
    """concurrency 1: while a streamed answer is still flowing, the next call is refused; after, it goes."""
    more = asyncio.Event()

    async def streaming(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        if request.path == "/stream":
            await more.wait()
        await response.write(b"last")
        return response

    async with _upstream(streaming) as url:
        client = await start(provider("p", url, rate_limit=RateLimitConfig(concurrency=1)))
        streamed = await client.get("/p/stream")
        assert await streamed.content.readexactly(5) == b"first"
        assert (await client.get("/p/x")).status == 429
        more.set()
        assert await streamed.read() == b"last"
        await eventually(lambda: client.app[SERVICES].limits.providers["p"].in_flight == 0, interval=0.005)
        assert (await client.get("/p/x")).status == 200




class _upstream:
    """A one-handler aiohttp server on loopback; ``async with`` gives its URL."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)

    async def __aenter__(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()

