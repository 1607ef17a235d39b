"""The sidecar's runtime state: one ``ProviderRuntime`` per configured provider, built once.

Everything a request needs that can be computed at start-up (the upstream base, the auth headers,
the compiled route table, metric children, the provider-wide policy) is computed here, so the
request path only looks things up.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from multidict import istr

from ..config import ProviderConfig, RouteConfig, SidecarConfig
from ..logs import get_logger
from ..ops.metrics import Metrics, ProviderMetrics
from ..policy.breaker import CircuitBreaker, Transition
from ..policy.host_breakers import HostBreakers
from ..policy.retry import RetryBudget
from ..policy.routes import RouteTable
from ..upstream.h1pool import H1Pool
from ..upstream.ssrf import guarded_connector

if TYPE_CHECKING:
    from ..ops.probes import ProbeRunner

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    status: int | None
    latency_ms: float
    checked_at: str
    error: str | None


@dataclass(slots=True)
class ProviderRuntime:
    config: ProviderConfig
    breaker: CircuitBreaker
    budget: RetryBudget
    routes: RouteTable
    metrics: ProviderMetrics
    default_policy: RouteConfig
    auth_headers: tuple[tuple[istr, str], ...]
    base_url: str
    inflight: int = 0
    probe: ProbeResult | None = None
    hosts: HostBreakers | None = None  # kind: download: per-host breakers (admin acts on these)
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    pool: H1Pool | None = field(default=None, repr=False)  # kind: proxy: the lean upstream client

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def control(self) -> CircuitBreaker | HostBreakers:
        """What admin, health and the state gauge act on: the per-host set for downloads."""
        return self.hosts if self.hosts is not None else self.breaker

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"provider {self.name}: gateway not started")
        return self._session

    def policy_for(self, method: str, path: str) -> RouteConfig:
        route = self.routes.match(method, path)
        return route if route is not None else self.default_policy


def _default_policy(cfg: ProviderConfig) -> RouteConfig:
    """The policy of requests that match no named route: the provider's own."""
    return RouteConfig(
        name="other",
        path="",
        retry=cfg.retry,
        timeouts=cfg.timeouts,
        failure_statuses=cfg.failure_statuses,
    )


def new_pool(cfg: ProviderConfig) -> H1Pool:
    """The proxy's keep-alive connections to one provider (``h1client``: no auto headers, no
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
    session._retry_connection = False  # see docstring; aiohttp has no public switch for it
    return session


class Gateway:
    """Per-provider runtime plus process-wide state (draining, start time)."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        metrics: Metrics,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        self.rng = rng or random.Random()
        self.started_at = clock()
        self.draining = False
        self.probes: ProbeRunner | None = None  # from start() to close()
        # Called with every breaker transition (and the download host it happened on, if any).
        self.transition_listeners: list[Callable[[Transition, str | None], None]] = []
        self.providers: dict[str, ProviderRuntime] = {
            name: self._runtime(pc) for name, pc in config.providers.items()
        }
        self.known = sorted(self.providers)

    def _runtime(self, cfg: ProviderConfig) -> ProviderRuntime:
        pm = self.metrics.provider(cfg.name, [r.name for r in cfg.routes])
        log = get_logger("breaker")

        def on_transition(t: Transition) -> None:
            pm.transition(t.from_state.value, t.to_state.value)
            log.warning(
                "breaker_transition",
                provider=t.provider,
                from_state=t.from_state.value,
                to_state=t.to_state.value,
                reason=t.reason,
            )
            self.notify_transition(t, None)

        rt = ProviderRuntime(
            config=cfg,
            breaker=CircuitBreaker(
                cfg.name, cfg.breaker, clock=self.clock, on_transition=on_transition
            ),
            budget=RetryBudget(
                cfg.retry.budget_ratio, cfg.retry.budget_min_per_second, clock=self.clock
            ),
            routes=RouteTable(cfg.routes),
            metrics=pm,
            default_policy=_default_policy(cfg),
            auth_headers=tuple((istr(a.header), a.prefix + a.value) for a in cfg.auth if a.value),
            base_url=cfg.upstream.rstrip("/"),
        )
        self.metrics.inflight.labels(cfg.name).set_function(lambda: rt.inflight)
        if cfg.kind == "download":
            rt.hosts = HostBreakers(cfg.name, cfg.breaker, clock=self.clock, metrics=pm,
                                    on_transition=self.notify_transition)
        pm.export_state(lambda: rt.control.state.value)
        return rt

    def notify_transition(self, t: Transition, host: str | None) -> None:
        for listener in self.transition_listeners:
            listener(t, host)

    async def start(self) -> None:
        for rt in self.providers.values():
            if rt.config.kind == "proxy" and rt.config.configured and rt.pool is None:
                rt.pool = new_pool(rt.config)
            elif rt.config.kind == "download" and rt._session is None:
                private = rt.config.download is not None and rt.config.download.allow_private_networks
                connector = guarded_connector(private, limit=rt.config.max_concurrent or 256)
                rt._session = new_session(rt.config, connector)
        from ..ops.probes import ProbeRunner  # here, not at the top: probes imports this module

        if self.probes is None:
            self.probes = ProbeRunner(self)
            self.probes.start()

    async def close(self) -> None:
        probes = self.probes
        if probes is not None:
            self.probes = None
            await probes.close()
        for rt in self.providers.values():
            if rt.pool is not None:
                await rt.pool.close()
                rt.pool = None
            if rt._session is not None:
                await rt._session.close()
                rt._session = None

    def uptime(self) -> float:
        return self.clock() - self.started_at
