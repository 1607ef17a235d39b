"""Load, validate and dump the sidecar configuration.

``read_document`` reads YAML, ``parse_config`` turns already-parsed YAML into the frozen model of
``sidecar.config``: ``${VAR}`` expanded, environment overrides applied, defaults merged into each
provider and each provider into its routes key by key. Every problem is collected and reported
at once as ``dotted.key: message`` lines in a ``ConfigError``; ``load_config`` does both.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from types import MappingProxyType
from typing import Any

import yaml

from . import schema as s
from .dump import POLICY_KEYS, dump_effective
from .model import (
    OWN_ENDPOINTS,
    RESERVED_NAMES,
    AuthHeader,
    BreakerConfig,
    DownloadConfig,
    HealthConfig,
    LedgerConfig,
    MiB,
    ProviderConfig,
    RateLimitConfig,
    RetryConfig,
    RouteConfig,
    ServerConfig,
    SidecarConfig,
    Timeouts,
)
from .schema import ENV_BREAKER, ENV_REFERENCE, UPSTREAM_VARIABLE, upstream_variable
from .units import format_duration, parse_duration

ROUTE_POLICY_KEYS = ("retry", "timeouts", "failure_statuses", "rate_limit")
PROXY_KEYS = ("upstream", "auth", "health", "routes", "rate_limit", *s.PROVIDER_JOB_FIELDS)
ROOT_KEYS = ("server", "defaults", "providers", "ledger")
PROVIDER_KEYS = ("kind", "critical", *POLICY_KEYS, *PROXY_KEYS, *s.DOWNLOAD_FIELDS)
EMBEDDED = "<embedded default.yaml>"
__all__ = ["ConfigError", "dump_effective", "load_config", "parse_config", "read_document"]


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` holds one ``dotted.key: message`` per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class Policies:
    """The policy keys shared by ``defaults``, a provider and (partly) a route."""

    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    failure_statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    max_request_body: int = 100 * MiB
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_concurrent: int | None = None


def load_config(path: str | None, environ: Mapping[str, str]) -> SidecarConfig:
    """Load ``path``, else ``$SIDECAR_CONFIG``, else the embedded ``default.yaml``."""
    return parse_config(read_document(path, environ)[1], environ)


def read_document(path: str | None, environ: Mapping[str, str]) -> tuple[str, object]:
    """The file's name and its parsed YAML (``${VAR}`` not yet expanded), chosen as load_config does."""
    source = path or environ.get("SIDECAR_CONFIG") or None
    if source is None:
        text = resources.files("sidecar.config").joinpath("default.yaml").read_text(encoding="utf-8")
        return EMBEDDED, _parse_yaml(text, EMBEDDED)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([f"{source}: cannot read the configuration file: {reason}"]) from None
    return source, _parse_yaml(text, source)


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and not isinstance(key, list | dict):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary tags
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(source, exc)]) from None


