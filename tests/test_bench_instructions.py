"""The instruction counts' report: a callgrind dump's totals are read, each target is set against
the plain sidecar, a failed target is a row and not the end of the table."""

from __future__ import annotations

from bench import instructions, report

DUMP = b"""# callgrind format
version: 1
creator: callgrind-3.19.0
events: Ir
summary: 0

fl=(1) ???
fn=(1) 0x0
0 3

totals: 476960123
"""


def test_the_totals_line_is_the_count() -> None:
    assert instructions.totals(DUMP) == 476960123
    assert instructions.totals(b"events: Ir\nsummary: 0\n") is None


def test_each_target_is_set_against_the_plain_sidecar() -> None:
    counted = {"requests": 1000, "targets": {
        "sidecar-before": 400_000.0, "sidecar": 480_000.0, "sidecar-limited": 528_000.0,
        "sidecar-limited-redis": "FAILED: not ready on :1/health/ready after 120s",
    }}
    lines = instructions.summary(counted)
    assert "| sidecar-before | 400,000 | 0.833x |" in lines
    assert "| sidecar | 480,000 | 1.000x |" in lines
    assert "| sidecar-limited | 528,000 | 1.100x |" in lines
    assert "| sidecar-limited-redis | FAILED: not ready on :1/health/ready after 120s | |" in lines
    assert lines[-1] == "sidecar / sidecar-before: 1.200x the instructions a request."


def test_the_report_carries_the_table() -> None:
    """A run with the counts prints their table after the others."""
    meta = {"commit": "abc1234", "machine": {"cpu_model": "cpu", "nproc": 2}, "proxy_cpu": 0,
            "load_cpu": 1, "repeats": 1, "duration_s": 1, "loadavg_1m_before": 0.0,
            "stream_bytes": 0}
    data = {"meta": meta, "targets": {}, "stream": {},
            "instructions": {"requests": 10, "targets": {"sidecar": 1.0}}}
    assert "| sidecar | 1 | 1.000x |" in report.markdown(data).splitlines()
