"""Fixtures for the fleet's shared state: clients on the test's private redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sidecar.fleet.client import redis_client
from sidecar.fleet.limiter import fleet_limiter
from sidecar.limits.queue import QueuedLimiter
from sidecar.state.resp import RespClient
from tests.support.redis_server import RedisServer


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[Callable[[], RespClient]]:
    """A factory of separate clients, as separate sidecars would have; all closed at the end."""
    made: list[RespClient] = []

    def make() -> RespClient:
        client = redis_client(redis_server.url, timeout=0.25)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


Sidecars = Callable[..., list[QueuedLimiter]]


@pytest.fixture
async def sidecars(clients: Callable[[], RespClient]) -> AsyncIterator[Sidecars]:
    """``sidecars(n, lease_ttl=..., share_ttl=...)``: n fleet limiters, each on its own Redis client."""
    made: list[QueuedLimiter] = []

    def make(n: int, **options: Any) -> list[QueuedLimiter]:
        loop = asyncio.get_running_loop()
        fresh = [fleet_limiter(clients(), clock=loop.time, sleep=asyncio.sleep, **options) for _ in range(n)]
        made.extend(fresh)
        return fresh

    yield make
    for limiter in made:
        await limiter.aclose()
