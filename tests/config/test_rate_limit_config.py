"""``rate_limit`` on providers and routes, ``breaker.shared`` and the ``ledger`` block's Redis."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sidecar.config import RateLimitConfig, SharedRedis, load_config, shared_redis
from sidecar.config.load import ConfigError, dump_effective, parse_config


def problems_of(data: object) -> list[str]:
    """The problems parse_config reports for ``data`` (fails the test if it accepts it)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return info.value.problems


def config(routes: list[dict[str, Any]] | None = None, **block: Any) -> dict[str, Any]:
    """One proxy provider ``p`` with ``block`` and ``routes``; extra top-level keys in ``top``."""
    top = block.pop("top", {})
    body = {"upstream": "https://api.example.com", **block}
    if routes is not None:
        body["routes"] = routes
    return {**top, "providers": {"p": body}}


def test_a_provider_and_a_route_take_rate_limit_blocks() -> None:
    """Every key is read, durations and all; a route's block stays its own (never merged)."""
    loaded = parse_config(config(
        rate_limit={"requests_per_minute": 3000, "burst": 50, "concurrency": 8, "max_wait": "10s",
                    "max_pause": "30s"},
        routes=[{"name": "create", "path": "/c", "rate_limit": {"requests_per_minute": 600,
                                                                "budget": "creates"}},
                {"name": "get", "path": "/g"}],
    ), {})
    p = loaded.providers["p"]
    assert p.rate_limit == RateLimitConfig(3000, 50, 8, 10.0, 30.0)
    assert p.routes[0].rate_limit == RateLimitConfig(requests_per_minute=600, budget="creates")
    assert p.routes[1].rate_limit is None


@pytest.mark.parametrize(("data", "line"), [
    (config(rate_limit={"requests_per_minute": 0}),
     "providers.p.rate_limit.requests_per_minute: must be > 0, got 0"),
    (config(rate_limit={"burst": 0}), "providers.p.rate_limit.burst: must be >= 1, got 0"),
    (config(rate_limit={"budget": "x"}),
     "providers.p.rate_limit.budget: unknown key (expected one of: burst, concurrency, max_pause, "
     "max_wait, requests_per_minute)"),
    (config(routes=[{"name": "*", "path": "/x"}]),
     "providers.p.routes[0].name: must be lower-case letters, digits and '_', got '*'"),
    (config(routes=[{"name": "a", "path": "/x", "rate_limit": {"budget": "*"}}]),
     "providers.p.routes[0].rate_limit.budget: must be lower-case letters, digits and '_', got '*'"),
    (config(routes=[{"name": "a", "path": "/a", "rate_limit": {"requests_per_minute": 6, "budget": "c"}},
                    {"name": "b", "path": "/b", "rate_limit": {"requests_per_minute": 7, "budget": "c"}}]),
     "providers.p.routes[1].rate_limit: budget 'c' is also used by route 'a' with other "
     "requests_per_minute, burst or concurrency: a shared budget has one of each"),
    (config(breaker={"shared": True}),
     "providers.p.breaker.shared: needs ledger.backend: redis (the fleet's breaker record lives there)"),
    (config(top={"ledger": {"backend": "redis"}}), "ledger.url: is required when ledger.backend is redis"),
    (config(top={"ledger": {"backend": "redis", "url": "http://x"}}),
     "ledger.url: must be a redis:// or rediss:// URL like redis://redis:6379/0"),
    ({"providers": {"d": {"kind": "download", "rate_limit": {"concurrency": 1}}}},
     "providers.d.rate_limit: is not used by kind: download"),
])
def test_bad_limits_are_named_by_their_key(data: object, line: str) -> None:
    """Each mistake is reported at its dotted key, a route named ``*`` and a budget ``*`` included."""
    assert line in problems_of(data)


def test_the_ledgers_redis_is_the_fleets() -> None:
    """``ledger.backend: redis`` makes its URL and prefix the fleet's; breaker.shared is then allowed."""
    ledger = {"backend": "redis", "url": "redis://r:6379/0", "prefix": "bot1:"}
    loaded = parse_config(config(top={"ledger": ledger}, breaker={"shared": True}), {})
    assert shared_redis(loaded) == SharedRedis("redis://r:6379/0", "bot1:")
    assert loaded.providers["p"].breaker.shared is True
    assert shared_redis(parse_config(config(), {})) is None


def test_dump_round_trips_limits_and_hides_the_redis_password() -> None:
    """The dump re-loads to the same limits; a password in the Redis URL is shown as <redacted>."""
    ledger = {"backend": "redis", "url": "redis://:s3cret-pass@r:6379/0"}
    loaded = parse_config(config(
        top={"ledger": ledger}, rate_limit={"concurrency": 2, "max_wait": "1s"},
        routes=[{"name": "c", "path": "/c", "rate_limit": {"requests_per_minute": 1, "budget": "x"}}],
    ), {})
    text = dump_effective(loaded)
    assert "s3cret-pass" not in text and "redis://:<redacted>@r:6379/0" in text
    again = parse_config(yaml.safe_load(text), {})
    assert again.providers == loaded.providers


def test_the_default_configuration_carries_replicates_published_limits() -> None:
    """3000 calls a minute for Replicate, and its creates share one budget of 600 a minute."""
    replicate = load_config(None, {}).providers["replicate"]
    assert replicate.rate_limit is not None and replicate.rate_limit.requests_per_minute == 3000
    creates = {r.name: r.rate_limit for r in replicate.routes if r.rate_limit is not None}
    assert set(creates) == {"create_prediction", "create_model_prediction",
                            "create_deployment_prediction", "create_training"}
    assert {(lim.budget, lim.requests_per_minute) for lim in creates.values()} == {("creates", 600)}
