"""Sidecar configurations built in code for tests: providers with fast, test-friendly policies."""

from __future__ import annotations

import dataclasses
from typing import Any

from sidecar.config import (
    AuthHeader,
    BreakerConfig,
    HealthConfig,
    ProviderConfig,
    RetryConfig,
    ServerConfig,
    SidecarConfig,
    Timeouts,
)

__all__ = ["QUIET", "SECRET", "keyed", "provider", "sidecar_config"]

SECRET = "sk-test-SECRET-abc123"

# A long probe interval: the background loop's first probe (jitter 0..interval) never comes during a
# test, so tests drive probes themselves with ``run_once`` and count exactly what was sent.
QUIET = HealthConfig(method="GET", path="/probe", interval=3600.0, timeout=0.5)


def provider(name: str, upstream: str, **overrides: Any) -> ProviderConfig:
    """A provider with fast test-friendly policies; keyword overrides replace whole fields."""
    base = ProviderConfig(
        name=name,
        upstream=upstream,
        breaker=BreakerConfig(failure_threshold=3, minimum_calls=0, recovery_timeout=10.0),
        retry=RetryConfig(base_delay=0.01, max_delay=1.0),
        timeouts=Timeouts(connect=2.0, attempt=5.0, total=10.0),
    )
    return dataclasses.replace(base, **overrides)


def keyed(name: str, upstream: str, **overrides: Any) -> ProviderConfig:
    """A provider whose requests carry ``Authorization: Bearer SECRET`` (from the env var TOKEN)."""
    auth = (AuthHeader(header="Authorization", prefix="Bearer ", env="TOKEN", value=SECRET),)
    return provider(name, upstream, auth=auth, **overrides)


def sidecar_config(*providers: ProviderConfig, **server: Any) -> SidecarConfig:
    """A whole configuration: these providers, and server settings from keywords."""
    return SidecarConfig(server=ServerConfig(**server), providers={p.name: p for p in providers})
