"""The effective configuration as YAML, for ``sidecar check-config`` and the logs.

Durations are written as ``"30s"``/``"250ms"``, sizes as ``"1MiB"`` or bytes, and every provider
fully spelled out (defaults folded in), so that the dump loads back to an equal configuration.
Secrets never appear: an auth entry shows ``value: <redacted>`` or null.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import yaml

from .model import ProviderConfig, SidecarConfig
from .schema import REDACTED
from .units import format_duration, format_size

POLICY_KEYS = ("breaker", "retry", "failure_statuses", "max_request_body", "timeouts",
               "max_concurrent")

DURATION_KEYS = frozenset({
    "monitoring_period", "recovery_timeout", "max_recovery_timeout", "slow_call_duration",
    "base_delay", "max_delay", "connect", "attempt", "total", "interval", "timeout",
    "drain_time", "shutdown_grace", "header_read_timeout"})
SIZE_KEYS = frozenset({"max_buffered_body", "max_request_body", "max_download_size"})


def dump_effective(config: SidecarConfig) -> str:
    """The effective configuration as re-loadable YAML; secrets are shown as ``<redacted>``."""
    document = {
        "server": _plain(config.server),
        "providers": {name: _dump_provider(p) for name, p in config.providers.items()},
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _plain(item: Any) -> dict[str, Any]:
    return {f.name: _plain_value(f.name, getattr(item, f.name)) for f in fields(item)}


def _plain_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if key in DURATION_KEYS:
        return format_duration(value)
    if key in SIZE_KEYS:
        return format_size(value)
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        return _plain(value)
    return value


def _dump_provider(provider: ProviderConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": provider.kind, "critical": provider.critical}
    if provider.kind == "proxy":
        out["upstream"] = provider.upstream
        out["auth"] = [
            {"header": a.header, "prefix": a.prefix, "env": a.env,
             "value": REDACTED if a.value else None} for a in provider.auth]
        out["health"] = None if provider.health is None else _plain(provider.health)
    for key in POLICY_KEYS:
        out[key] = _plain_value(key, getattr(provider, key))
    if provider.download is not None:
        out.update(_plain(provider.download))
    if provider.kind == "proxy":
        out["routes"] = [_plain(route) for route in provider.routes]
    return out
