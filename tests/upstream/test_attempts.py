"""Breakers and retries seen from outside: through a real sidecar app to a scripted fake provider."""

from __future__ import annotations

import asyncio
import dataclasses

from sidecar.config import BreakerConfig, RetryConfig, RouteConfig, Timeouts
from sidecar.web.app import SERVICES

from ..support.clocked_sleep import ClockedSleep
from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock, RecordingSleep
from ..support.metric_samples import metric
from ..support.polling import eventually


async def test_get_is_retried_until_success(
    fake: FakeProvider, sidecar, sleep: RecordingSleep
) -> None:
    """A GET answered 503, 502 then 200 reaches the client as 200 after three attempts."""
    fake.then(Reply(status=503), Reply(status=502), Reply(status=200, body=b"ok"))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/x")
    assert resp.status == 200 and await resp.read() == b"ok"
    assert resp.headers["X-Sidecar-Attempts"] == "3"
    assert len(fake.seen) == 3
    assert len({s.headers["X-Request-Id"] for s in fake.seen}) == 1
    assert len(sleep.delays) == 2 and all(0 <= d <= 0.02 for d in sleep.delays)
    assert metric(client, "sidecar_retries_total", provider="p") == 2


async def test_post_is_never_retried(fake: FakeProvider, sidecar) -> None:
    """A POST without Idempotency-Key is sent once and its 503 returned unchanged."""
    fake.then(Reply(status=503, body=b"busy"), Reply(status=200))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.post("/p/v1/predictions", json={"a": 1})
    assert resp.status == 503 and await resp.read() == b"busy"
    assert "X-Sidecar-Error" not in resp.headers
    assert len(fake.seen) == 1


async def test_post_with_idempotency_key_is_retried(fake: FakeProvider, sidecar) -> None:
    """A POST carrying Idempotency-Key is retried with the same body."""
    fake.then(Reply(status=503), Reply(status=200))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.post("/p/x", data=b"payload", headers={"Idempotency-Key": "k1"})
    assert resp.status == 200
    assert [s.body for s in fake.seen] == [b"payload", b"payload"]


async def test_post_connection_reset_is_not_resent(fake: FakeProvider, sidecar) -> None:
    """A POST whose connection drops is answered 502 and reaches the provider once."""
    fake.then(Reply(reset=True), Reply())
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.post("/p/x", data=b"job")
    assert resp.status == 502
    assert (await resp.json())["error"] == "upstream_unreachable"
    assert len(fake.seen) == 1


async def test_route_policies_apply(fake: FakeProvider, sidecar) -> None:
    """A route with max_attempts 1 is not retried; an idempotent POST route is."""
    base = provider("p", fake.url)
    routes = (
        RouteConfig(name="get_once", method="GET", path="/once", retry=RetryConfig(max_attempts=1)),
        RouteConfig(
            name="search",
            method="POST",
            path="/search",
            idempotent=True,
            retry=dataclasses.replace(base.retry),
        ),
    )
    client = await sidecar(sidecar_config(dataclasses.replace(base, routes=routes)))
    fake.then(Reply(status=503), Reply(status=503), Reply(status=200))
    assert (await client.get("/p/once")).status == 503
    assert (await client.post("/p/search", data=b"q")).status == 200
    assert len(fake.seen) == 3
    assert (
        metric(client, "sidecar_requests_total", provider="p", operation="get_once", code="503")
        == 1
    )
    assert (
        metric(client, "sidecar_requests_total", provider="p", operation="search", code="200") == 1
    )


async def test_retry_after_within_max_delay_sets_the_wait(fake: FakeProvider, sidecar) -> None:
    """Retry-After: 1 with max_delay 2 makes the wait at least one second (the pause it starts
    is over by then, so the retry goes)."""
    base = provider("p", fake.url, retry=RetryConfig(base_delay=0.01, max_delay=2.0))
    fake.then(Reply(status=429, headers={"Retry-After": "1"}), Reply(status=200))
    clock = FakeClock()
    sleep = ClockedSleep(clock)
    client = await sidecar(sidecar_config(base), clock=clock, sleep=sleep)
    assert (await client.get("/p/x")).status == 200
    assert sleep.delays == [1.0]


