"""FallbackLimiter with a real redis-server that is killed and restarted under it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sidecar.fleet.limiter import RedisBackend, fleet_limiter
from sidecar.limits.api import RateLimited
from sidecar.limits.fallback import FallbackLimiter, Mode
from sidecar.limits.local import local_limiter
from sidecar.policy.admission import PROVIDER_SCOPE, RateLimitConfig, Scope
from sidecar.state.resp import RespClient
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer

Clients = Callable[[], RespClient]  # a factory of separate clients, as separate sidecars have

P = "synclabs"
ONE = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(concurrency=1))]


async def test_redis_outage_falls_back_fast_and_returns_after_a_check(
    clients: Clients, redis_server: RedisServer
) -> None:
    """Killed: the next call is served locally at once; restarted: the fleet budget is used again."""
    loop = asyncio.get_running_loop()
    fleet = fleet_limiter(clients(), clock=loop.time, sleep=asyncio.sleep)
    backend = fleet.backend
    assert isinstance(backend, RedisBackend)
    switches: list[Mode] = []
    limiter = FallbackLimiter(
        fleet, local_limiter(clock=loop.time, sleep=asyncio.sleep), ping=backend.ping,
        clock=loop.time, sleep=asyncio.sleep, on_switch=switches.append, min_backoff=0.1, max_backoff=0.4,
    )
    other = fleet_limiter(clients(), clock=loop.time, sleep=asyncio.sleep)  # another sidecar
    try:
        await (await limiter.acquire(P, ONE, max_wait=0)).release()
        redis_server.kill()
        started = loop.time()
        slot = await limiter.acquire(P, ONE, max_wait=5)
        assert loop.time() - started < 0.6
        assert limiter.mode == "local" and switches == ["local"]
        await slot.release()
        await asyncio.sleep(0.5)  # checks keep failing meanwhile
        assert limiter.mode == "local"
        await redis_server.start()
        await eventually(lambda: limiter.mode, until=lambda mode: mode != "local", timeout=3, interval=0.05)
        assert switches == ["local", "fleet"]
        held = await limiter.acquire(P, ONE, max_wait=0)
        with pytest.raises(RateLimited):  # the slot is in Redis again: the other sidecar sees it
            await other.acquire(P, ONE, max_wait=0)
        await held.release()
    finally:
        await limiter.aclose()
        await other.aclose()
