"""State shared by every sidecar of a bot through Redis: rate limits, pauses, breakers."""

from sidecar.fleet.breaker import SharedBreakers, SharedBreakerView, SharedState, Trial
from sidecar.fleet.client import DEFAULT_TIMEOUT, guarded, redis_client
from sidecar.fleet.keys import DEFAULT_PREFIX, FleetKeys
from sidecar.fleet.limiter import DEFAULT_LEASE_TTL, DEFAULT_POLL_INTERVAL, RedisBackend, fleet_limiter

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "FleetKeys",
    "RedisBackend",
    "SharedBreakerView",
    "SharedBreakers",
    "SharedState",
    "Trial",
    "fleet_limiter",
    "guarded",
    "redis_client",
]
