"""Fixtures for the fleet's shared state: clients on the test's private redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from sidecar.fleet.client import redis_client
from tests.support.redis_server import RedisServer


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[Callable[[], Redis]]:
    """A factory of separate clients, as separate sidecars would have; all closed at the end."""
    made: list[Redis] = []

    def make() -> Redis:
        client = redis_client(redis_server.url, timeout=0.25)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
