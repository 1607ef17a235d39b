"""The configuration file's JSON Schema, built from the loader's own tables.

Each field's schema comes from its converter (``schema.Rule``); the blocks come from the key lists
that ``config.load`` checks (``ROOT_KEYS``, ``PROVIDER_KEYS``, ``ROUTE_POLICY_KEYS`` …), so a key
the loader learns and this module does not describe fails here at once (``KeyError`` naming it)
instead of drifting. Every block that the loader closes against unknown keys has
``additionalProperties: false``.

``config_schema()`` describes a whole file, as ``sidecar check-config`` reads it.
``config_schema(partial=True)`` describes an *override* deep-merged onto the default configuration
(the Helm chart's ``config:`` value): no key is required in a block merged key by key, and a
provider that does not say its ``kind`` may use the keys of either kind (the default may give it
one). List items (routes, auth entries in a list) replace the default's whole, so they keep their
required keys.

What a schema cannot see, the loader still refuses at start: rules across fields (``max_recovery_timeout``
under ``recovery_timeout``, ``ops_port`` equal to ``port``, duplicate route names or auth headers),
the value of a ``${VAR}``, and an IPv6 literal's exact form. The schema is stricter in one way: a
number or boolean written as a quoted string (``"5"``) is accepted by the loader (it is what a
``${VAR}`` gives) but not by the schema unless it holds ``${VAR}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from . import schema as s
from .dump import POLICY_KEYS
from .load import PROVIDER_KEYS, PROXY_KEYS, ROOT_KEYS, ROUTE_POLICY_KEYS
from .model import RESERVED_NAMES

Json = dict[str, Any]
DRAFT = "http://json-schema.org/draft-07/schema#"
SCHEMA_ID = "https://egress-sidecar.io/schema/sidecar-config.schema.json"

__all__ = ["DRAFT", "config_schema", "render_schema"]


def render_schema(*, partial: bool = False) -> str:
    """The schema as the JSON text that is published (sorted keys, two-space indent, newline)."""
    return json.dumps(config_schema(partial=partial), indent=2, sort_keys=True) + "\n"


def config_schema(*, partial: bool = False) -> Json:
    """The JSON Schema (draft-07) of a configuration file, or of an override when ``partial``."""
    blocks = _Blocks(partial)
    root = blocks.closed({
        "server": blocks.fields(s.SERVER_FIELDS, "The two listeners and shutdown."),
        "defaults": blocks.policies(POLICY_KEYS, "What every provider inherits, key by key."),
        "providers": {
            "type": ["object", "null"],
            "description": "Providers by name: the first path segment of the bot's requests.",
            "propertyNames": {"pattern": s.anchored(s.PROVIDER_NAME.pattern),
                              "not": {"enum": sorted(RESERVED_NAMES)}},
            "additionalProperties": blocks.provider(),
        },
        "ledger": blocks.fields(s.LEDGER_FIELDS, "The job ledger (and the fleet's Redis)."),
    }, ROOT_KEYS)
    title = "sidecar configuration override (deep-merged onto the default)" if partial else (
        "sidecar configuration")
    return {"$schema": DRAFT, "$id": SCHEMA_ID, "title": title, **root}


class _Blocks:
    """Builds the blocks of one variant (whole file or partial override)."""

    def __init__(self, partial: bool) -> None:
        self.partial = partial

    def closed(self, properties: Mapping[str, Json], keys: Iterable[str],
               *, required: Iterable[str] = (), merged: bool = True) -> Json:
        """A block with exactly ``keys``: each must have a schema in ``properties``. A null block
        counts as empty (the loader's rule). ``merged`` blocks lose ``required`` when partial."""
        keys = tuple(keys)
        missing = [key for key in keys if key not in properties]
        if missing:
            raise KeyError(f"the loader accepts keys without a JSON Schema: {', '.join(missing)}")
        block: Json = {"type": ["object", "null"],
                       "properties": {key: properties[key] for key in keys},
                       "additionalProperties": False}
        needed = [] if self.partial and merged else list(required)
        if needed:
            block["required"] = needed
        return block

    def fields(self, spec: Mapping[str, s.Converter], description: str = "", *,
               required: Iterable[str] = (), merged: bool = True) -> Json:
        block = self.closed({key: _rule(key, conv) for key, conv in spec.items()}, spec,
                            required=required, merged=merged)
        return {"description": description, **block} if description else block

    def policy_properties(self) -> dict[str, Json]:
        return {
            "breaker": self.fields(s.BREAKER_FIELDS, "The circuit breaker."),
            "retry": self.fields(s.RETRY_FIELDS, "Retries and the retry budget."),
            "timeouts": self.fields(s.TIMEOUT_FIELDS, "connect, one attempt, all attempts."),
            **{key: _rule(key, conv) for key, conv in s.POLICY_SCALARS.items()},
        }

    def policies(self, keys: Iterable[str], description: str) -> Json:
        return {"description": description, **self.closed(self.policy_properties(), keys)}

    def provider(self) -> Json:
        auth_entry = self.fields(s.AUTH_FIELDS, required=("header", "env"))
        auth_item = self.fields(s.AUTH_FIELDS, required=("header", "env"), merged=False)
        route_properties = {**{k: _rule(k, c) for k, c in s.ROUTE_FIELDS.items()},
                            **self.policy_properties(),
                            "rate_limit": self.fields(s.ROUTE_RATE_LIMIT_FIELDS,
                                                      "The route's limit, on top of its provider's.")}
        route = self.closed(route_properties, (*s.ROUTE_FIELDS, *ROUTE_POLICY_KEYS),
                            required=("name", "path"), merged=False)
        properties: dict[str, Json] = {
            **{key: _rule(key, conv) for key, conv in s.PROVIDER_HEAD_FIELDS.items()},
            **self.policy_properties(),
            "upstream": _rule("upstream", s.upstream_url),
            "auth": {"anyOf": [{"type": "null"}, auth_entry, {"type": "array", "items": auth_item}]},
            "health": self.fields(s.HEALTH_FIELDS, "The background probe (none when null)."),
            "routes": {"type": ["array", "null"], "items": route},
            "rate_limit": self.fields(s.RATE_LIMIT_FIELDS, "The provider's rate limit (none when null)."),
            **{key: _rule(key, conv) for key, conv in s.PROVIDER_JOB_FIELDS.items()},
            **{key: _rule(key, conv) for key, conv in s.DOWNLOAD_FIELDS.items()},
        }
        block = self.closed(properties, PROVIDER_KEYS)
        block["allOf"] = self._kind_rules()
        return block

    def _kind_rules(self) -> list[Json]:
        """A download provider has no proxy keys and the other way round. Without ``kind`` a
        provider is a proxy, except in an override, where the default may have given it a kind."""
        is_download: Json = {"required": ["kind"], "properties": {"kind": {"const": "download"}}}
        is_proxy: Json = {"required": ["kind"], "properties": {"kind": {"const": "proxy"}}}
        no_proxy_keys = _without(PROXY_KEYS, "is not used by kind: download")
        no_download_keys = _without(s.DOWNLOAD_FIELDS, "is only for kind: download")
        if self.partial:
            return [{"if": is_download, "then": no_proxy_keys},
                    {"if": is_proxy, "then": no_download_keys}]
        return [{"if": is_download, "then": no_proxy_keys, "else": no_download_keys}]


def _without(keys: Iterable[str], why: str) -> Json:
    return {"description": f"{', '.join(keys)}: {why}",
            "propertyNames": {"not": {"enum": list(keys)}}}


def _rule(key: str, converter: s.Converter) -> Json:
    if not isinstance(converter, s.Rule):  # a plain function: its accepted values are unknown
        raise TypeError(f"{key}: the converter {converter!r} is not a schema.Rule (no JSON Schema)")
    return converter.json
