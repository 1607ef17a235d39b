"""The job ledger's bench targets: their sidecar configs load as meant, and the report judges them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench import configs, report, wrk
from sidecar.config.load import parse_config


def _route(text: str) -> tuple[bool, str]:
    config = parse_config(yaml.safe_load(text), {})
    route = config.providers["bench"].routes[0]
    return route.creates_job, config.ledger.backend


def test_plain_post_route_has_no_ledger() -> None:
    """The baseline declares the same POST route without creates_job."""
    text = configs.sidecar(8080, 9901, "http://127.0.0.1:1", post_route=True)
    assert _route(text) == (False, "sqlite")


def test_ledger_targets_make_the_route_a_paid_job(tmp_path: Path) -> None:
    """The SQLite and Redis targets mark the route creates_job on their backend."""
    path = tmp_path / "ledger.sqlite3"
    sqlite = configs.sidecar(8080, 9901, "http://127.0.0.1:1", creates_job=True, sqlite_path=path)
    redis = configs.sidecar(
        8080, 9901, "http://127.0.0.1:1", creates_job=True, redis_url="redis://127.0.0.1:1/0"
    )
    assert _route(sqlite) == (True, "sqlite")
    assert parse_config(yaml.safe_load(sqlite), {}).ledger.path == str(path)
    assert _route(redis) == (True, "redis")


def test_keyed_script_sets_a_distinct_key_per_request() -> None:
    """The keyed wrk script builds each key from the run tag, thread and a counter."""
    script = wrk.SCRIPTS["post"]
    assert 'string.format("bench:%s:%d:%d", tag, tid or 0, counter)' in script
    assert "counter = counter + 1" in script
    assert configs.REPLAY_KEY in wrk.SCRIPTS["replay"]


def _target(label: str, **medians: float) -> dict[str, Any]:
    return {"label": label, "ok": True, "failures": [],
            "metrics": {k: report.stats([v]) for k, v in medians.items()}}


def test_ledger_table_reports_added_p50_and_replay_ratio() -> None:
    """Added p50 is the difference to the plain POST route; replay req/s is over the proxied GET."""
    targets = {
        "sidecar": _target("get", rps=1000.0, p50_ms=0.5),
        "sidecar-post": _target("post", rps=900.0, p50_ms=0.6),
        "sidecar-ledger-sqlite": _target("sqlite", rps=500.0, p50_ms=1.2),
        "sidecar-ledger-redis": _target("redis", rps=400.0, p50_ms=2.1),
        "sidecar-replay": _target("replay", rps=1100.0, p50_ms=0.5),
    }
    memory = {"ok": True, "keys": 100_000, "max_entries": 100_000, "growth_mib": 99.0,
              "capped": {"ok": True, "keys": 100_000, "max_entries": 6000, "evictions": 94_000,
                         "growth_mib": 9.0}}
    lines = report._ledger_table(targets, memory)
    assert "| added p50 ms, ledger on SQLite (over the same route without it) | 0.600 | ≤ 1 | yes |" in lines
    assert "| added p50 ms, ledger on Redis (over the same route without it) | 1.500 | ≤ 1 | NO |" in lines
    assert "| replay req/s vs a proxied GET | 1.10x | ≥ 1 | yes |" in lines
    assert any("cap 100,000" in line and "| 99.0 | ≤ 10 | NO |" in line for line in lines)
    assert any("cap 6,000 (94,000 evicted)" in line and "| yes |" in line for line in lines)