async def test_retry_after_beyond_max_delay_returns_at_once(
    fake: FakeProvider, sidecar, sleep
) -> None:
    """A Retry-After longer than max_delay sends the answer straight back to the client."""
    fake.then(Reply(status=503, headers={"Retry-After": "30"}), Reply(status=200))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/x")
    assert resp.status == 503 and resp.headers["Retry-After"] == "30"
    assert len(fake.seen) == 1 and sleep.delays == []


async def test_connection_reset_is_retried_for_get(fake: FakeProvider, sidecar) -> None:
    """A GET whose connection is reset is retried and succeeds."""
    fake.then(Reply(reset=True), Reply(status=200))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/x")
    assert resp.status == 200 and resp.headers["X-Sidecar-Attempts"] == "2"
    assert (
        metric(client, "sidecar_upstream_attempts_total", provider="p", result="connect_error") == 1
    )


async def test_dropped_keepalive_connection_is_not_silently_resent(
    fake: FakeProvider, sidecar
) -> None:
    """With one attempt allowed, a reset on a reused connection reaches the provider once, not twice."""
    once = RetryConfig(max_attempts=1)
    client = await sidecar(sidecar_config(provider("p", fake.url, retry=once)))
    fake.then(Reply(status=200), Reply(reset=True), Reply(status=200))
    assert (await client.get("/p/a")).status == 200
    resp = await client.get("/p/b")
    assert resp.status == 502
    assert [s.raw_path for s in fake.seen] == ["/a", "/b"]


async def test_attempt_timeout_gives_504(fake: FakeProvider, sidecar) -> None:
    """A provider slower than timeouts.attempt is abandoned; after retries the client gets 504."""
    fake.default = Reply(hold=asyncio.Event())  # never released: no answer comes at all
    slow = provider(
        "p",
        fake.url,
        timeouts=Timeouts(connect=1.0, attempt=0.1, total=5.0),
        retry=RetryConfig(max_attempts=2, base_delay=0.01),
    )
    client = await sidecar(sidecar_config(slow))
    resp = await client.get("/p/x")
    assert resp.status == 504
    assert resp.headers["X-Sidecar-Attempts"] == "2"
    assert metric(client, "sidecar_upstream_attempts_total", provider="p", result="timeout") == 2


async def test_total_deadline_stops_retries(fake: FakeProvider, sidecar) -> None:
    """No retry starts when its wait would pass timeouts.total."""
    fake.default = Reply(status=503)
    p = provider(
        "p", fake.url, timeouts=Timeouts(total=0.5), retry=RetryConfig(base_delay=1.0, jitter=False)
    )
    client = await sidecar(sidecar_config(p))
    resp = await client.get("/p/x")
    assert resp.status == 503 and len(fake.seen) == 1


