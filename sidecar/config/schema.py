"""Schema pieces for ``config.load``: typed converters, field tables and dotted-key problems.

A converter takes the raw YAML value and returns the typed value or raises ``ValueError`` whose
message completes the sentence ``"<dotted.key>: <message>"``. Every converter is a ``Rule``: it
carries the JSON Schema of the values it accepts, written next to the code that accepts them, so
that ``config.json_schema`` describes the same rules the loader applies. A value that is a string
holding ``${VAR}`` can become anything once expanded: the JSON Schema of a non-string field also
admits such a string (and only such a string).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from .redis_address import parse_redis_url
from .units import parse_duration, parse_size

Converter = Callable[[object], Any]
Json = dict[str, Any]
T = TypeVar("T")

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
ROUTE_NAME = re.compile(r"[a-z0-9_]+")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
METHOD = re.compile(r"[A-Z]+")
HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?")
TEMPLATE_VAR = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")
NUMBER = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?\s*")
PLAIN_KEY = re.compile(r"[^\s.\[\]'\"]+")
REDACTED = "<redacted>"
# Environment variables: ``${VAR}`` in any string value, the breaker overrides (times in integer
# milliseconds, as in the original system) and one upstream override per provider.
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ENV_BREAKER = (("CB_FAILURE_THRESHOLD", "failure_threshold"),
               ("CB_RECOVERY_TIMEOUT", "recovery_timeout"),
               ("CB_MONITORING_PERIOD", "monitoring_period"))
UPSTREAM_VARIABLE = re.compile(r"SIDECAR_[A-Z0-9_]+_UPSTREAM")


# The JSON Schema of a ``${VAR}`` string (``pattern`` is unanchored: it contains one).
ENV_STRING: Json = {"type": "string", "pattern": ENV_REFERENCE.pattern}


class Rule(Generic[T]):
    """A converter with the JSON Schema of the raw values it accepts."""

    __slots__ = ("_convert", "json")

    def __init__(self, convert: Callable[[object], T], json: Json) -> None:
        self._convert = convert
        self.json = json

    def __call__(self, value: object) -> T:
        return self._convert(value)


def rule(json: Json) -> Callable[[Callable[[object], T]], Rule[T]]:
    """Decorate a converter function with its JSON Schema."""
    def wrap(convert: Callable[[object], T]) -> Rule[T]:
        return Rule(convert, json)
    return wrap


def or_env(json: Json) -> Json:
    """``json``, or a string holding ``${VAR}`` (expanded before the loader converts it)."""
    return {"anyOf": [*json.get("anyOf", [json]), ENV_STRING]}


def anchored(pattern: str) -> str:
    """A JSON Schema ``pattern`` (unanchored by definition) that must match the whole string."""
    return f"^(?:{pattern})$"


# Durations and sizes as strings (``units`` parses them); the *_NONZERO forms need a digit other
# than 0 in the number, so "0s" and "0.0MiB" are refused where zero is.
_AMOUNT = r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+"
_AMOUNT_NONZERO = r"[0-9]*[1-9][0-9]*(?:\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*|\.[0-9]*[1-9][0-9]*"
_SIZE_UNIT = r"(?:[kKmMgGtT][iI]?)?[bB]"


def _duration_pattern(amount: str) -> str:
    return anchored(rf"\s*(?:{amount})\s*(?:ms|s|m|h)\s*")


def _size_pattern(amount: str, digits: str) -> str:
    return anchored(rf"\s*(?:{digits})\s*|\s*(?:{amount})\s*{_SIZE_UNIT}\s*")


def upstream_variable(provider: str) -> str:
    """``SIDECAR_FILE_DOWNLOAD_UPSTREAM`` for ``file-download``: the provider's upstream override."""
    return f"SIDECAR_{provider.upper().replace('-', '_')}_UPSTREAM"


