"""What this sidecar keeps in the fleet's Redis, built from the configuration: one place to open and close it.

With ``ledger.backend: redis`` the limiter is the fleet's (``FallbackLimiter``: Redis while it
answers, this sidecar's own limits while it does not) and shared breakers have their store; without
it, the limiter is this sidecar's own and there is no store. The Redis is the ledger's, under the
same key prefix. ``SIDECAR_FLEET_LEASE_TTL`` (a duration, default 30s) sets how long a slot outlives
a sidecar that died holding it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sidecar.config import SidecarConfig, fleet_lease_ttl, shared_redis
from sidecar.fleet.breaker import SharedBreakers
from sidecar.fleet.client import redis_client
from sidecar.fleet.keys import FleetKeys
from sidecar.fleet.limiter import DEFAULT_LEASE_TTL, RedisBackend
from sidecar.limits import FallbackLimiter, FleetUnavailable, Limiter, LocalBackend, QueuedLimiter
from sidecar.limits.fallback import Mode
from sidecar.policy.admission import Scope
from sidecar.state.resp import RespClient

__all__ = ["FleetState"]

@dataclass(slots=True)
class FleetState:
    """The limiter every provider's requests go through, and the fleet's store when there is one."""

    limiter: Limiter
    local: LocalBackend
    redis: RespClient | None = None
    breakers: SharedBreakers | None = None
    backend: RedisBackend | None = None
    breakers_reachable: bool = True  # the shared breakers' last word from Redis

    @property
    def mode(self) -> Mode:
        """``fleet`` while the limits are shared through Redis, else ``local``."""
        limiter = self.limiter
        return limiter.mode if isinstance(limiter, FallbackLimiter) else "local"

    @classmethod
    def build(
        cls,
        config: SidecarConfig,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        environ: Mapping[str, str],
        on_switch: Callable[[Mode], None] | None = None,
    ) -> FleetState:
        """Nothing connects yet: the Redis client connects on first use."""
        own = LocalBackend(clock=clock)
        local = QueuedLimiter(own, clock=clock, sleep=sleep)
        where = shared_redis(config)
        if where is None:
            return cls(local, own)
        redis = redis_client(where.url)
        keys = FleetKeys(where.prefix)
        lease_ttl = fleet_lease_ttl(environ) or DEFAULT_LEASE_TTL
        backend = RedisBackend(redis, keys=keys, lease_ttl=lease_ttl, sleep=sleep)
        fleet = QueuedLimiter(backend, clock=clock, sleep=sleep)
        limiter = FallbackLimiter(
            fleet, local, ping=backend.ping, clock=clock, sleep=sleep, on_switch=on_switch
        )
        return cls(limiter, own, redis, SharedBreakers(redis, keys=keys, clock=clock), backend)

    async def usage(self, provider: str, scope: Scope) -> tuple[int, float]:
        """(slots held, seconds until a start would be allowed) of one budget, where it lives now."""
        if self.backend is not None and self.mode == "fleet":
            try:
                return await self.backend.usage(provider, scope)
            except FleetUnavailable:
                pass
        return self.local.usage(provider, scope)

    async def lowered(self, provider: str) -> int | None:
        """The provider's concurrency lowered after its concurrency 429s (None: not lowered)."""
        if self.backend is not None and self.mode == "fleet":
            try:
                return await self.backend.lowered_limit(provider)
            except FleetUnavailable:
                pass
        return self.local.lowered_limit(provider)

    async def aclose(self) -> None:
        try:
            await self.limiter.aclose()
        finally:
            if self.redis is not None:
                await self.redis.aclose()
