"""What ``sidecar check-config`` and the start-up log say about a configuration that loaded.

``dump_effective`` is the effective configuration as YAML: durations written as ``"30s"``/``"250ms"``,
sizes as ``"1MiB"`` or bytes, and every provider fully spelled out (defaults folded in), so that the
dump loads back to an equal configuration. Secrets never appear: an auth entry shows
``value: <redacted>`` or null. ``config_warnings`` lists the legal traps (an unset variable, a
duration in milliseconds by mistake); it reads the YAML before ``${VAR}`` expansion, because the
loaded model no longer knows which value came from which variable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .model import ProviderConfig, RateLimitConfig, SidecarConfig
from .schema import (
    ENV_BREAKER,
    ENV_NAME,
    ENV_REFERENCE,
    REDACTED,
    join,
    upstream_variable,
)
from .units import format_duration, format_size

POLICY_KEYS = ("breaker", "retry", "failure_statuses", "max_request_body", "timeouts",
               "max_concurrent")

DURATION_KEYS = frozenset({
    "monitoring_period", "recovery_timeout", "max_recovery_timeout", "slow_call_duration",
    "base_delay", "max_delay", "connect", "attempt", "total", "interval", "timeout",
    "drain_time", "shutdown_grace", "header_read_timeout", "max_wait", "max_pause",
    "idempotency_window", "ttl"})
SIZE_KEYS = frozenset({"max_buffered_body", "max_request_body", "max_download_size",
                       "max_stored_body"})


def dump_effective(config: SidecarConfig) -> str:
    """The effective configuration as re-loadable YAML; secrets are shown as ``<redacted>``."""
    document = {
        "server": _plain(config.server),
        "ledger": {**_plain(config.ledger), "url": _redact_url(config.ledger.url)},
        "providers": {name: _dump_provider(p) for name, p in config.providers.items()},
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _redact_url(url: str | None) -> str | None:
    """A Redis URL without its password (``redis://:<redacted>@host``): the dump shows no secret."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))


def _plain(item: Any) -> dict[str, Any]:
    out = {f.name: _plain_value(f.name, getattr(item, f.name)) for f in fields(item)}
    if isinstance(item, RateLimitConfig) and item.budget is None:
        del out["budget"]  # a route's own budget; a provider's block has no such key
    return out


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
        out["native_idempotency"] = provider.native_idempotency
        out["reconcile"] = provider.reconcile
    for key in POLICY_KEYS:
        out[key] = _plain_value(key, getattr(provider, key))
    if provider.download is not None:
        out.update(_plain(provider.download))
    if provider.kind == "proxy":
        out["rate_limit"] = _plain_value("rate_limit", provider.rate_limit)
        out["routes"] = [_plain(route) for route in provider.routes]
    return out


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A legal configuration that probably does not do what was meant, at a dotted key or variable."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def config_warnings(document: object, config: SidecarConfig,
                    environ: Mapping[str, str]) -> list[ConfigWarning]:
    """The traps of a configuration that loaded: ``document`` is its YAML before ``${VAR}`` expansion.

    Unset ``${VAR}`` references (an unset upstream leaves its provider unconfigured), unset key
    variables (no auth header injected), bare integer durations under 1000 (milliseconds, so
    ``drain_time: 30`` is 30 ms) and an empty provider list.
    """
    found = [*_unset_references(document, config, environ), *_keyless(config, environ),
             *_bare_milliseconds(document, environ)]
    if not config.providers:
        found.append(ConfigWarning(
            "providers", "no providers are configured: every request to a provider path gets "
                         "404 unknown_provider"))
    return found


def unconfigured_providers(document: object, config: SidecarConfig,
                           environ: Mapping[str, str]) -> dict[str, str]:
    """Each unconfigured proxy provider and the variable that would configure it."""
    out: dict[str, str] = {}
    for name, provider in config.providers.items():
        if provider.configured:
            continue
        raw = _at(document, "providers", name, "upstream")
        unset = [v for v in ENV_REFERENCE.findall(raw) if _unset(v, environ)] if isinstance(
            raw, str) else []
        out[name] = unset[0] if unset else upstream_variable(name)
    return out