class Problems:
    """Collects every problem as one ``dotted.key: message`` line."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        line = f"{path or '(top level)'}: {message}"
        self.items.append(" ".join(line.splitlines()))


def join(path: str, key: str | int) -> str:
    """``join("a.routes", 0) == "a.routes[0]"``; ``join("a", "b") == "a.b"``; odd keys quoted."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not PLAIN_KEY.fullmatch(key):
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    """The YAML-ish name of a value's type, for messages."""
    if value is None:
        return "null"
    names = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
             (Mapping, "a mapping"), (list, "a list"))
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def show(value: object) -> str:
    """A short ``repr`` for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_mapping(problems: Problems, path: str, value: object) -> dict[str, object] | None:
    """``value`` as a str-keyed dict (null counts as empty), or None after recording a problem."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.add(path, f"must be a mapping, got {type_name(value)}")
        return None
    for key in value:
        if not isinstance(key, str):
            problems.add(path, f"keys must be strings, got {show(key)}")
    return {k: v for k, v in value.items() if isinstance(k, str)}


def check_keys(problems: Problems, path: str, block: Mapping[str, object],
               allowed: Iterable[str]) -> None:
    """Record every key of ``block`` that is not in ``allowed``."""
    allowed = sorted(allowed)
    for key in block:
        if key not in allowed:
            problems.add(join(path, key), f"unknown key (expected one of: {', '.join(allowed)})")


def convert(problems: Problems, path: str, value: object,
            converter: Converter) -> tuple[bool, Any]:
    """Run ``converter``: ``(True, result)``, or ``(False, None)`` after recording the problem."""
    try:
        return True, converter(value)
    except ValueError as exc:
        problems.add(path, str(exc))
        return False, None


def parse_fields(problems: Problems, path: str, raw: object, spec: Mapping[str, Converter],
                 *, required: Iterable[str] = ()) -> dict[str, Any]:
    """Convert each key of the mapping ``raw`` with ``spec``; unknown or missing keys are problems.

    Only keys that converted cleanly are in the result, ready for ``dataclasses.replace``.
    """
    block = as_mapping(problems, path, raw)
    if block is None:
        return {}
    check_keys(problems, path, block, spec)
    for key in required:
        if key not in block:
            problems.add(join(path, key), "is required")
    out: dict[str, Any] = {}
    for key, value in block.items():
        if key in spec:
            ok, result = convert(problems, join(path, key), value, spec[key])
            if ok:
                out[key] = result
    return out


# --- converters -------------------------------------------------------------------------------

def _bounds(minimum: float | None, maximum: float | None) -> Json:
    return {k: v for k, v in (("minimum", minimum), ("maximum", maximum)) if v is not None}


def integer(minimum: int | None = None, maximum: int | None = None) -> Rule[int]:
    def conv(value: object) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
            value = int(value)  # e.g. from ${VAR}
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {show(value)}")
        _check_range(value, minimum, maximum)
        return value
    return Rule(conv, or_env({"type": "integer", **_bounds(minimum, maximum)}))


def number(minimum: float | None = None, maximum: float | None = None,
           *, above: float | None = None) -> Rule[float]:
    def conv(value: object) -> float:
        if isinstance(value, str) and NUMBER.fullmatch(value):
            value = float(value)  # e.g. from ${VAR}
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {show(value)}")
        result = float(value)
        if not math.isfinite(result):
            raise ValueError(f"must be a finite number, got {show(value)}")
        if above is not None and result <= above:
            raise ValueError(f"must be > {above:g}, got {result:g}")
        _check_range(result, minimum, maximum)
        return result
    json: Json = {"type": "number", **_bounds(minimum, maximum)}
    if above is not None:
        json["exclusiveMinimum"] = above
    # A decimal string too: `helm --set x=0.5` gives the string "0.5" (the range is the loader's).
    decimal = {"type": "string", "pattern": anchored(NUMBER.pattern)}
    return Rule(conv, or_env({"anyOf": [json, decimal]}))


