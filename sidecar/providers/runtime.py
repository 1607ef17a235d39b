"""The runtime of one provider, one type per kind, each holding exactly what its requests use.

``ProxyRuntime`` (``kind: proxy``): the provider's breaker, its route table, the auth headers and
the lean connection pool to its upstream. ``DownloadRuntime`` (``kind: download``): per-host
breakers, the download settings and an SSRF-guarded client session. Both carry the provider's retry
budget, metrics and in-flight count; ``open()`` and ``close()`` manage their connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from multidict import istr

from ..config import DownloadConfig, ProviderConfig, RouteConfig
from ..policy.breaker import CircuitBreaker
from ..policy.host_breakers import HostBreakers
from ..policy.retry import RetryBudget
from ..policy.routes import RouteTable
from ..upstream.aiohttp_client_compat import disable_silent_resend
from ..upstream.h1pool import H1Pool, PoolStats
from ..upstream.ssrf import guarded_connector
from .observer import ProviderMetrics

__all__ = [
    "DownloadRuntime",
    "ProviderRuntime",
    "ProxyRuntime",
    "default_route",
    "new_pool",
    "new_session",
]


@dataclass(slots=True, kw_only=True)
class ProxyRuntime:
    config: ProviderConfig
    breaker: CircuitBreaker
    budget: RetryBudget
    metrics: ProviderMetrics
    routes: RouteTable
    default_route: RouteConfig
    auth_headers: tuple[tuple[istr, str], ...]
    base_url: str
    inflight: int = 0
    name: str = field(init=False)  # the config's, read on every request
    _pool: H1Pool | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.config.name

    @property
    def control(self) -> CircuitBreaker:
        """What admin, health and the state gauge act on."""
        return self.breaker

    @property
    def pool(self) -> H1Pool:
        if self._pool is None:
            raise RuntimeError(f"provider {self.name}: not open (or no upstream)")
        return self._pool

    def pool_stats(self) -> PoolStats | None:
        """The pool's numbers for the metrics; None before ``open`` or without an upstream."""
        return None if self._pool is None else self._pool.stats()

    def route_for(self, method: str, path: str) -> RouteConfig:
        route = self.routes.match(method, path)
        return route if route is not None else self.default_route

    async def open(self) -> None:
        """Create the pool (no connection yet); a provider without an upstream gets none."""
        if self.config.configured and self._pool is None:
            self._pool = new_pool(self.config)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


@dataclass(slots=True, kw_only=True)
class DownloadRuntime:
    config: ProviderConfig
    download: DownloadConfig
    hosts: HostBreakers
    budget: RetryBudget
    metrics: ProviderMetrics
    default_route: RouteConfig
    inflight: int = 0
    name: str = field(init=False)  # the config's, read on every request
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.config.name

    @property
    def control(self) -> HostBreakers:
        """What admin, health and the state gauge act on: the per-host set."""
        return self.hosts

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"provider {self.name}: not open")
        return self._session

    def route_for(self, method: str, path: str) -> RouteConfig:
        """Downloads have no named routes: every request follows the provider's own policy."""
        return self.default_route

    async def open(self) -> None:
        if self._session is None:
            limit = self.config.max_concurrent or 256
            connector = guarded_connector(self.download.allow_private_networks, limit=limit)
            self._session = new_session(self.config, connector)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


ProviderRuntime = ProxyRuntime | DownloadRuntime


def default_route(cfg: ProviderConfig) -> RouteConfig:
    """The route of requests that match no named route: the provider's own policy."""
    return RouteConfig(
        name="other",
        path="",
        retry=cfg.retry,
        timeouts=cfg.timeouts,
        failure_statuses=cfg.failure_statuses,
    )


def new_pool(cfg: ProviderConfig) -> H1Pool:
    """The proxy's keep-alive connections to one provider (``h1pool``: no auto headers, no
    decompression, no cookies or environment proxies, no silent re-send)."""
    timeouts = cfg.timeouts
    return H1Pool(
        cfg.upstream,
        limit=cfg.max_concurrent or 256,
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.attempt,
        idle_timeout=15.0,
        read_bufsize=64 * 1024,
    )


def new_session(cfg: ProviderConfig, connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    """A keep-alive session on ``connector`` (the download provider's SSRF-guarded one) that
    forwards bytes as they are.

    No auto headers (the upstream sees what the bot sent), no decompression, no cookies, no
    environment proxies, and no silent re-send of idempotent requests on a dropped keep-alive
    connection: the attempt loop counts and retries every send itself.
    """
    timeouts = cfg.timeouts
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.connect,
            sock_connect=timeouts.connect,
            sock_read=timeouts.attempt,
        ),
        read_bufsize=64 * 1024,
    )
    disable_silent_resend(session)
    return session
