"""Fixtures for the fleet's shared state: a private redis-server per test and clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from sidecar.fleet.client import redis_client

from .redis_server import RedisServer


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    await server.kill()


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
