"""The configuration model: frozen values that the rest of the sidecar reads and never mutates.

Times are float seconds and sizes are int bytes once loaded; parsing and validation live in
``config.load`` so that this module stays a plain, import-cheap description of the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

MiB = 1024 * 1024

ProviderKind = Literal["proxy", "download"]
LedgerBackendName = Literal["sqlite", "memory", "redis"]
ReconcileKind = Literal["replicate"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_threshold: int = 5
    monitoring_period: float = 60.0
    failure_rate_threshold: float = 0.5
    minimum_calls: int = 20
    recovery_timeout: float = 30.0
    max_recovery_timeout: float | None = None
    success_threshold: int = 2
    half_open_max_calls: int = 1
    slow_call_duration: float | None = None
    shared: bool = False  # follow the fleet's record in Redis (needs ledger.backend: redis)


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 10.0
    exponential_base: float = 2.0
    jitter: bool = True
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    budget_ratio: float = 0.2
    budget_min_per_second: float = 3.0
    max_buffered_body: int = 1 * MiB


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    attempt: float = 60.0
    total: float = 120.0


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """One header injected upstream; ``value`` is the secret read from ``env`` (None when unset)."""

    header: str
    prefix: str = ""
    env: str | None = None
    value: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class HealthConfig:
    method: str = "GET"
    path: str = "/"
    interval: float = 30.0
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """``rate_limit`` of a provider or a route. No rate and no concurrency: only pauses apply.

    ``budget`` (routes only) names the budget the route counts in: routes naming the same one share
    it; by default a route's budget is its own, named after it.
    """

    requests_per_minute: float | None = None
    burst: int = 1
    concurrency: int | None = None
    max_wait: float = 0.0
    max_pause: float = 60.0
    budget: str | None = None


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """A named operation; its policies are already merged over the provider's."""

    name: str
    path: str
    method: str | None = None
    idempotent: bool | None = None
    retry: RetryConfig = RetryConfig()
    timeouts: Timeouts = Timeouts()
    failure_statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    creates_job: bool = False  # a paid job: keyed requests go through the ledger, never retried
    idempotency_window: float | None = None  # keyless identical requests within it are repeats
    rate_limit: RateLimitConfig | None = None  # the route's own, on top of its provider's


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    allowed_hosts: tuple[str, ...] = ()
    allowed_schemes: tuple[str, ...] = ("https",)
    max_download_size: int = 50 * MiB
    allow_private_networks: bool = False
    max_redirects: int = 5


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: ProviderKind = "proxy"
    critical: bool = False
    upstream: str = ""
    auth: tuple[AuthHeader, ...] = ()
    health: HealthConfig | None = None
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    failure_statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    max_request_body: int = 100 * MiB
    timeouts: Timeouts = Timeouts()
    max_concurrent: int | None = None
    routes: tuple[RouteConfig, ...] = ()
    download: DownloadConfig | None = None
    native_idempotency: bool = False  # the provider honours Idempotency-Key itself (sync.so)
    reconcile: ReconcileKind | None = None  # how to ask the provider about an unknown outcome
    rate_limit: RateLimitConfig | None = None

    @property
    def configured(self) -> bool:
        """A download provider needs no upstream; a proxy provider without one is unconfigured."""
        return self.kind == "download" or bool(self.upstream)

    @property
    def has_credentials(self) -> bool:
        """True when every injected header has its secret (or the provider needs none)."""
        return all(a.value for a in self.auth)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    ops_host: str = "127.0.0.1"
    ops_port: int = 9901
    drain_time: float = 5.0
    shutdown_grace: float = 20.0
    header_read_timeout: float = 10.0
    access_log: bool = False


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """Where the state shared by the sidecars of one bot lives: the job ledger's records, and with
    ``backend: redis`` also the fleet's rate limits, pauses and shared breakers, under ``prefix``."""

    backend: LedgerBackendName = "sqlite"
    path: str | None = None  # sqlite: the file; None -> ledger.sqlite3 in the state directory
    url: str | None = None  # redis: redis://host:6379/0, rediss:// for TLS
    prefix: str = "sidecar:"
    ttl: float = 86400.0
    max_stored_body: int = 1 * MiB
    max_entries: int | None = None  # None: the backend's default (see state.settings)
    on_unavailable: Literal["forward", "refuse"] = "forward"


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    server: ServerConfig = ServerConfig()
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    ledger: LedgerConfig = LedgerConfig()


@dataclass(frozen=True, slots=True)
class SharedRedis:
    """The Redis every sidecar of the bot shares, and the key prefix of this bot in it."""

    url: str
    prefix: str


def shared_redis(config: SidecarConfig) -> SharedRedis | None:
    """The fleet's Redis (the ledger's), or None when the ledger is not on Redis."""
    ledger = config.ledger
    if ledger.backend != "redis" or not ledger.url:
        return None
    return SharedRedis(ledger.url, ledger.prefix)


# The first path segments of the sidecar's own endpoints: never a provider name.
OWN_ENDPOINTS = frozenset({"health", "metrics", "admin"})
# The provider label of requests that name no provider (metrics): never a provider name either.
UNKNOWN_PROVIDER = "unknown"
RESERVED_NAMES = OWN_ENDPOINTS | {UNKNOWN_PROVIDER}
