"""The Redis client for fleet state, and the one guard every call goes through: fail fast, typed.

A sidecar must never hang on its Redis: every operation is bounded by ``timeout`` (a deadline on
the whole call, on top of the socket timeouts) and every failure, whether refused connection,
timeout, a server error such as ``LOADING`` or ``READONLY``, comes out as ``FleetUnavailable`` so
the caller can fall back to its local state. The client does not retry by itself: a script that
ran but whose reply was lost must not run twice, and the fallback decides what happens next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from sidecar.limits.api import FleetUnavailable

if TYPE_CHECKING:  # redis-py is imported by the first client made: a sidecar without Redis never loads it
    from redis.asyncio import Redis

__all__ = ["DEFAULT_TIMEOUT", "guarded", "redis_client"]

DEFAULT_TIMEOUT = 0.25
"""Seconds a fleet operation may take before the caller falls back (Redis answers in < 1 ms)."""

T = TypeVar("T")


def redis_client(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Redis:
    """A client for ``redis://`` / ``rediss://`` URLs with bounded connects and reads, no retries."""
    from redis.asyncio import Redis  # see TYPE_CHECKING
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


async def guarded(operation: Awaitable[T], *, within: float, what: str, client: Redis) -> T:
    """Await ``operation`` (a call on ``client``) for at most ``within`` seconds.

    Any failure is ``FleetUnavailable``; a failed connection also closes the client's idle ones.
    """
    try:
        async with asyncio.timeout(within):
            return await operation
    except (_redis_error(), OSError, TimeoutError) as error:  # evaluated only when one is raised
        from sidecar.state.redis_pool import after_failure

        await after_failure(client, error)
        raise FleetUnavailable(f"{what}: {type(error).__name__}: {error}") from error


def _redis_error() -> type[Exception]:
    from redis.exceptions import RedisError  # loaded already: a client exists

    return RedisError
