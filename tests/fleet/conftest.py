"""Fixtures for the fleet's shared state: clients on the test's private redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from sidecar.fleet.client import redis_client
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