def referenced_variables(document: object) -> dict[str, list[str]]:
    """Every variable a configuration reads (``${VAR}`` and ``auth.env``) and the keys reading it."""
    out: dict[str, list[str]] = {}
    for path, key, value in _leaves(document):
        if not isinstance(value, str):
            continue
        names = ENV_REFERENCE.findall(value)
        if key == "env" and ".auth" in path and ENV_NAME.fullmatch(value):
            names.append(value)
        for name in names:
            out.setdefault(name, []).append(path)
    return out


def _unset(var: str, environ: Mapping[str, str]) -> str | None:
    """``"unset"``, ``"empty"`` (blank counts as empty), or None when the variable has a value."""
    if var not in environ:
        return "unset"
    return "empty" if not environ[var].strip() else None


def _at(document: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(document, Mapping):
            return None
        document = document.get(key)
    return document


def _leaves(value: object, path: str = "",
            key: str | int | None = None) -> Iterator[tuple[str, str | int | None, object]]:
    """``(dotted.path, last key, value)`` of every scalar, in document order."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            if isinstance(name, str):
                yield from _leaves(item, join(path, name), name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, join(path, index), index)
    else:
        yield path, key, value


def _unset_references(document: object, config: SidecarConfig,
                      environ: Mapping[str, str]) -> Iterator[ConfigWarning]:
    upstreams = {join(join("providers", name), "upstream"): p for name, p in config.providers.items()}
    for path, _, value in _leaves(document):
        if not isinstance(value, str):
            continue
        for var in ENV_REFERENCE.findall(value):
            state = _unset(var, environ)
            if state is None:
                continue
            provider = upstreams.get(path)
            if provider is None:
                yield ConfigWarning(path, f"${{{var}}} is {state}: it expands to an empty string")
            elif not provider.configured:  # else SIDECAR_<NAME>_UPSTREAM replaced it
                yield ConfigWarning(path, f"${{{var}}} is {state}: {provider.name} is unconfigured"
                                          " (503 provider_unconfigured)")


def _keyless(config: SidecarConfig, environ: Mapping[str, str]) -> Iterator[ConfigWarning]:
    """Configured providers whose key variable is unset: forwarded, but without the header."""
    for name, provider in config.providers.items():
        if not provider.configured:
            continue  # no request leaves for it: the unconfigured warning says enough
        missing: dict[str, list[str]] = {}
        for auth in provider.auth:
            if auth.value is None and auth.env is not None:
                missing.setdefault(auth.env, []).append(auth.header)
        for var, headers in missing.items():
            yield ConfigWarning(
                join(join("providers", name), "auth"),
                f"{var} is {_unset(var, environ) or 'empty'}: no {' or '.join(headers)} header is "
                f"injected, so requests to {name} go without a key unless the bot sends one "
                "(expect the provider's 401)")


def _bare_milliseconds(document: object, environ: Mapping[str, str]) -> Iterator[ConfigWarning]:
    """``drain_time: 30`` is 30 ms: a bare integer duration is milliseconds, as in the original."""
    found: list[tuple[str, int]] = [
        (path, value) for path, key, value in _leaves(document)
        if key in DURATION_KEYS and type(value) is int]
    for var, key in ENV_BREAKER:
        raw = environ.get(var, "").strip()
        if key in DURATION_KEYS and raw.isascii() and raw.isdigit():
            found.append((var, int(raw)))
    for where, millis in found:
        if 0 < millis < 1000:
            yield ConfigWarning(where, f"{millis} is {millis} ms: a bare integer duration is "
                                       f"milliseconds (write '{millis}s' for seconds, or "
                                       f"'{millis}ms' to say it is meant)")
