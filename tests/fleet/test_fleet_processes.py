"""Three real sidecar processes on one real redis-server, calling one counting fake provider.

Limits are scaled so each test takes a few seconds: 600 a minute is 10 a second, and the windows
checked are seconds long. The provider records when each call arrives; the bounds are checked on
those arrival times, with a small allowance for the trip from a sidecar's admission to the provider.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.counting import CountingProvider
from tests.support.redis_server import RedisServer

from ..support.process import Sidecar, start_sidecar

pytestmark = pytest.mark.timeout(120)

TRIP = 0.05  # seconds a call may take from its admission to its arrival at the provider


@pytest.fixture
async def upstream() -> AsyncIterator[CountingProvider]:
    server = await CountingProvider().start()
    yield server
    await server.close()


Fleet = Callable[..., Awaitable[list[Sidecar]]]


@pytest.fixture
async def fleet(tmp_path: Path, redis_server: RedisServer,
                upstream: CountingProvider) -> AsyncIterator[Fleet]:
    """``await fleet(provider_block, n=3, env=...)``: n sidecars sharing the Redis, one provider ``p``."""
    started: list[Sidecar] = []

    async def start(block: dict[str, Any], n: int = 3, env: dict[str, str] | None = None) -> list[Sidecar]:
        config = {
            "ledger": {"backend": "redis", "url": redis_server.url, "prefix": "test:"},
            "providers": {"p": {"upstream": upstream.url, **block}},
        }
        made = []
        for index in range(n):
            home = tmp_path / f"sidecar{len(started) + index}"
            home.mkdir()
            extra = {"SIDECAR_INSTANCE_ID": home.name, **(env or {})}
            made.append(await start_sidecar(json.dumps(config), home, env=extra))
        started.extend(made)
        return made

    yield start
    for sidecar in started:
        await sidecar.kill()


async def call(session: aiohttp.ClientSession, sidecar: Sidecar, path: str = "/p/x",
               method: str = "GET") -> tuple[int, str | None, dict[str, Any] | None]:
    """(status, X-Sidecar-Error, JSON body of a sidecar error) of one call, bounded in time."""
    async with asyncio.timeout(10):
        async with session.request(method, sidecar.proxy + path) as response:
            error = response.headers.get("X-Sidecar-Error")
            body = await response.json() if error else None
            await response.read()
            return response.status, error, body


def assert_window_bound(arrivals: list[float], per_second: float, burst: int, window: float) -> None:
    """No window of ``window`` seconds holds more than ``burst + rate * (window + TRIP)`` arrivals."""
    times = sorted(arrivals)
    allowed = burst + per_second * (window + TRIP)
    for i, start in enumerate(times):
        inside = sum(1 for t in times[i:] if t - start <= window)
        assert inside <= allowed, (start, inside, allowed)


async def test_three_sidecars_share_one_rate(fleet: Fleet, upstream: CountingProvider) -> None:
    """600/min (10/s), burst 2, hammered through three sidecars for 3 s: the provider sees one budget."""
    sidecars = await fleet({"rate_limit": {"requests_per_minute": 600, "burst": 2}})
    loop = asyncio.get_running_loop()
    statuses: list[int] = []
    begin = loop.time()
    stop_at = begin + 3.0

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        n = index
        while loop.time() < stop_at:
            status, error, _ = await call(session, sidecars[n % 3])
            statuses.append(status)
            assert status == 200 or error == "rate_limited"
            n += 1
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(i, session) for i in range(9)))
    duration = loop.time() - begin
    assert_window_bound(upstream.arrivals, 10.0, 2, 1.0)
    assert_window_bound(upstream.arrivals, 10.0, 2, duration)
    # Three budgets of their own would have let about three times as many through.
    assert 20 <= len(upstream.arrivals) <= 2 + 10 * (duration + TRIP)
    assert statuses.count(429) > len(upstream.arrivals)


async def test_a_429_at_one_sidecar_pauses_all_three(fleet: Fleet, upstream: CountingProvider) -> None:
    """Retry-After: 2 answered to one sidecar: no sidecar sends to the provider until it ends."""
    first = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        if not first.is_set():
            first.set()
            return web.json_response({"detail": "slow down"}, status=429, headers={"Retry-After": "2"})
        return web.json_response({"ok": True})

    upstream.answer = answer
    sidecars = await fleet({})  # no rate_limit block: the pause applies anyway
    loop = asyncio.get_running_loop()
    seen: dict[int, list[tuple[int, str | None]]] = {1: [], 2: []}
    async with aiohttp.ClientSession() as session:
        status, error, _ = await call(session, sidecars[0], method="POST")
        assert (status, error) == (429, None)  # the provider's own 429, passed through
        paused_at = upstream.arrivals[0]
        while loop.time() < paused_at + 3.0:
            for index in (1, 2):
                status, error, body = await call(session, sidecars[index], method="POST")
                seen[index].append((status, error))
                if error == "rate_limited":
                    assert body is not None and body["reason"] == "provider_pause"
            await asyncio.sleep(0.1)
    assert all(t >= paused_at + 2.0 - TRIP for t in upstream.arrivals[1:]), upstream.arrivals
    for index in (1, 2):
        assert (429, "rate_limited") in seen[index] and (200, None) in seen[index]


async def test_a_killed_sidecars_places_come_back_within_the_lease_time(
    fleet: Fleet, upstream: CountingProvider
) -> None:
    """concurrency 2, lease 2 s: a sidecar SIGKILLed while holding both places frees them within 2 s."""
    release = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/hold":
            await release.wait()
        return web.json_response({"ok": True})

    upstream.answer = answer
    holder, other = await fleet({"rate_limit": {"concurrency": 2}}, n=2,
                                env={"SIDECAR_FLEET_LEASE_TTL": "2s"})
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        held = [asyncio.ensure_future(call(session, holder, "/p/hold")) for _ in range(2)]
        give_up = loop.time() + 10
        while len(upstream.arrivals) < 2:
            assert loop.time() < give_up
            await asyncio.sleep(0.01)
        status, error, body = await call(session, other)
        assert (status, error) == (429, "rate_limited") and body is not None
        assert body["reason"] == "concurrency"
        holder.proc.send_signal(signal.SIGKILL)
        killed_at = loop.time()
        while True:
            status, _, _ = await call(session, other)
            if status == 200:
                break
            assert loop.time() - killed_at < 2.0 + 1.0, "the dead sidecar's places never came back"
            await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*held, return_exceptions=True)


async def test_redis_down_means_local_limits_then_fleet_limits_again(
    fleet: Fleet, upstream: CountingProvider, redis_server: RedisServer
) -> None:
    """Redis killed mid-run: calls keep being answered on local limits; restarted: shared again."""
    (sidecar,) = await fleet({"rate_limit": {"requests_per_minute": 600, "burst": 2}}, n=1)
    async with aiohttp.ClientSession() as session:
        assert (await call(session, sidecar))[0] == 200
        redis_server.kill()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        answered = 0
        while loop.time() < begin + 1.0:
            status, error, _ = await call(session, sidecar)  # bounded: nothing hangs
            assert status == 200 or error == "rate_limited"
            answered += status == 200
            await asyncio.sleep(0.05)
        assert answered >= 5  # the local limit (10/s) serves while Redis is gone
        assert sidecar.events("fleet_limiter_unavailable")
        await redis_server.start()
        give_up = loop.time() + 10
        while not sidecar.events("fleet_limiter_restored"):
            assert loop.time() < give_up, "never went back to the fleet's limits"
            await call(session, sidecar)
            await asyncio.sleep(0.1)
        detailed = await (await session.get(sidecar.ops + "/health/detailed")).json()
        assert detailed["providers"]["p"]["limits"]["backend"] == "fleet"
        metrics = await (await session.get(sidecar.ops + "/metrics")).text()
        assert 'sidecar_fleet_fallbacks_total{component="limiter",to="local"} 1.0' in metrics
        assert 'sidecar_fleet_fallbacks_total{component="limiter",to="fleet"} 1.0' in metrics


async def test_a_shared_breaker_opens_everywhere_and_one_trial_decides(
    fleet: Fleet, upstream: CountingProvider
) -> None:
    """breaker.shared: one sidecar's opening short-circuits the other two at once; when it is due,
    exactly one trial reaches the provider, and its success closes every sidecar's breaker."""
    failing = True

    async def answer(request: web.Request) -> web.StreamResponse:
        if failing:
            return web.json_response({"error": "down"}, status=500)
        await asyncio.sleep(0.3)  # the trial is still running while the others ask
        return web.json_response({"ok": True})

    upstream.answer = answer
    breaker = {"shared": True, "failure_threshold": 2, "minimum_calls": 0, "recovery_timeout": "2s",
               "success_threshold": 1}
    a, b, c = await fleet({"breaker": breaker, "retry": {"max_attempts": 1}})
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        assert [(await call(session, a))[0] for _ in range(2)] == [500, 500]
        opened_at = loop.time()
        for other in (b, c):
            status, error, _ = await call(session, other)
            assert (status, error) == (503, "circuit_open")
        assert len(upstream.arrivals) == 2
        failing = False
        await asyncio.sleep(max(0.0, opened_at + 2.1 - loop.time()))
        results = await asyncio.gather(*(call(session, s) for s in (a, b, c, a, b, c)))
        assert sorted(r[0] for r in results) == [200, 503, 503, 503, 503, 503]
        assert len(upstream.arrivals) == 3
        await asyncio.sleep(0.3)  # past the read cache: everyone follows the closed record
        for other in (a, b, c):
            assert (await call(session, other))[0] == 200
    assert any(e["to_state"] == "closed" for e in b.events("breaker_transition"))


