"""The Grafana dashboard: importable as provisioned JSON, one for every bot of a cluster, every query
scoped by the template variables and reading the sidecar's metrics only."""

from __future__ import annotations

import re

import pytest

from tests.support.promql_names import (
    DASHBOARD,
    DOCS_URL,
    MONITORING_CHART,
    ROOT,
    WITH_OPERATION,
    WITHOUT_PROVIDER,
    allowed,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    load_script,
    metric_names,
    selectors,
)

DS = {"type": "prometheus", "uid": "${datasource}"}
SCOPE = ('namespace=~"$namespace"', 'job=~"$job"', 'pod=~"$pod"')
ALERT_NAMES = {"SidecarBreakerOpen", "SidecarBreakerFlapping", "SidecarHighShortCircuitRatio",
               "SidecarRetryBudgetExhausted", "SidecarProbeDown", "SidecarHighLatencyP99", "SidecarDown",
               "SidecarProviderPaused", "SidecarLedgerErrors", "SidecarUnknownOutcomes"}


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
    """datasource, then namespace, bot (job), pod, provider and operation, each narrowing the next."""
    variables = dashboard()["templating"]["list"]
    names = [v["name"] for v in variables]
    assert names == ["datasource", "namespace", "job", "pod", "provider", "operation"]
    by_name = {v["name"]: v for v in variables}
    ds = by_name["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    expected = {
        "namespace": "label_values(sidecar_build_info, namespace)",
        "job": 'label_values(sidecar_build_info{namespace=~"$namespace"}, job)',
        "pod": 'label_values(sidecar_build_info{namespace=~"$namespace", job=~"$job"}, pod)',
        "provider": 'label_values(sidecar_breaker_state{namespace=~"$namespace", job=~"$job", pod=~"$pod"}, '
                    'provider)',
        "operation": 'label_values(sidecar_requests_total{namespace=~"$namespace", job=~"$job", pod=~"$pod", '
                     'provider=~"$provider"}, operation)',
    }
    for name, query in expected.items():
        var = by_name[name]
        assert var["type"] == "query" and var["datasource"] == DS, name
        assert var["query"]["query"] == var["definition"] == query, name
        assert var["multi"] is True and var["includeAll"] is True, name
    assert by_name["job"]["label"] == "Bot"
    # "All" bots expands to the sidecar jobs found, never to ".*" (which would reach every target's `up`).
    assert "allValue" not in by_name["job"]
    assert all(by_name[n]["allValue"] == ".*" for n in ("namespace", "pod", "provider", "operation"))


def test_rows() -> None:
    """The rows, in order."""
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == ["Circuit breakers", "Traffic", "Connections and bulkhead", "Rate limits",
                    "Job ledger", "Retries and attempts",
                    "Latency", "Provider probes",
                    "Sidecar process"]


@pytest.mark.parametrize("title,expr", dashboard_exprs(), ids=lambda v: str(v)[:40])
def test_query_reads_sidecar_metrics_scoped_by_the_variables(title: str, expr: str) -> None:
    """Only the sidecar's metrics, process_* and up; every selector is scoped by namespace, job and pod,
    by provider where the metric has it, and by operation where the metric has it."""
    names = metric_names(expr)
    assert names, f"{title}: no metric in {expr}"
    assert all(allowed(n) for n in names), f"{title}: {sorted(n for n in names if not allowed(n))}"
    found = selectors(expr)
    assert found, f"{title}: no selector in {expr}"
    for name, matchers in found:
        assert all(m in matchers for m in SCOPE), f"{title}: {name}{matchers} is not scoped"
        if name.startswith("sidecar_") and name not in WITHOUT_PROVIDER:
            assert 'provider=~"$provider"' in matchers, f"{title}: {name}{matchers}"
        if name in WITH_OPERATION:
            assert 'operation=~"$operation"' in matchers, f"{title}: {name}{matchers}"


