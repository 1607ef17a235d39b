"""The side-by-side report: each pair's ratio is the median of its rounds' ratios, judged against
its goal; the control has none; a pair whose every round failed is a row that says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report, side_by_side
from bench.runner import Settings

MEASURED: dict[str, Any] = {
    "duration_s": 4, "connections": 32,
    "pairs": [
        {"title": "control: unlimited / unlimited", "target": "sidecar", "reference": "sidecar",
         "goal": None, "rps": [[1000.0, 1000.0], [990.0, 1000.0], [1020.0, 1000.0]], "failures": []},
        {"title": "local rate limit / unlimited", "target": "sidecar-limited", "reference": "sidecar",
         "goal": 0.9, "rps": [[950.0, 1000.0], [800.0, 1000.0], [930.0, 1000.0]], "failures": []},
        {"title": "Redis rate limit / unlimited", "target": "sidecar-limited-redis",
         "reference": "sidecar", "goal": 0.9, "rps": [[850.0, 1000.0], [980.0, 1000.0],
                                                      [880.0, 1000.0]], "failures": []},
    ],
}


def test_each_pair_is_its_median_round_against_its_goal() -> None:
    lines = side_by_side.summary(MEASURED)
    assert "| control: unlimited / unlimited | 1.000x | 1.000, 0.990, 1.020 | - | - |" in lines
    assert "| local rate limit / unlimited | 0.930x | 0.950, 0.800, 0.930 | ≥ 0.9x | yes |" in lines
    assert "| Redis rate limit / unlimited | 0.880x | 0.850, 0.980, 0.880 | ≥ 0.9x | NO |" in lines


def test_a_pair_with_no_round_says_why() -> None:
    failed = {**MEASURED, "pairs": [{**MEASURED["pairs"][1], "rps": [],
                                      "failures": ["sidecar: not ready"]}]}
    assert side_by_side.summary(failed)[-1] == (
        "| local rate limit / unlimited | failed: sidecar: not ready | - | ≥ 0.9x | - |"
    )


def test_a_pair_runs_only_when_both_its_targets_were_chosen() -> None:
    """Nothing is started here: without the unlimited sidecar no pair has its reference."""
    settings = Settings(repeats=1, duration=1, connections=1)
    measured = side_by_side.measure(None, ["sidecar-limited", "sidecar-limited-redis"],  # type: ignore[arg-type]
                                    settings, Path("get.lua"))
    assert measured["pairs"] == []


def test_the_report_carries_the_table() -> None:
    meta = {"commit": "abc1234", "machine": {"cpu_model": "cpu", "nproc": 2}, "proxy_cpu": 0,
            "load_cpu": 1, "repeats": 1, "duration_s": 1, "loadavg_1m_before": 0.0,
            "stream_bytes": 0}
    data = {"meta": meta, "targets": {}, "stream": {}, "side_by_side": MEASURED}
    assert "| local rate limit / unlimited | 0.930x | 0.950, 0.800, 0.930 | ≥ 0.9x | yes |" in (
        report.markdown(data).splitlines()
    )