async def test_an_admin_reset_of_a_shared_breaker_closes_it_for_the_fleet(
    fleet: Fleet, upstream: CountingProvider
) -> None:
    """breaker.shared: an operator's reset on one sidecar clears the fleet's record, so the other
    sidecars send again at once instead of following the record back open."""
    failing = True

    async def answer(request: web.Request) -> web.StreamResponse:
        if failing:
            return web.json_response({"error": "down"}, status=500)
        return web.json_response({"ok": True})

    upstream.answer = answer
    breaker = {"shared": True, "failure_threshold": 2, "minimum_calls": 0, "recovery_timeout": "60s",
               "success_threshold": 1}
    a, b, c = await fleet({"breaker": breaker, "retry": {"max_attempts": 1}})
    async with aiohttp.ClientSession() as session:
        assert [(await call(session, a))[0] for _ in range(2)] == [500, 500]
        assert (await call(session, c))[:2] == (503, "circuit_open")
        failing = False
        async with session.post(b.ops + "/admin/breakers/p/reset") as response:
            assert response.status == 200
            assert (await response.json())["state"] == "closed"
        await asyncio.sleep(0.3)  # past the read cache of the others
        for other in (a, c):
            assert (await call(session, other))[0] == 200
    assert any(e.get("fleet_reset") is True for e in b.events("admin_action"))