def test_up_panel_honours_the_selected_bot() -> None:
    """The `up` panel reads the selected jobs only, restricted to targets that are sidecars, per bot."""
    panel = next(p for p in dashboard_panels() if p["title"] == "Sidecar targets up")
    (target,) = panel["targets"]
    expr = target["expr"]
    assert expr.startswith("sum by (job) (up{")
    assert ('up{namespace=~"$namespace", job=~"$job", pod=~"$pod"} and on (job, instance) '
            'max_over_time(sidecar_build_info{') in expr
    assert target["legendFormat"] == "{{job}}"


def test_panels_link_to_their_alerts_runbooks() -> None:
    """Panels that an alert watches link to its runbook page; every alert has at least one such panel."""
    linked: set[str] = set()
    for panel in dashboard_panels():
        for link in panel.get("links", []):
            m = re.fullmatch(re.escape(DOCS_URL) + r"/runbooks/([a-z0-9]+)/", link["url"])
            assert m, f"{panel['title']}: {link['url']}"
            alert = next(a for a in ALERT_NAMES if a.lower() == m.group(1))
            assert link["title"] == f"Runbook: {alert}" and link["targetBlank"] is True
            assert (ROOT / "docs" / "runbooks" / f"{m.group(1)}.md").is_file()
            linked.add(alert)
    assert linked == ALERT_NAMES
    (top,) = dashboard()["links"]
    assert top["url"] == f"{DOCS_URL}/runbooks/"


def test_required_panels_exist() -> None:
    """Breaker timeline, status codes by source, short circuits, failure rate against its threshold,
    connections, waiters, bulkhead rejections, retries, budget, attempts, quantiles, in-flight,
    probes, memory and CPU are all on the dashboard."""
    panels = dashboard_panels()
    timeline = [p for p in panels if p["type"] == "state-timeline" and any(
        "sidecar_breaker_state" in t["expr"] and "== 1" in t["expr"] for t in p["targets"])]
    assert timeline, "breaker state timeline"
    exprs = [e for _, e in dashboard_exprs()]
    assert [e for e in exprs if "sum by (code, source)" in e and "sidecar_requests_total" in e]
    assert [e for e in exprs if "sum by (provider, source)" in e and 'code=~"5.."' in e]
    for metric in ("sidecar_short_circuited_total", "sidecar_retries_total",
                   "sidecar_breaker_failure_rate", "sidecar_breaker_failure_rate_threshold",
                   "sidecar_upstream_connections", "sidecar_upstream_connection_waiters",
                   "sidecar_bulkhead_rejected_total", "sidecar_rate_limited_total",
                   "sidecar_rate_limit_wait_seconds_bucket", "sidecar_provider_paused_until_seconds",
                   "sidecar_idempotency_total", "sidecar_ledger_errors_total",
                   "sidecar_ledger_duration_seconds_bucket",
                   "sidecar_retry_budget_exhausted_total",
                   "sidecar_upstream_attempts_total", "sidecar_inflight_requests", "sidecar_probe_up",
                   "sidecar_probe_duration_seconds", "process_resident_memory_bytes",
                   "process_cpu_seconds_total"):
        assert [e for e in exprs if metric in e], metric
    for q in ("0.5", "0.95", "0.99"):
        pattern = rf"histogram_quantile\({q},.*sidecar_request_duration_seconds_bucket"
        assert [e for e in exprs if re.search(pattern, e)]


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


def test_json_and_chart_copy_are_the_generators_output() -> None:
    """deploy/grafana/sidecar-dashboard.json and the sidecar-monitoring chart's copy are what
    generate_dashboard.py writes (edit the script, run it)."""
    module = load_script(ROOT / "deploy" / "grafana" / "generate_dashboard.py")
    assert module.render() == DASHBOARD.read_text()
    assert module.render() == (MONITORING_CHART / "files" / "sidecar-dashboard.json").read_text()
    assert module.DOCS == DOCS_URL


def test_metric_name_extraction_is_sound() -> None:
    """The checker itself: functions, labels, by-clauses and strings are not mistaken for metrics."""
    expr = ('histogram_quantile(0.99, sum by (provider, le) (rate(foo_bucket{provider=~"$provider", '
            'code="up"}[$__rate_interval]))) / on (job) group_left () bar and baz offset 5m')
    assert metric_names(expr) == {"foo_bucket", "bar", "baz"}
