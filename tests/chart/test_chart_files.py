"""Copies the chart must carry (Helm can't read files outside the chart) stay identical to the sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helm_chart import CHART, MONITORING

ROOT = CHART.parents[1]


@pytest.mark.parametrize("source,copy", [
    ("configs/sidecar.yaml", "charts/sidecar/files/sidecar.yaml"),
    ("deploy/grafana/sidecar-dashboard.json", "charts/sidecar-monitoring/files/sidecar-dashboard.json"),
])
def test_chart_copy_is_identical(source: str, copy: str) -> None:
    """The chart's copy is byte-identical to the file it copies (refresh with cp when this fails)."""
    src, dst = ROOT / source, ROOT / copy
    assert src.is_file(), f"{source} is missing"
    assert dst.read_bytes() == src.read_bytes(), f"{copy} differs from {source}: cp {source} {copy}"


def test_chart_has_a_values_file_for_every_ci_case() -> None:
    """ci/ holds the all-branches values and the values of the remaining branches, for each chart."""
    names = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
    assert names == ["all-branches-values.yaml", "classic-values.yaml"]
    assert sorted(p.name for p in (MONITORING / "ci").glob("*.yaml")) == [
        "all-branches-values.yaml", "minimal-values.yaml"]
    for chart in (CHART, MONITORING):
        assert Path(chart / "values.schema.json").is_file()
        assert "ci/" in (chart / ".helmignore").read_text().splitlines()


def test_alerts_are_no_longer_copied_into_a_chart() -> None:
    """The alerts are rendered from the monitoring chart's values; no static copy lingers in a chart."""
    assert not list(ROOT.glob("charts/*/files/sidecar-alerts.yaml"))
