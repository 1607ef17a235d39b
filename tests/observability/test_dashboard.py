"""The Grafana dashboard: importable as provisioned JSON, and every query reads contract metrics only."""

from __future__ import annotations

import importlib.util
import re

import pytest
from promql_names import (
    DASHBOARD,
    ROOT,
    WITHOUT_PROVIDER,
    allowed,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    metric_names,
    selectors,
)

DS = {"type": "prometheus", "uid": "${datasource}"}


def test_no_inputs_and_no_hardcoded_datasource() -> None:
    """A provisioned dashboard has no __inputs and no ${DS_...} placeholders; panels use ${datasource}."""
    dash = dashboard()
    assert "__inputs" not in dash and "__requires" not in dash
    assert "${DS_" not in DASHBOARD.read_text()
    for panel in dashboard_panels(dash):
        assert panel["datasource"] == DS, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS, panel["title"]


def test_variables() -> None:
    """`datasource` picks a Prometheus; `provider` lists breaker providers, multi-select with All."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"datasource", "provider"}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    prov = variables["provider"]
    assert prov["type"] == "query"
    assert prov["datasource"] == DS
    assert prov["query"]["query"] == prov["definition"] == "label_values(sidecar_breaker_state, provider)"
    assert prov["multi"] is True and prov["includeAll"] is True and prov["allValue"] == ".*"


def test_rows() -> None:
    """The rows, in order."""
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Circuit breakers", "Traffic", "Retries and attempts", "Latency", "Provider probes",
                    "Sidecar process"]


@pytest.mark.parametrize("title,expr", dashboard_exprs(), ids=lambda v: str(v)[:40])
def test_query_uses_spec_metrics_and_provider_filter(title: str, expr: str) -> None:
    """Only the contract's metric names, process_* and up; every provider-labelled selector filters on
    $provider."""
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr}"
    assert all(allowed(n) for n in names), f"{title}: {sorted(n for n in names if not allowed(n))}"
    for name, matchers in selectors(expr):
        if name.startswith("sidecar_") and name not in WITHOUT_PROVIDER:
            assert 'provider=~"$provider"' in matchers, f"{title}: {name}{matchers}"


def _find(pred: object) -> list[str]:
    return [e for _, e in dashboard_exprs() if pred(e)]  # type: ignore[operator]


def test_required_panels_exist() -> None:
    """Breaker timeline, status codes, short circuits, retries, budget, attempts, quantiles, in-flight,
    probes, memory and CPU are all on the dashboard."""
    panels = dashboard_panels()
    timeline = [p for p in panels if p["type"] == "state-timeline" and any(
        "sidecar_breaker_state" in t["expr"] and "== 1" in t["expr"] for t in p["targets"])]
    assert timeline, "breaker state timeline"
    assert _find(lambda e: "sum by (code)" in e and "sidecar_requests_total" in e)
    for metric in ("sidecar_short_circuited_total", "sidecar_retries_total",
                   "sidecar_retry_budget_exhausted_total",
                   "sidecar_upstream_attempts_total", "sidecar_inflight_requests", "sidecar_probe_up",
                   "sidecar_probe_duration_seconds", "process_resident_memory_bytes",
                   "process_cpu_seconds_total"):
        assert _find(lambda e, m=metric: m in e), metric
    for q in ("0.5", "0.95", "0.99"):
        pattern = rf"histogram_quantile\({q},.*sidecar_request_duration_seconds_bucket"
        assert _find(lambda e, p=pattern: re.search(p, e))


def test_layout_is_consistent() -> None:
    """Unique panel ids, every panel inside the 24-column grid, no two panels overlapping."""
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_json_is_the_generators_output() -> None:
    """deploy/grafana/sidecar-dashboard.json is what generate_dashboard.py writes (edit the script)."""
    script = ROOT / "deploy" / "grafana" / "generate_dashboard.py"
    spec = importlib.util.spec_from_file_location("generate_dashboard", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text()


def test_metric_name_extraction_is_sound() -> None:
    """The checker itself: functions, labels, by-clauses and strings are not mistaken for metrics."""
    expr = ('histogram_quantile(0.99, sum by (provider, le) (rate(foo_bucket{provider=~"$provider", '
            'code="up"}[$__rate_interval]))) / on (job) group_left () bar and baz offset 5m')
    assert metric_names(expr) == {"foo_bucket", "bar", "baz"}