def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    """``file: invalid YAML at line L, column C: problem (context at line l, column c)``, 1-based."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"{source}: invalid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark
    line = f"{source}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        where = exc.context_mark
        line += f" ({exc.context} at line {where.line + 1}, column {where.column + 1})"
    return " ".join(line.split())


def parse_config(data: object, environ: Mapping[str, str]) -> SidecarConfig:
    """Validate already-parsed YAML; raises ConfigError listing every problem found."""
    problems = s.Problems()
    raw = data
    try:
        data = _expand(data, environ)
    except RecursionError:
        raise ConfigError(["(top level): nested too deeply"]) from None
    root = s.as_mapping(problems, "", data)
    if root is None:
        raise ConfigError(_unexpand(problems.items, raw, environ))
    s.check_keys(problems, "", root, ROOT_KEYS)
    server = _server(problems, root.get("server"))
    ledger = _ledger(problems, root.get("ledger"))
    defaults = _defaults(problems, root.get("defaults"), environ)
    providers = _providers(problems, root.get("providers"), defaults, environ)
    _stray_upstream_variables(problems, root.get("providers"), environ)
    _check_fleet(problems, ledger, providers)
    try:
        fleet_lease_ttl(environ)
    except ValueError as exc:
        problems.add(FLEET_LEASE_TTL, str(exc))
    if problems.items:
        raise ConfigError(_unexpand(problems.items, raw, environ))
    return SidecarConfig(server=server, providers=MappingProxyType(providers), ledger=ledger)


FLEET_LEASE_TTL = "SIDECAR_FLEET_LEASE_TTL"


def fleet_lease_ttl(environ: Mapping[str, str]) -> float | None:
    """``SIDECAR_FLEET_LEASE_TTL`` in seconds (``30s``, ``500ms`` or integer ms); None when unset.

    How long a fleet concurrency slot outlives a sidecar that died holding it. Checked with the rest
    of the configuration, so a bad value is a configuration error, not a crash at start-up.
    """
    raw = environ.get(FLEET_LEASE_TTL, "").strip()
    if not raw:
        return None
    value: object = int(raw) if raw.isdigit() else raw
    seconds = parse_duration(value)  # ValueError names the problem
    if seconds <= 0:
        raise ValueError(f"must be > 0, got {raw!r}")
    return seconds


def _check_fleet(problems: s.Problems, ledger: LedgerConfig,
                 providers: Mapping[str, ProviderConfig]) -> None:
    """``breaker.shared`` needs the fleet's Redis: without it, each sidecar would silently decide
    alone while the configuration says they decide together."""
    if ledger.backend == "redis":
        return
    for name, provider in providers.items():
        if provider.breaker.shared:
            problems.add(f"{s.join('providers', name)}.breaker.shared",
                         "needs ledger.backend: redis (the fleet's breaker record lives there)")


def _rate_limit(problems: s.Problems, path: str, raw: object,
                spec: Mapping[str, s.Converter]) -> RateLimitConfig | None:
    """A ``rate_limit`` block; null or absent means none."""
    if raw is None:
        return None
    return RateLimitConfig(**s.parse_fields(problems, path, raw, spec))


def _check_budgets(problems: s.Problems, path: str, routes: tuple[RouteConfig, ...]) -> None:
    """Routes sharing a budget must agree on it: one budget has one rate and one concurrency."""
    first: dict[str, RouteConfig] = {}
    for index, route in enumerate(routes):
        limit = route.rate_limit
        if limit is None:
            continue
        name = limit.budget or route.name
        other = first.setdefault(name, route)
        assert other.rate_limit is not None
        if other is not route and _budget_terms(other.rate_limit) != _budget_terms(limit):
            problems.add(f"{s.join(path, index)}.rate_limit",
                         f"budget {name!r} is also used by route {other.name!r} with other "
                         "requests_per_minute, burst or concurrency: a shared budget has one of each")


def _budget_terms(limit: RateLimitConfig) -> tuple[float | None, int, int | None]:
    return limit.requests_per_minute, limit.burst, limit.concurrency


def _expand(value: object, environ: Mapping[str, str]) -> object:
    """Replace ``${VAR}`` in every string value (not keys); unset variables become ""."""
    if isinstance(value, str):
        return ENV_REFERENCE.sub(lambda m: environ.get(m.group(1), ""), value)
    if isinstance(value, Mapping):
        return {key: _expand(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ) for item in value]
    return value


def _unexpand(lines: list[str], raw: object, environ: Mapping[str, str]) -> list[str]:
    """Problem lines quote bad values; one that came from ``${VAR}`` may be a secret: name VAR instead."""
    for name in set(ENV_REFERENCE.findall(repr(raw))):
        value = environ.get(name, "")
        if len(value) >= 4:  # s.show() cuts a long repr to 56 characters of the value
            ref = f"${{{name}}}"
            lines = [line.replace(value, ref).replace(value[:56], ref) for line in lines]
    return lines


def _pick(block: Mapping[str, object], keys: tuple[str, ...]) -> dict[str, object]:
    return {key: block[key] for key in keys if key in block}


def _server(problems: s.Problems, raw: object) -> ServerConfig:
    server = ServerConfig(**s.parse_fields(problems, "server", raw, s.SERVER_FIELDS))
    if server.port and server.port == server.ops_port and server.host == server.ops_host:
        problems.add("server.ops_port", f"must differ from server.port, got {server.port}")
    return server


def _ledger(problems: s.Problems, raw: object) -> LedgerConfig:
    ledger = LedgerConfig(**s.parse_fields(problems, "ledger", raw, s.LEDGER_FIELDS))
    if ledger.backend == "redis" and not ledger.url:
        problems.add("ledger.url", "is required when ledger.backend is redis")
    return ledger


def _policies(problems: s.Problems, path: str, block: Mapping[str, object],
              base: Policies) -> Policies:
    """``base`` with each key present in ``block`` overridden, nested blocks key by key."""
    nested = (("breaker", s.BREAKER_FIELDS), ("retry", s.RETRY_FIELDS),
              ("timeouts", s.TIMEOUT_FIELDS))
    changes: dict[str, Any] = {}
    for key, spec in nested:
        if key in block:
            values = s.parse_fields(problems, s.join(path, key), block[key], spec)
            changes[key] = replace(getattr(base, key), **values)
    scalars = _pick(block, tuple(s.POLICY_SCALARS))
    changes.update(s.parse_fields(problems, path, scalars, s.POLICY_SCALARS))
    return replace(base, **changes)


def _check_breaker(problems: s.Problems, path: str, breaker: BreakerConfig) -> None:
    ceiling = breaker.max_recovery_timeout
    if ceiling is not None and ceiling < breaker.recovery_timeout:
        problems.add(f"{path}.max_recovery_timeout",
                     f"must be >= recovery_timeout ({format_duration(breaker.recovery_timeout)}),"
                     f" got {format_duration(ceiling)}")


def _defaults(problems: s.Problems, raw: object, environ: Mapping[str, str]) -> Policies:
    block = s.as_mapping(problems, "defaults", raw) or {}
    s.check_keys(problems, "defaults", block, POLICY_KEYS)
    policies = _policies(problems, "defaults", block, Policies())
    breaker = replace(policies.breaker, **_env_breaker(problems, environ))
    _check_breaker(problems, "defaults.breaker", breaker)
    return replace(policies, breaker=breaker)


def _env_breaker(problems: s.Problems, environ: Mapping[str, str]) -> dict[str, Any]:
    """``CB_*`` variables as breaker fields; times are integer milliseconds (or '30s')."""
    values: dict[str, Any] = {}
    for var, key in ENV_BREAKER:
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        value: object = int(raw) if re.fullmatch(r"[0-9]{1,15}", raw) else raw
        ok, result = s.convert(problems, var, value, s.BREAKER_FIELDS[key])
        if ok:
            values[key] = result
    return values


def _providers(problems: s.Problems, raw: object, defaults: Policies,
               environ: Mapping[str, str]) -> dict[str, ProviderConfig]:
    providers: dict[str, ProviderConfig] = {}
    for name, body in (s.as_mapping(problems, "providers", raw) or {}).items():
        path = s.join("providers", name)
        if not s.PROVIDER_NAME.fullmatch(name):
            problems.add(path, "a provider name must match [a-z0-9][a-z0-9_-]*")
        elif name in RESERVED_NAMES:
            problems.add(path, f"{name!r} is reserved " + (
                "for the sidecar's own endpoints" if name in OWN_ENDPOINTS
                else "as the metrics label of requests that name no provider"))
        else:
            provider = _provider(problems, name, body, defaults, environ)
            if provider is not None:
                providers[name] = provider
    return providers


def _provider(problems: s.Problems, name: str, raw: object, defaults: Policies,
              environ: Mapping[str, str]) -> ProviderConfig | None:
    path = s.join("providers", name)
    block = s.as_mapping(problems, path, raw)
    if block is None:
        return None
    s.check_keys(problems, path, block, PROVIDER_KEYS)
    head = s.parse_fields(problems, path, _pick(block, ("kind", "critical")),
                          {"kind": s.one_of("proxy", "download"), "critical": s.boolean})
    policies = _policies(problems, path, _pick(block, POLICY_KEYS), defaults)
    own_breaker = block.get("breaker")
    if isinstance(own_breaker, Mapping) and {"recovery_timeout", "max_recovery_timeout"} & set(
            own_breaker):
        _check_breaker(problems, f"{path}.breaker", policies.breaker)
    if block.get("kind") == "download":
        parts = _download_parts(problems, name, path, block, environ)
    else:
        parts = _proxy_parts(problems, name, path, block, policies, environ)
    inherited = {f.name: getattr(policies, f.name) for f in fields(Policies)}
    return ProviderConfig(name=name, **head, **inherited, **parts)


def _refuse(problems: s.Problems, path: str, block: Mapping[str, object],
            keys: tuple[str, ...], why: str) -> None:
    for key in keys:
        if key in block:
            problems.add(s.join(path, key), why)


def _stray_upstream_variables(problems: s.Problems, raw: object,
                              environ: Mapping[str, str]) -> None:
    """A ``SIDECAR_<NAME>_UPSTREAM`` that matches no provider is a typo that would go unnoticed."""
    names = sorted(k for k in raw if isinstance(k, str)) if isinstance(raw, Mapping) else []
    expected = {upstream_variable(name) for name in names}
    for var in sorted(environ):
        if UPSTREAM_VARIABLE.fullmatch(var) and var not in expected and environ[var].strip():
            problems.add(var, "names no provider of this configuration (providers: "
                              f"{', '.join(names) or 'none'})")


def _download_parts(problems: s.Problems, name: str, path: str, block: Mapping[str, object],
                    environ: Mapping[str, str]) -> dict[str, Any]:
    _refuse(problems, path, block, PROXY_KEYS, "is not used by kind: download")
    if environ.get(upstream_variable(name), "").strip():
        problems.add(upstream_variable(name), f"provider {name} is kind: download: no upstream")
    values = s.parse_fields(problems, path, _pick(block, tuple(s.DOWNLOAD_FIELDS)),
                            s.DOWNLOAD_FIELDS)
    return {"download": DownloadConfig(**values)}


def _proxy_parts(problems: s.Problems, name: str, path: str, block: Mapping[str, object],
                 policies: Policies, environ: Mapping[str, str]) -> dict[str, Any]:
    _refuse(problems, path, block, tuple(s.DOWNLOAD_FIELDS), "is only for kind: download")
    var = upstream_variable(name)
    override = environ.get(var, "").strip()
    where, raw = (var, override) if override else (f"{path}.upstream", block.get("upstream"))
    ok, upstream = s.convert(problems, where, raw or "", s.upstream_url)
    health = None
    if block.get("health") is not None:
        values = s.parse_fields(problems, f"{path}.health", block["health"], s.HEALTH_FIELDS)
        health = HealthConfig(**values)
    jobs = s.parse_fields(problems, path, _pick(block, tuple(s.PROVIDER_JOB_FIELDS)),
                          s.PROVIDER_JOB_FIELDS)
    # Replicate can be asked what became of a create: that is the default for the provider so named.
    jobs.setdefault("reconcile", "replicate" if name == "replicate" else None)
    routes = _routes(problems, f"{path}.routes", block.get("routes"), policies)
    _check_budgets(problems, f"{path}.routes", routes)
    return {
        **jobs,
        "upstream": upstream if ok else "",
        "auth": _auth(problems, f"{path}.auth", block.get("auth"), environ),
        "health": health,
        "routes": routes,
        "rate_limit": _rate_limit(problems, f"{path}.rate_limit", block.get("rate_limit"),
                                  s.RATE_LIMIT_FIELDS),
    }


def _auth(problems: s.Problems, path: str, raw: object,
          environ: Mapping[str, str]) -> tuple[AuthHeader, ...]:
    """One ``{header, prefix, env}`` mapping or a list of them; secrets come from ``environ``."""
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        entries = [(path, raw)]
    elif isinstance(raw, list):
        entries = [(s.join(path, index), entry) for index, entry in enumerate(raw)]
    else:
        problems.add(path, f"must be a mapping {{header, prefix, env}} or a list of them, "
                           f"got {s.type_name(raw)}")
        return ()
    headers: list[AuthHeader] = []
    for where, entry in entries:
        values = s.parse_fields(problems, where, entry, s.AUTH_FIELDS, required=("header", "env"))
        values.pop("value", None)
        if "header" not in values or "env" not in values:
            continue
        if values["header"].lower() in {h.header.lower() for h in headers}:
            problems.add(f"{where}.header", f"duplicate header {values['header']!r}")
        secret = environ.get(values["env"], "").strip() or None
        if secret is not None and ("\r" in secret or "\n" in secret):
            problems.add(values["env"], "contains a line break (the value is not shown)")
        headers.append(AuthHeader(**values, value=secret))
    return tuple(headers)


def _routes(problems: s.Problems, path: str, raw: object,
            policies: Policies) -> tuple[RouteConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add(path, f"must be a list of routes, got {s.type_name(raw)}")
        return ()
    routes: list[RouteConfig] = []
    for index, entry in enumerate(raw):
        route = _route(problems, s.join(path, index), entry, policies)
        if route is not None:
            if route.name in {r.name for r in routes}:
                problems.add(s.join(path, index) + ".name", f"duplicate route {route.name!r}")
            routes.append(route)
    return tuple(routes)


def _route(problems: s.Problems, path: str, raw: object, policies: Policies) -> RouteConfig | None:
    block = s.as_mapping(problems, path, raw)
    if block is None:
        return None
    s.check_keys(problems, path, block, (*s.ROUTE_FIELDS, *ROUTE_POLICY_KEYS))
    before = len(problems.items)
    values = s.parse_fields(problems, path, _pick(block, tuple(s.ROUTE_FIELDS)), s.ROUTE_FIELDS,
                            required=("name", "path"))
    merged = _policies(problems, path, _pick(block, ROUTE_POLICY_KEYS), policies)
    if values.get("idempotency_window") is not None and not values.get("creates_job"):
        problems.add(f"{path}.idempotency_window", "needs creates_job: true on the same route")
    limit = _rate_limit(problems, f"{path}.rate_limit", block.get("rate_limit"),
                        s.ROUTE_RATE_LIMIT_FIELDS)
    if len(problems.items) != before:
        return None
    return RouteConfig(**values, retry=merged.retry, timeouts=merged.timeouts,
                       failure_statuses=merged.failure_statuses, rate_limit=limit)
