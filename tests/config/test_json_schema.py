"""The configuration's JSON Schema says what the loader says: the same verdict on a corpus of good
and bad documents (the default configuration included), generated from the loader's own field tables
as well as written by hand; the published copy is current; the known differences are pinned."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sidecar.config import schema as s
from sidecar.config.dump import dump_effective
from sidecar.config.json_schema import config_schema, render_schema
from sidecar.config.load import ConfigError, load_config, parse_config, read_document

ROOT = Path(__file__).resolve().parents[2]
FULL = jsonschema.Draft7Validator(config_schema())
PARTIAL = jsonschema.Draft7Validator(config_schema(partial=True))
DEFAULT: dict[str, Any] = read_document(None, {})[1]  # type: ignore[assignment]
# The variables the ${VAR} cases name: the loader sees their values, the schema only the reference.
ENVIRON = {"N": "3", "BFL_URL": "https://bfl.example"}


def loader_accepts(document: object) -> bool:
    try:
        parse_config(document, ENVIRON)
    except ConfigError:
        return False
    return True


def schema_errors(document: object, validator: jsonschema.Draft7Validator = FULL) -> list[str]:
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def with_value(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """The default document with the value at ``path`` set (blocks on the way created)."""
    document = copy.deepcopy(DEFAULT)
    node: Any = document
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return document


# Where each field table's keys live in a document, and a valid value for each kind of field.
BLOCKS: dict[str, tuple[tuple[str | int, ...], Mapping[str, s.Converter]]] = {
    "server": (("server",), s.SERVER_FIELDS),
    "breaker": (("defaults", "breaker"), s.BREAKER_FIELDS),
    "retry": (("defaults", "retry"), s.RETRY_FIELDS),
    "timeouts": (("providers", "replicate", "timeouts"), s.TIMEOUT_FIELDS),
    "health": (("providers", "replicate", "health"), s.HEALTH_FIELDS),
    "download": (("providers", "file-download"), s.DOWNLOAD_FIELDS),
    "scalars": (("providers", "bfl"), s.POLICY_SCALARS),
    "head": (("providers", "bfl"), s.PROVIDER_HEAD_FIELDS),
    "auth": (("providers", "replicate", "auth"), s.AUTH_FIELDS),
    "route": (("providers", "replicate", "routes", 0), s.ROUTE_FIELDS),
    "rate_limit": (("providers", "bfl", "rate_limit"), s.RATE_LIMIT_FIELDS),
    "route_rate_limit": (("providers", "replicate", "routes", 0, "rate_limit"),
                         s.ROUTE_RATE_LIMIT_FIELDS),
    "ledger": (("ledger",), s.LEDGER_FIELDS),
    "jobs": (("providers", "bfl"), s.PROVIDER_JOB_FIELDS),
}
# (Not a float: JSON Schema counts 5.0 as an integer where the loader wants an int.)
WRONG_VALUES = ({"a": 1}, [{"a": 1}])


def generated_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    """For every key of every field table: an unknown sibling key, and values of a wrong shape."""
    for name, (where, spec) in BLOCKS.items():
        yield f"{name}.unknown_key", with_value((*where, "surely_not_a_key"), 1)
        for key in spec:
            if name == "head" and key == "kind":
                continue  # another kind is a different block, not a wrong value
            for index, value in enumerate(WRONG_VALUES):
                yield f"{name}.{key}#{index}", with_value((*where, key), value)


HAND_CASES: list[tuple[str, tuple[str | int, ...], object, bool]] = [
    ("breaker typo", ("providers", "replicate", "breaker", "failur_threshold"), 3, False),
    ("threshold 0", ("providers", "replicate", "breaker", "failure_threshold"), 0, False),
    ("threshold string", ("providers", "replicate", "breaker", "failure_threshold"), "abc", False),
    ("threshold from env", ("providers", "replicate", "breaker", "failure_threshold"), "${N}", True),
    ("rate 0", ("defaults", "breaker", "failure_rate_threshold"), 0, False),
    ("rate 1", ("defaults", "breaker", "failure_rate_threshold"), 1, True),
    ("rate 1.5", ("defaults", "breaker", "failure_rate_threshold"), 1.5, False),
    ("duration ms int", ("defaults", "breaker", "recovery_timeout"), 30000, True),
    ("duration 250ms", ("defaults", "breaker", "recovery_timeout"), "250ms", True),
    ("duration 1.5s", ("defaults", "breaker", "recovery_timeout"), " 1.5 s ", True),
    ("duration 0s", ("defaults", "breaker", "recovery_timeout"), "0s", False),
    ("duration 0", ("defaults", "breaker", "recovery_timeout"), 0, False),
    ("duration negative", ("defaults", "breaker", "recovery_timeout"), -5, False),
    ("duration bad unit", ("defaults", "breaker", "recovery_timeout"), "5 minutes", False),
    ("duration upper unit", ("defaults", "breaker", "recovery_timeout"), "5S", False),
    ("zero allowed", ("server", "drain_time"), "0s", True),
    ("zero int allowed", ("server", "drain_time"), 0, True),
    ("optional null", ("defaults", "breaker", "slow_call_duration"), None, True),
    ("optional set", ("defaults", "breaker", "slow_call_duration"), "2s", True),
    ("size MiB", ("defaults", "max_request_body"), "10MiB", True),
    ("size lower unit", ("defaults", "max_request_body"), "10mib", True),
    ("size bytes string", ("defaults", "max_request_body"), "2048", True),
    ("size 0 refused", ("defaults", "max_request_body"), 0, False),
    ("size 0MiB refused", ("defaults", "max_request_body"), "0MiB", False),
    ("size 0 allowed", ("defaults", "retry", "max_buffered_body"), 0, True),
    ("size bad unit", ("defaults", "max_request_body"), "10 lots", False),
    ("bool", ("server", "access_log"), True, True),
    ("bool int", ("server", "access_log"), 1, False),
    ("port range", ("server", "port"), 70000, False),
    ("port bool", ("server", "port"), True, False),
    ("statuses", ("defaults", "failure_statuses"), [500, 503], True),
    ("statuses range", ("defaults", "failure_statuses"), [500, 99], False),
    ("statuses scalar", ("defaults", "failure_statuses"), 500, False),
    ("max_concurrent null", ("defaults", "max_concurrent"), None, True),
    ("max_concurrent 0", ("defaults", "max_concurrent"), 0, False),
    ("kind", ("providers", "bfl", "kind"), "proxi", False),
    ("upstream", ("providers", "bfl", "upstream"), "ftp://x", False),
    ("upstream query", ("providers", "bfl", "upstream"), "https://x/?a=1", False),
    ("upstream credentials", ("providers", "bfl", "upstream"), "https://u:p@x", False),
    ("upstream prefix", ("providers", "bfl", "upstream"), "https://x.example/api/v2/", True),
    ("upstream ipv6", ("providers", "bfl", "upstream"), "http://[::1]:8080", True),
    ("upstream empty", ("providers", "bfl", "upstream"), "", True),
    ("upstream from env", ("providers", "bfl", "upstream"), "${BFL_URL}", True),
    ("method", ("providers", "replicate", "health", "method"), "get", True),
    ("method bad", ("providers", "replicate", "health", "method"), "GE T", False),
    ("probe path", ("providers", "replicate", "health", "path"), "/v1?x=1", True),
    ("probe path relative", ("providers", "replicate", "health", "path"), "v1", False),
    ("health null", ("providers", "replicate", "health"), None, True),
    ("auth list", ("providers", "replicate", "auth"),
     [{"header": "Authorization", "env": "A"}, {"header": "X-Key", "env": "B"}], True),
    ("auth entry needs env", ("providers", "replicate", "auth"), {"header": "X-Key"}, False),
    ("auth header name", ("providers", "replicate", "auth"), {"header": "X Key", "env": "A"}, False),
    ("auth scalar", ("providers", "replicate", "auth"), "Bearer x", False),
    ("auth secret refused", ("providers", "replicate", "auth", "value"), "sk-live", False),
    ("routes", ("providers", "bfl", "routes"),
     [{"name": "create", "method": "POST", "path": "/v1/{model}", "retry": {"max_attempts": 1}}],
     True),
    ("route needs path", ("providers", "bfl", "routes"), [{"name": "create"}], False),
    ("route name", ("providers", "bfl", "routes"), [{"name": "Create", "path": "/"}], False),
    ("route template", ("providers", "bfl", "routes"), [{"name": "x", "path": "/a{b}"}], False),
    ("route query", ("providers", "bfl", "routes"), [{"name": "x", "path": "/a?b"}], False),
    ("route breaker", ("providers", "bfl", "routes"),
     [{"name": "x", "path": "/a", "breaker": {}}], False),
    ("routes scalar", ("providers", "bfl", "routes"), "x", False),
    ("hosts", ("providers", "file-download", "allowed_hosts"),
     ["*.example.com", "192.0.2.7", "::1", "[fd00::1]", "API.Example.com"], True),
    ("hosts bad", ("providers", "file-download", "allowed_hosts"), ["https://x"], False),
    ("schemes", ("providers", "file-download", "allowed_schemes"), ["https", "http"], True),
    ("schemes empty", ("providers", "file-download", "allowed_schemes"), [], False),
    ("schemes ftp", ("providers", "file-download", "allowed_schemes"), ["ftp"], False),
    ("redirects", ("providers", "file-download", "max_redirects"), 21, False),
    ("download upstream", ("providers", "file-download", "upstream"), "https://x", False),
    ("proxy download key", ("providers", "bfl", "allowed_hosts"), ["x"], False),
    ("new provider", ("providers", "openai"), {"upstream": "https://api.openai.com"}, True),
    ("null provider", ("providers", "openai"), None, True),
    ("reserved name", ("providers", "metrics"), {"upstream": "https://x"}, False),
    ("unknown label", ("providers", "unknown"), {"upstream": "https://x"}, False),
    ("bad name", ("providers", "Open AI"), {"upstream": "https://x"}, False),
    ("top-level typo", ("provider",), {}, False),
    ("null block", ("defaults",), None, True),
    ("block scalar", ("defaults", "breaker"), 5, False),
    ("rate limit", ("providers", "bfl", "rate_limit"),
     {"requests_per_minute": 600, "burst": 10, "concurrency": 4, "max_wait": "10s"}, True),
    ("rate limit decimal", ("providers", "bfl", "rate_limit", "requests_per_minute"), 0.5, True),
    ("rate limit zero", ("providers", "bfl", "rate_limit", "requests_per_minute"), 0, False),
    ("rate limit null", ("providers", "bfl", "rate_limit"), None, True),
    ("rate limit typo", ("providers", "bfl", "rate_limit", "rpm"), 5, False),
    ("route budget on a provider", ("providers", "bfl", "rate_limit", "budget"), "x", False),
    ("download rate limit", ("providers", "file-download", "rate_limit"), {"burst": 2}, False),
    ("ledger redis", ("ledger",), {"backend": "redis", "url": "rediss://:pw@redis:6379/0"}, True),
    ("ledger url scheme", ("ledger",), {"backend": "redis", "url": "http://redis"}, False),
    ("ledger backend", ("ledger", "backend"), "postgres", False),
    ("ledger prefix space", ("ledger", "prefix"), "a b", False),
    ("ledger ttl", ("ledger", "ttl"), "0s", False),
    ("ledger url unset", ("ledger", "url"), "", True),
    ("ledger on_unavailable", ("ledger", "on_unavailable"), "drop", False),
    ("reconcile", ("providers", "bfl", "reconcile"), "bfl", False),
    ("native idempotency", ("providers", "bfl", "native_idempotency"), True, True),
    ("creates_job route", ("providers", "bfl", "routes"),
     [{"name": "x", "method": "POST", "path": "/v1/x", "creates_job": True,
       "idempotency_window": "10s"}], True),
    ("creates_job not boolean", ("providers", "bfl", "routes"),
     [{"name": "x", "path": "/v1/x", "creates_job": "yes"}], False),
    ("download reconcile", ("providers", "file-download", "reconcile"), None, False),
]


def test_the_default_configuration_is_valid() -> None:
    """The embedded default, configs/sidecar.yaml and the effective dump pass both schemas."""
    shipped = yaml.safe_load((ROOT / "configs" / "sidecar.yaml").read_text())
    dumped = yaml.safe_load(dump_effective(load_config(None, {})))
    for document in (DEFAULT, shipped, dumped):
        assert schema_errors(document) == []
        assert schema_errors(document, PARTIAL) == []


@pytest.mark.parametrize(("name", "path", "value", "valid"), HAND_CASES,
                         ids=[case[0] for case in HAND_CASES])
def test_schema_and_loader_agree_on_hand_written_documents(
        name: str, path: tuple[str | int, ...], value: object, valid: bool) -> None:
    """The loader and the schema give the verdict written beside each case."""
    document = with_value(path, value)
    assert loader_accepts(document) is valid
    assert (schema_errors(document) == []) is valid, schema_errors(document)


@pytest.mark.parametrize(("name", "document"), list(generated_cases()),
                         ids=[name for name, _ in generated_cases()])
def test_schema_and_loader_agree_on_generated_documents(name: str, document: object) -> None:
    """An unknown key in any block, and a mapping or a list of them for any field: both refuse."""
    assert not loader_accepts(document)
    assert schema_errors(document) != []


def test_every_block_the_loader_closes_is_closed_in_the_schema() -> None:
    """Each object with properties refuses other keys, except the providers map (any name)."""
    def walk(node: object, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            closed = node.get("additionalProperties") is False
            if "properties" in node and not path.endswith("/if") and not closed:
                yield path
            for key, value in node.items():
                yield from walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{path}/{index}")

    assert list(walk(config_schema(), "")) == []
    assert list(walk(config_schema(partial=True), "")) == []


@pytest.mark.parametrize(("name", "path", "value"), [
    ("ceiling under the recovery time", ("defaults", "breaker", "max_recovery_timeout"), "1s"),
    ("ops port on the proxy port", ("server", "ops_port"), 8080),
    ("duplicate routes", ("providers", "bfl", "routes"),
     [{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}]),
    ("a shared breaker without Redis", ("defaults", "breaker", "shared"), True),
    ("redis without a url", ("ledger", "backend"), "redis"),
    ("a keyless window without creates_job", ("providers", "bfl", "routes"),
     [{"name": "x", "path": "/v1/x", "idempotency_window": "10s"}]),
])
def test_rules_across_fields_are_the_loaders_alone(
        name: str, path: tuple[str | int, ...], value: object) -> None:
    """What spans several fields passes the schema and is refused by the loader at start."""
    document = with_value(path, value)
    assert schema_errors(document) == []
    assert not loader_accepts(document)


def test_quoted_numbers_pass_the_loader_but_not_the_schema() -> None:
    """The schema wants numbers unquoted unless they hold ${VAR}: stricter than the loader."""
    document = with_value(("server", "port"), "8081")
    assert loader_accepts(document)
    assert schema_errors(document) == ["/server/port: '8081' is not valid under any of the given schemas"]


@pytest.mark.parametrize(("override", "valid"), [
    ({"providers": {"replicate": {"breaker": {"failure_threshold": 3}}}}, True),
    ({"providers": {"file-download": {"max_download_size": "10MiB"}}}, True),
    ({"providers": {"replicate": {"auth": {"prefix": "Token "}}}}, True),
    ({"providers": {"replicate": {"breaker": {"failur_threshold": 3}}}}, False),
    ({"providers": {"replicate": {"routes": [{"name": "x"}]}}}, False),
    ({"providers": {"x": {"kind": "proxy", "allowed_hosts": ["a"]}}}, False),
    ({"providers": {"x": {"kind": "download", "upstream": "https://a"}}}, False),
])
def test_the_partial_schema_takes_overrides(override: dict[str, Any], valid: bool) -> None:
    """An override of one key validates without the rest of its block; typos and bad lists don't."""
    assert (schema_errors(override, PARTIAL) == []) is valid


def test_the_published_schema_is_current() -> None:
    """schema/sidecar-config.schema.json and the chart's config schema are what the script writes."""
    spec = importlib.util.spec_from_file_location("config_schema", ROOT / "scripts" / "config_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path, text in module.expected().items():
        assert path.read_text() == text, f"{path} is stale: run python scripts/config_schema.py"
    assert json.loads((ROOT / "schema" / "sidecar-config.schema.json").read_text()) == json.loads(
        render_schema())
