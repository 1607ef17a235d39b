"""After a connection failure, a Redis client forgets its idle connections.

redis-py hands out a pooled connection without noticing that its server went away: after a Redis
restart every idle connection is at end-of-file, and each would fail one more operation once the
server is back (each failure another round of reconnection backoff, another request without the
ledger or the fleet). One connection failure is enough to say the server went away, so the idle
connections are all closed at once and the next operation connects afresh. Connections in use are
left to their operations, which fail or finish on their own.
"""

from __future__ import annotations

import contextlib

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

__all__ = ["after_failure"]


async def after_failure(client: Redis, error: BaseException) -> None:
    """Close every idle pooled connection when ``error`` is a failed connection (refused, reset,
    closed); a timeout (a slow server) or a command's error leaves them. Closing a dead socket that
    fails is not an error."""
    if isinstance(error, TimeoutError) or not isinstance(error, RedisConnectionError | OSError):
        return
    with contextlib.suppress(RedisError, OSError):
        await client.connection_pool.disconnect(inuse_connections=False)
