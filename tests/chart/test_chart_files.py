"""Copies the chart must carry (Helm can't read files outside the chart) stay identical to the sources."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHART

ROOT = CHART.parents[1]


@pytest.mark.parametrize("source,copy", [
    ("configs/sidecar.yaml", "charts/sidecar/files/sidecar.yaml"),
    ("deploy/grafana/sidecar-dashboard.json", "charts/sidecar/files/sidecar-dashboard.json"),
    ("deploy/prometheus/sidecar-alerts.yaml", "charts/sidecar/files/sidecar-alerts.yaml"),
])
def test_chart_copy_is_identical(source: str, copy: str) -> None:
    """The chart's copy is byte-identical to the file it copies (refresh with cp when this fails)."""
    src, dst = ROOT / source, ROOT / copy
    assert src.is_file(), f"{source} is missing"
    assert dst.read_bytes() == src.read_bytes(), f"{copy} differs from {source}: cp {source} {copy}"


def test_chart_has_a_values_file_for_every_ci_case() -> None:
    """ci/ holds the all-branches values and the classic-branch values that the render tests use."""
    names = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
    assert names == ["all-branches-values.yaml", "classic-values.yaml"]
    assert Path(CHART / "values.schema.json").is_file()
