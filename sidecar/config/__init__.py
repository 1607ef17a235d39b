"""Configuration: the frozen model, loading and validation, the effective dump, units."""

from .dump import dump_effective
from .load import ConfigError, load_config, parse_config
from .model import (
    OWN_ENDPOINTS,
    RESERVED_NAMES,
    UNKNOWN_PROVIDER,
    AuthHeader,
    BreakerConfig,
    DownloadConfig,
    HealthConfig,
    LedgerConfig,
    MiB,
    ProviderConfig,
    ProviderKind,
    RetryConfig,
    RouteConfig,
    ServerConfig,
    SidecarConfig,
    Timeouts,
)
from .units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "OWN_ENDPOINTS",
    "RESERVED_NAMES",
    "UNKNOWN_PROVIDER",
    "AuthHeader",
    "BreakerConfig",
    "ConfigError",
    "DownloadConfig",
    "HealthConfig",
    "LedgerConfig",
    "MiB",
    "ProviderConfig",
    "ProviderKind",
    "RetryConfig",
    "RouteConfig",
    "ServerConfig",
    "SidecarConfig",
    "Timeouts",
    "dump_effective",
    "format_duration",
    "format_size",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
