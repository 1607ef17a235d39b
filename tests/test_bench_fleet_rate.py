"""The shared rate limit figure: its counting (sliding window, deviation), its config, its report."""

from __future__ import annotations

import yaml

from bench import configs, fleet_rate, report
from sidecar.config.load import parse_config


def test_window_counts_arrivals_less_than_a_window_apart() -> None:
    """Half-open windows: two arrivals exactly 10 s apart are never in one window."""
    assert fleet_rate.max_in_window([], 10.0) == (0, None)
    assert fleet_rate.max_in_window([5.0], 10.0) == (1, 5.0)
    assert fleet_rate.max_in_window([0.0, 10.0, 20.0], 10.0) == (1, 0.0)
    assert fleet_rate.max_in_window([0.0, 9.999, 10.0], 10.0) == (2, 0.0)


def test_window_finds_the_busiest_stretch_in_unsorted_arrivals() -> None:
    """A cluster late in the run beats an even spread earlier; the order of arrival does not matter."""
    even = [float(t) for t in range(30)]  # 1/s: 10 in any 10 s window
    cluster = [40.0 + i / 10 for i in range(15)]  # 15 within 1.5 s
    assert fleet_rate.max_in_window(list(reversed(even + cluster)), 10.0) == (15, 40.0)


def test_deviation_is_a_share_of_the_expected_count() -> None:
    assert fleet_rate.deviation_pct(612, 600.0) == 2.0
    assert fleet_rate.deviation_pct(588, 600.0) == -2.0
    assert fleet_rate.deviation_pct(0, 0.0) == 0.0


# 480/min is one call every 0.125 s, a binary fraction: arrival times are exact, so no window
# boundary depends on rounding.


def test_a_limiter_exactly_at_its_limit_meets_both_goals() -> None:
    """480/min, burst 10 over 60 s of load: the burst at the start, then one every 0.125 s."""
    start = 1000.0
    arrivals = [start] * 10 + [start + k * 0.125 for k in range(1, 480)]
    arrivals += [start + 60.0 + k * 0.125 for k in range(40)]  # booked before the end, arriving after
    got = fleet_rate.judge(arrivals, start, start + 60.0, rpm=480, burst=10)
    assert got["expected"] == 490.0
    assert got["admitted"] == 489 and got["deviation_met"]
    assert got["after_load"] == 40 and got["before_load"] == 0
    assert got["window_limit"] == 90.0
    assert got["window_max"] == 89 and got["window_met"]


def test_three_budgets_instead_of_one_miss_both_goals() -> None:
    """Each of three sidecars admitting the full rate: three times the calls, three times the window."""
    arrivals = [k * 0.125 + offset for k in range(480) for offset in (0.0, 0.03125, 0.0625)]
    got = fleet_rate.judge(arrivals, 0.0, 60.0, rpm=480, burst=10)
    assert got["admitted"] == 1440
    assert round(got["deviation_pct"], 1) == 193.9 and not got["deviation_met"]
    assert got["window_max"] == 240 and not got["window_met"]


def test_fleet_config_shares_the_limit_through_redis_without_a_probe() -> None:
    """The sidecars' config: the documented rate_limit keys, the ledger (and limits) on Redis, and no
    health probe (it would count as a call at the provider)."""
    settings = fleet_rate.Settings(rpm=600, burst=10, max_wait=5.0)
    text = configs.sidecar(8080, 9901, "http://127.0.0.1:1", redis_url="redis://127.0.0.1:2/0",
                           rate_limit=settings.rate_limit(), health_check=False)
    config = parse_config(yaml.safe_load(text), {})
    provider = config.providers["bench"]
    assert config.ledger.backend == "redis" and config.ledger.url == "redis://127.0.0.1:2/0"
    assert provider.health is None
    limit = provider.rate_limit
    assert limit is not None
    assert (limit.requests_per_minute, limit.burst, limit.max_wait) == (600, 10, 5.0)


def test_the_load_script_tells_refusals_from_other_answers() -> None:
    """wrk's script counts a 429 as a refusal only when the sidecar marked it rate_limited."""
    assert 'headers["X-Sidecar-Error"] == "rate_limited"' in fleet_rate.LUA
    assert fleet_rate.LUA.count("t:get(") == 3


def test_report_states_both_goals() -> None:
    arrivals = [k * 0.125 for k in range(240)]
    fleet = {"ok": True, "settings": {"sidecars": 3, "clients": 200, "rpm": 480.0, "burst": 10,
                                      "duration": 30.0, "max_wait": 5.0},
             **fleet_rate.judge(arrivals, 0.0, 30.0, rpm=480, burst=10),
             "relayed_ok": 240, "refused": 12345, "other_status": 0, "socket_errors": 0,
             "timeouts": 0, "fleet_fallbacks": 2, "sidecar_cpu_pct": [33.0, 33.0, 34.0]}
    lines = report._fleet_table(fleet)
    assert "| admitted in 30.0 s of load, vs 250.0 expected | 240 (-4.00%) | ±2% | NO |" in lines
    assert "| most arrivals in any 10 s window | 80 | ≤ 90 | yes |" in lines
    assert any("Refused (429 rate_limited): 12,345" in line and "local limits" in line
               and ": 2;" in line for line in lines)
    failed = report._fleet_table({"ok": False, "error": "redis-server: not found",
                                  "settings": fleet["settings"]})
    assert failed[-1] == "failed: redis-server: not found"