def _check_range(value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be <= {maximum:g}, got {value:g}")


def duration(*, allow_zero: bool = False) -> Rule[float]:
    def conv(value: object) -> float:
        seconds = parse_duration(value)
        if seconds == 0 and not allow_zero:
            raise ValueError(f"must be > 0, got {show(value)}")
        return seconds
    amount = _AMOUNT if allow_zero else _AMOUNT_NONZERO
    return Rule(conv, or_env({"anyOf": [
        {"type": "integer", "minimum": 0 if allow_zero else 1},
        {"type": "string", "pattern": _duration_pattern(amount)}]}))


def size(minimum: int = 0) -> Rule[int]:
    def conv(value: object) -> int:
        result = parse_size(value)
        if result < minimum:
            raise ValueError(f"must be >= {minimum} bytes, got {show(value)}")
        return result
    if minimum > 1:
        raise ValueError("the JSON Schema of a size knows the minimums 0 and 1 only")
    amount, digits = ((_AMOUNT_NONZERO, "[0-9]*[1-9][0-9]*") if minimum
                      else (_AMOUNT, "[0-9]+"))
    return Rule(conv, or_env({"anyOf": [
        {"type": "integer", "minimum": minimum},
        {"type": "string", "pattern": _size_pattern(amount, digits)}]}))


@rule(or_env({"type": "boolean"}))
def boolean(value: object) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"  # e.g. from ${VAR}
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {show(value)}")
    return value


def optional(inner: Rule[T]) -> Rule[T | None]:
    def conv(value: object) -> T | None:
        return None if value is None else inner(value)
    return Rule(conv, {"anyOf": [{"type": "null"}, *inner.json.get("anyOf", [inner.json])]})


def one_of(*choices: str) -> Rule[str]:
    def conv(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {show(value)}")
        assert isinstance(value, str)
        return value
    return Rule(conv, or_env({"enum": list(choices)}))


@rule({"type": "string", "pattern": anchored(r"[^\r\n]*")})
def string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type_name(value)}")
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain a line break")
    return value


def text(pattern: re.Pattern[str], what: str) -> Rule[str]:
    def conv(value: object) -> str:
        result = string(value)
        if not pattern.fullmatch(result):
            raise ValueError(f"must be {what}, got {show(value)}")
        return result
    return Rule(conv, or_env({"type": "string", "pattern": anchored(pattern.pattern)}))


@rule({"type": "array", "items": integer(100, 599).json})
def statuses(value: object) -> frozenset[int]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of HTTP status codes, got {type_name(value)}")
    status = integer(100, 599)
    result: set[int] = set()
    for index, item in enumerate(value):
        try:
            result.add(status(item))
        except ValueError as exc:
            raise ValueError(f"item {index} {exc}") from None
    return frozenset(result)


@rule(or_env({"type": "string", "pattern": anchored("[A-Za-z]+")}))
def method(value: object) -> str:
    name = string(value).upper()
    if not METHOD.fullmatch(name):
        raise ValueError(f"must be an HTTP method name like GET or POST, got {show(value)}")
    return name


_SEGMENT = r"(?:[^/?#{}\r\n]*|\{[A-Za-z_][A-Za-z0-9_]*\})"


@rule(or_env({"type": "string", "pattern": anchored(f"/{_SEGMENT}(?:/{_SEGMENT})*")}))
def path_template(value: object) -> str:
    """A route path: ``/v1/models/{owner}/{name}``, no query; ``{var}`` is one whole segment."""
    path = string(value)
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ValueError(f"must start with '/' and have no query, got {show(value)}")
    for segment in path.split("/"):
        if TEMPLATE_VAR.fullmatch(segment) is None and ("{" in segment or "}" in segment):
            raise ValueError(f"'{{var}}' must be a whole path segment, got {segment!r}")
    return path


@rule(or_env({"type": "string", "pattern": anchored(r"/[^# \r\n]*")}))
def probe_path(value: object) -> str:
    """A health probe target: ``/v1/account`` or ``/v2/generations?limit=1``."""
    path = string(value)
    if not path.startswith("/") or "#" in path or " " in path:
        raise ValueError(f"must start with '/' (a query is allowed), got {show(value)}")
    return path


_ORIGIN = r"[hH][tT][tT][pP][sS]?://(?:[^/?#@\s:\[][^/?#@\s]*|\[[0-9a-fA-F:.]+\](?::[0-9]+)?)"


@rule(or_env({"type": "string", "pattern": anchored(rf"\s*(?:{_ORIGIN}(?:/[^?#\s]*)?)?\s*")}))
def upstream_url(value: object) -> str:
    """An http(s) URL without query, fragment or credentials; trailing slashes removed."""
    url = string(value).strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc}): {show(url)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL like https://api.example.com, got {show(url)}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"must not have a query or fragment, got {show(url)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; use auth: with env: instead")
    return url.rstrip("/")


# An allowed_hosts entry: a name (``*.`` wildcard allowed, any case) or an IP literal; an IPv6
# one is only roughly checked here (the loader parses it).
_HOST_ENTRY = (r"\s*(?:(?:\*\.)?[a-zA-Z0-9_](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9_])?"
               r"|\[[0-9a-fA-F.]*:[0-9a-fA-F:.]*\]|[0-9a-fA-F.]*:[0-9a-fA-F:.]*)\s*")


@rule({"type": "array", "items": or_env({"type": "string", "pattern": anchored(_HOST_ENTRY)})})
def host_list(value: object) -> tuple[str, ...]:
    """``allowed_hosts``: names (``*.`` wildcards allowed), lower-cased; IP literals, IPv6 bare or
    bracketed, in their canonical form (``[0:0::1]`` becomes ``::1``)."""
    if not isinstance(value, list):
        raise ValueError(f"must be a list of host names, got {type_name(value)}")
    hosts = []
    for index, item in enumerate(value):
        host = allowed_host(item)
        if host is None:
            raise ValueError(
                f"item {index} must be a host name like api.example.com or *.example.com, "
                f"or an IP address like 192.0.2.7, ::1 or [::1], got {show(item)}")
        hosts.append(host)
    return tuple(hosts)


def allowed_host(item: object) -> str | None:
    """One ``allowed_hosts`` entry in canonical form, or None when it is neither name nor address."""
    if not isinstance(item, str):
        return None
    host = item.strip().lower()
    if ":" in host or host.startswith("["):
        literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if "%" in literal:
            return None  # a zone names a link, not a host: the entry would be ambiguous
        try:
            return str(ipaddress.IPv6Address(literal))
        except ValueError:
            return None
    return host if HOST_PATTERN.fullmatch(host) else None


@rule({"type": "array", "minItems": 1, "items": or_env({"enum": ["http", "https"]})})
def schemes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of http/https, got {show(value)}")
    allowed = one_of("http", "https")
    return tuple(dict.fromkeys(allowed(item) for item in value))


@rule({"enum": [None, REDACTED]})
def redacted_placeholder(value: object) -> None:
    """``value:`` in an auth entry exists only so that a dump re-loads; it is never a secret."""
    if value is not None and value != REDACTED:
        raise ValueError(  # the value itself is never echoed: it may be a real key
            f"must be null or {REDACTED!r}: secrets are read from the variable named by env:")


# --- field tables -----------------------------------------------------------------------------

BREAKER_FIELDS: dict[str, Converter] = {
    "failure_threshold": integer(1),
    "monitoring_period": duration(),
    "failure_rate_threshold": number(maximum=1.0, above=0.0),
    "minimum_calls": integer(0),
    "recovery_timeout": duration(),
    "max_recovery_timeout": optional(duration()),
    "success_threshold": integer(1),
    "half_open_max_calls": integer(1),
    "slow_call_duration": optional(duration()),
    "shared": boolean,
}
RETRY_FIELDS: dict[str, Converter] = {
    "max_attempts": integer(1),
    "base_delay": duration(allow_zero=True),
    "max_delay": duration(allow_zero=True),
    "exponential_base": number(1.0),
    "jitter": boolean,
    "retry_statuses": statuses,
    "budget_ratio": number(0.0),
    "budget_min_per_second": number(0.0),
    "max_buffered_body": size(),
}
TIMEOUT_FIELDS: dict[str, Converter] = {
    "connect": duration(), "attempt": duration(), "total": duration(),
}
HEALTH_FIELDS: dict[str, Converter] = {
    "method": method, "path": probe_path, "interval": duration(), "timeout": duration(),
}
SERVER_FIELDS: dict[str, Converter] = {
    "host": text(re.compile(r"\S+"), "a host name or address"),
    "port": integer(0, 65535),
    "ops_host": text(re.compile(r"\S+"), "a host name or address"),
    "ops_port": integer(0, 65535),
    "drain_time": duration(allow_zero=True),
    "shutdown_grace": duration(allow_zero=True),
    "header_read_timeout": duration(),
    "access_log": boolean,
}
DOWNLOAD_FIELDS: dict[str, Converter] = {
    "allowed_hosts": host_list,
    "allowed_schemes": schemes,
    "max_download_size": size(1),
    "allow_private_networks": boolean,
    "max_redirects": integer(0, 20),
}
PROVIDER_HEAD_FIELDS: dict[str, Converter] = {
    "kind": one_of("proxy", "download"),
    "critical": boolean,
}
POLICY_SCALARS: dict[str, Converter] = {
    "failure_statuses": statuses,
    "max_request_body": size(1),
    "max_concurrent": optional(integer(1)),
}
AUTH_FIELDS: dict[str, Converter] = {
    "header": text(HEADER_NAME, "an HTTP header name"),
    "prefix": string,
    "env": text(ENV_NAME, "an environment variable name"),
    "value": redacted_placeholder,
}
RATE_LIMIT_FIELDS: dict[str, Converter] = {
    "requests_per_minute": optional(number(above=0.0)),
    "burst": integer(1),
    "concurrency": optional(integer(1)),
    "max_wait": duration(allow_zero=True),
    "max_pause": duration(allow_zero=True),
}
# Only on a route: routes naming the same budget count in one budget (a route's own by default).
ROUTE_RATE_LIMIT_FIELDS: dict[str, Converter] = {
    **RATE_LIMIT_FIELDS,
    "budget": text(ROUTE_NAME, "lower-case letters, digits and '_'"),
}


@rule(or_env({"type": "string", "pattern": anchored(
    r"\s*[rR][eE][dD][iI][sS][sS]?://(?:[^@/?#\s]*@)?[^/?#@\s:][^\s]*\s*")}))
def redis_url(value: object) -> str:
    """``redis://`` or ``rediss://`` (TLS) with a host; a password in it is allowed (``${VAR}``)."""
    url = string(value).strip()
    parse_redis_url(url)  # ValueError says what is wrong
    return url


ROUTE_FIELDS: dict[str, Converter] = {
    "name": text(ROUTE_NAME, "lower-case letters, digits and '_'"),
    "method": optional(method),
    "path": path_template,
    "idempotent": optional(boolean),
    "creates_job": boolean,
    "idempotency_window": optional(duration()),
}
# Proxy providers only: how the job ledger treats the provider.
PROVIDER_JOB_FIELDS: dict[str, Converter] = {
    "native_idempotency": boolean,
    "reconcile": optional(one_of("replicate")),
}


@rule({"anyOf": [*redis_url.json["anyOf"], {"type": "string", "pattern": anchored(r"\s*")}]})
def ledger_url(value: object) -> str | None:
    """``redis_url``, with an empty value (an unset ``${VAR}``) read as null."""
    if isinstance(value, str) and not value.strip():
        return None
    return redis_url(value)


LEDGER_FIELDS: dict[str, Converter] = {
    "backend": one_of("sqlite", "memory", "redis"),
    "path": optional(text(re.compile(r".+"), "a file path")),
    "url": optional(ledger_url),
    "prefix": text(re.compile(r"[!-~]{1,64}"), "1 to 64 printable characters without spaces"),
    "ttl": duration(),
    "max_stored_body": size(),
    "max_entries": optional(integer(1)),
    "on_unavailable": one_of("forward", "refuse"),
}
