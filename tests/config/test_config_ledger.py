"""The job ledger's configuration: the ``ledger`` block, route and provider keys, their dump."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sidecar.config import LedgerConfig, load_config
from sidecar.config.load import ConfigError, dump_effective, parse_config


def problems_of(data: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return info.value.problems


def with_route(**route: Any) -> dict[str, Any]:
    block = {"name": "create", "method": "POST", "path": "/v1/create", **route}
    return {"providers": {"p": {"upstream": "https://api.example.com", "routes": [block]}}}


def test_the_ledger_defaults_to_sqlite() -> None:
    """Without a ledger block: sqlite, 24h, 1MiB kept, 100000 records, forward when unreachable."""
    assert parse_config({}, {}).ledger == LedgerConfig()
    assert LedgerConfig().backend == "sqlite" and LedgerConfig().on_unavailable == "forward"


def test_the_ledger_block_is_read_with_units_and_variables() -> None:
    """Durations, sizes and ${VAR} in url are read like everywhere else."""
    config = parse_config({"ledger": {
        "backend": "redis", "url": "${REDIS_URL}", "prefix": "bot-a:", "ttl": "2h",
        "max_stored_body": "64KiB", "max_entries": 10, "on_unavailable": "refuse"}},
        {"REDIS_URL": "rediss://:pw@redis:6380/0"})
    assert config.ledger == LedgerConfig(
        backend="redis", url="rediss://:pw@redis:6380/0", prefix="bot-a:", ttl=7200.0,
        max_stored_body=64 * 1024, max_entries=10, on_unavailable="refuse")


@pytest.mark.parametrize(("block", "line"), [
    ({"backend": "mongo"}, "ledger.backend: must be one of sqlite, memory, redis, got 'mongo'"),
    ({"backend": "redis"}, "ledger.url: is required when ledger.backend is redis"),
    ({"url": "http://x"}, "ledger.url: must be a redis:// or rediss:// URL"),
    ({"ttl": "0s"}, "ledger.ttl: must be > 0, got '0s'"),
    ({"max_entries": 0}, "ledger.max_entries: must be >= 1, got 0"),
    ({"on_unavailable": "wait"}, "ledger.on_unavailable: must be one of forward, refuse, got 'wait'"),
    ({"prefix": "a b"}, "ledger.prefix: must be 1 to 64 printable characters without spaces"),
    ({"size": 1}, "ledger.size: unknown key"),
])
def test_ledger_problems_name_the_dotted_key(block: dict[str, Any], line: str) -> None:
    """Each bad ledger value is reported at its key."""
    assert any(p.startswith(line) for p in problems_of({"ledger": block})), problems_of({"ledger": block})


def test_a_redis_password_is_never_echoed() -> None:
    """A URL that came from a variable is quoted by the variable's name, not its value."""
    lines = problems_of({"ledger": {"url": "${U}"}}, {"U": "http://:hunter2secret@x"})
    assert lines and all("hunter2secret" not in line for line in lines)


def test_route_and_provider_job_keys() -> None:
    """creates_job, idempotency_window, native_idempotency and reconcile reach the model."""
    data = with_route(creates_job=True, idempotency_window="10s")
    data["providers"]["p"]["native_idempotency"] = True
    config = parse_config(data, {})
    route = config.providers["p"].routes[0]
    assert (route.creates_job, route.idempotency_window) == (True, 10.0)
    assert config.providers["p"].native_idempotency is True
    assert config.providers["p"].reconcile is None


def test_replicate_reconciles_by_default_and_may_opt_out() -> None:
    """The provider named replicate gets reconcile: replicate unless it says null."""
    block = {"upstream": "https://api.replicate.com"}
    config = parse_config({"providers": {"replicate": block}}, {})
    assert config.providers["replicate"].reconcile == "replicate"
    off = {"providers": {"replicate": {**block, "reconcile": None}}}
    assert parse_config(off, {}).providers["replicate"].reconcile is None


@pytest.mark.parametrize(("data", "line"), [
    (with_route(idempotency_window="10s"),
     "providers.p.routes[0].idempotency_window: needs creates_job: true on the same route"),
    (with_route(creates_job="yes"), "providers.p.routes[0].creates_job: must be true or false"),
    ({"providers": {"p": {"upstream": "https://a", "reconcile": "stripe"}}},
     "providers.p.reconcile: must be one of replicate"),
    ({"providers": {"d": {"kind": "download", "native_idempotency": True}}},
     "providers.d.native_idempotency: is not used by kind: download"),
])
def test_job_key_problems_name_the_dotted_key(data: dict[str, Any], line: str) -> None:
    """Bad job keys are reported at their dotted key."""
    assert any(p.startswith(line) for p in problems_of(data)), problems_of(data)


def test_the_dump_round_trips_the_job_keys_and_hides_a_redis_password() -> None:
    """The dump re-loads to the same configuration, with the Redis password redacted."""
    data = with_route(creates_job=True, idempotency_window="10s")
    data["ledger"] = {"backend": "redis", "url": "redis://:s3cret@r:6379/0", "ttl": "1h"}
    config = parse_config(data, {})
    text = dump_effective(config)
    assert "s3cret" not in text and "redis://:<redacted>@r:6379/0" in text
    again = parse_config(yaml.safe_load(text), {})
    assert again.providers == config.providers
    assert again.ledger.ttl == 3600.0 and yaml.safe_load(text)["ledger"]["ttl"] == "1h"


def test_the_default_configuration_marks_the_paid_creates() -> None:
    """Every job-creating POST of the original bot is a creates_job route; sync.so is native."""
    config = load_config(None, {})
    jobs = {(name, r.name) for name, p in config.providers.items() for r in p.routes if r.creates_job}
    assert {("replicate", "create_prediction"), ("replicate", "create_model_prediction"),
            ("replicate", "create_deployment_prediction"), ("replicate", "create_training"),
            ("bfl", "create_finetune"), ("bfl", "generate"), ("synclabs", "generate"),
            ("elevenlabs", "add_voice"), ("elevenlabs", "text_to_speech")} <= jobs
    assert all(r.method == "POST" for p in config.providers.values() for r in p.routes if r.creates_job)
    assert config.providers["synclabs"].native_idempotency is True
    assert config.providers["replicate"].reconcile == "replicate"
    assert config.ledger.backend == "sqlite"