async def test_breaker_opens_then_short_circuits(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """After the threshold the client gets circuit_open with Retry-After and nothing reaches upstream."""
    fake.default = Reply(status=500, body=b"down")
    client = await sidecar(sidecar_config(provider("p", fake.url)), clock=clock)
    resp = await client.get("/p/x")
    assert resp.status == 500 and await resp.read() == b"down"  # provider's last answer
    assert resp.headers["X-Sidecar-Attempts"] == "3"
    seen = len(fake.seen)
    resp = await client.get("/p/x")
    assert resp.status == 503
    assert resp.headers["X-Sidecar-Error"] == "circuit_open"
    assert resp.headers["Retry-After"] == "10"
    assert resp.headers["X-Sidecar-Attempts"] == "0"
    assert len(fake.seen) == seen
    assert metric(client, "sidecar_short_circuited_total", provider="p") == 1
    assert metric(client, "sidecar_breaker_state", provider="p", state="open") == 1


async def test_breaker_recovers_through_half_open(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """After recovery_timeout, success_threshold trial successes close the breaker again."""
    fake.then(*[Reply(status=500)] * 3)
    client = await sidecar(sidecar_config(provider("p", fake.url)), clock=clock)
    await (await client.get("/p/x")).read()
    clock.advance(10.0)
    assert (await client.get("/p/x")).status == 200
    assert metric(client, "sidecar_breaker_state", provider="p", state="half_open") == 1
    assert (await client.get("/p/x")).status == 200
    assert metric(client, "sidecar_breaker_state", provider="p", state="closed") == 1
    for frm, to in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        assert (
            metric(
                client,
                "sidecar_breaker_transitions_total",
                provider="p",
                from_state=frm,
                to_state=to,
            )
            == 1
        )


async def test_half_open_admits_one_trial_at_a_time(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """While one trial is in flight, another request is short-circuited with Retry-After: 1."""
    release = asyncio.Event()
    fake.then(*[Reply(status=500)] * 3, Reply(hold=release))
    client = await sidecar(sidecar_config(provider("p", fake.url)), clock=clock)
    await (await client.get("/p/x")).read()
    clock.advance(10.0)
    trial = asyncio.ensure_future(client.get("/p/trial"))
    await eventually(lambda: fake.inflight == 1)
    resp = await client.get("/p/other")
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    release.set()
    assert (await trial).status == 200


async def test_breaker_opening_stops_the_retries(fake: FakeProvider, sidecar) -> None:
    """When an attempt opens the breaker, no further attempt is made and the last answer is returned."""
    fake.default = Reply(status=503, body=b"last")
    p = provider("p", fake.url, breaker=BreakerConfig(failure_threshold=2, minimum_calls=0))
    client = await sidecar(sidecar_config(p))
    resp = await client.get("/p/x")
    assert resp.status == 503 and await resp.read() == b"last"
    assert resp.headers["X-Sidecar-Attempts"] == "2" and len(fake.seen) == 2


async def test_429_never_opens_the_breaker(fake: FakeProvider, sidecar) -> None:
    """Back-pressure is retried but never counted as a breaker failure."""
    fake.default = Reply(status=429)
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    for _ in range(4):
        assert (await client.get("/p/x")).status == 429
    assert metric(client, "sidecar_breaker_state", provider="p", state="closed") == 1
    assert len(fake.seen) == 12


async def test_retry_budget_caps_retries(fake: FakeProvider, sidecar) -> None:
    """With a budget of one retry per window, the second failing request is not retried."""
    fake.default = Reply(status=503)
    p = provider(
        "p",
        fake.url,
        retry=RetryConfig(
            max_attempts=2, base_delay=0.01, budget_ratio=0.0, budget_min_per_second=0.1
        ),
        breaker=BreakerConfig(failure_threshold=100, minimum_calls=0),
    )
    client = await sidecar(sidecar_config(p))
    assert (await client.get("/p/a")).headers["X-Sidecar-Attempts"] == "2"
    assert (await client.get("/p/b")).headers["X-Sidecar-Attempts"] == "1"
    assert metric(client, "sidecar_retry_budget_exhausted_total", provider="p") == 1


async def test_slow_calls_count_as_failures(fake: FakeProvider, sidecar, clock: FakeClock) -> None:
    """With slow_call_duration set, slow successes open the breaker."""
    fake.default = Reply(before=lambda: clock.advance(0.06))  # each call takes 60 ms on the clock
    p = provider(
        "p",
        fake.url,
        breaker=BreakerConfig(failure_threshold=2, minimum_calls=0, slow_call_duration=0.05),
    )
    client = await sidecar(sidecar_config(p), clock=clock)
    for _ in range(2):
        assert (await client.get("/p/x")).status == 200
    resp = await client.get("/p/x")
    assert resp.status == 503 and resp.headers["X-Sidecar-Error"] == "circuit_open"


UPLOAD_HEAD = b"POST /p/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"


def breaker_of(client, name: str = "p") -> dict:
    return client.app[SERVICES].registry.providers[name].breaker.snapshot()


async def test_client_aborting_its_upload_is_not_a_provider_failure(fake: FakeProvider, sidecar) -> None:
    """Clients that drop a streamed upload halfway never count against the provider's breaker."""
    p = provider("p", fake.url, breaker=BreakerConfig(failure_threshold=2, minimum_calls=0))
    client = await sidecar(sidecar_config(p))
    svc = client.app[SERVICES]
    for _ in range(3):
        _reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(UPLOAD_HEAD + b"x" * 200_000)
        await writer.drain()
        await eventually(lambda: svc.registry.providers["p"].inflight == 1)
        writer.transport.abort()
        await eventually(lambda: svc.registry.providers["p"].inflight == 0)
    snap = breaker_of(client)
    assert snap["state"] == "closed" and snap["total_failures"] == 0
    assert metric(client, "sidecar_upstream_attempts_total", provider="p", result="connect_error") == 0
    assert (await client.get("/p/x")).status == 200


async def test_streamed_body_over_the_limit_is_413_and_no_failure(fake: FakeProvider, sidecar) -> None:
    """A chunked upload cut at max_request_body answers 413 and leaves the breaker untouched."""
    p = provider("p", fake.url, max_request_body=200_000,
                 breaker=BreakerConfig(failure_threshold=2, minimum_calls=0))
    client = await sidecar(sidecar_config(p))

    async def chunks():
        for _ in range(40):
            yield b"y" * 10_000
            await asyncio.sleep(0)

    for _ in range(3):
        resp = await client.post("/p/x", data=chunks())
        assert resp.status == 413 and resp.headers["X-Sidecar-Error"] == "body_too_large"
    snap = breaker_of(client)
    assert snap["state"] == "closed" and snap["total_failures"] == 0


async def test_stalled_upload_is_408_not_a_provider_timeout(fake: FakeProvider, sidecar) -> None:
    """A client that stops sending its streamed body gets 408; the provider is not blamed."""
    p = provider("p", fake.url, timeouts=Timeouts(connect=1.0, attempt=0.3, total=5.0),
                 breaker=BreakerConfig(failure_threshold=1, minimum_calls=0))
    client = await sidecar(sidecar_config(p))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(UPLOAD_HEAD + b"x" * 100_000)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408") and b"X-Sidecar-Error: request_timeout" in head
    snap = breaker_of(client)
    assert snap["state"] == "closed" and snap["total_failures"] == 0


async def test_malformed_upstream_answer_is_502_and_a_failure(sidecar) -> None:
    """A garbage status line is 502 upstream_unreachable, counted by the breaker, never a 500."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"garbage\r\nnot: http\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        once = RetryConfig(max_attempts=1)
        client = await sidecar(sidecar_config(provider("p", f"http://127.0.0.1:{port}", retry=once)))
        resp = await client.get("/p/x")
        assert resp.status == 502
        assert (await resp.json())["error"] == "upstream_unreachable"
        assert breaker_of(client)["total_failures"] == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_no_retry_without_time_left_for_it(fake: FakeProvider, sidecar, sleep) -> None:
    """A retry whose wait would leave less than an attempt before timeouts.total is not started."""
    fake.then(Reply(status=503, body=b"busy", headers={"Retry-After": "1"}), Reply(status=200))
    p = provider("p", fake.url, timeouts=Timeouts(connect=0.5, attempt=0.5, total=1.2),
                 retry=RetryConfig(base_delay=0.01, max_delay=2.0))
    client = await sidecar(sidecar_config(p))
    resp = await client.get("/p/x")
    assert resp.status == 503 and await resp.read() == b"busy"
    assert len(fake.seen) == 1 and sleep.delays == []
    assert breaker_of(client)["total_failures"] == 1
