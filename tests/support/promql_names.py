"""Which metric names a PromQL expression reads, and which dashboard/alert expressions exist.

Shared by the dashboard, alert and end-to-end tests.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sidecar-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "sidecar-alerts.yaml"
MONITORING_CHART = ROOT / "charts" / "sidecar-monitoring"
# Where the documentation site is published by default (mkdocs.yml site_url, the chart's runbookBaseUrl).
DOCS_URL = "https://owner.github.io/sidecar"

# The metric names of GET /metrics (docs/endpoints.md): the contract with the dashboard and the alerts.
METRIC_COUNTERS_GAUGES = {
    "sidecar_requests_total", "sidecar_upstream_attempts_total", "sidecar_retries_total",
    "sidecar_retry_budget_exhausted_total", "sidecar_breaker_state", "sidecar_breaker_transitions_total",
    "sidecar_short_circuited_total", "sidecar_inflight_requests", "sidecar_probe_up",
    "sidecar_probe_duration_seconds", "sidecar_build_info",
    "sidecar_breaker_failure_rate", "sidecar_breaker_window_calls",
    "sidecar_breaker_failure_rate_threshold", "sidecar_breaker_minimum_calls",
    "sidecar_upstream_connections", "sidecar_upstream_connection_waiters",
    "sidecar_upstream_connection_limit", "sidecar_bulkhead_rejected_total",
    "sidecar_rate_limited_total", "sidecar_provider_paused_until_seconds",
    "sidecar_idempotency_total", "sidecar_ledger_errors_total",
}
METRIC_HISTOGRAMS = {"sidecar_request_duration_seconds", "sidecar_upstream_attempt_duration_seconds",
                     "sidecar_rate_limit_wait_seconds", "sidecar_ledger_duration_seconds"}
METRIC_SERIES = METRIC_COUNTERS_GAUGES | {
    f"{h}{s}" for h in METRIC_HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
WITHOUT_PROVIDER = {"sidecar_build_info", "sidecar_ledger_errors_total",
                    "sidecar_ledger_duration_seconds_bucket", "sidecar_ledger_duration_seconds_sum",
                    "sidecar_ledger_duration_seconds_count"}
WITH_OPERATION = {"sidecar_requests_total", "sidecar_request_duration_seconds_bucket",
                  "sidecar_request_duration_seconds_sum", "sidecar_request_duration_seconds_count"}

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords, labels and literals removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        if m.group(2) or m.group(1).lower() in _KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matcher text) for every vector selector of a known metric."""
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    out = []
    for m in SELECTOR.finditer(text):
        name = m.group(1)
        if name in METRIC_SERIES or name.startswith("process_") or name == "up":
            out.append((name, m.group(2) or ""))
    return out


def allowed(name: str) -> bool:
    return name in METRIC_SERIES or name.startswith("process_") or name == "up"


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels(dash: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    out: list[dict[str, Any]] = []
    for panel in (dash or dashboard())["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]


DASHBOARD_VARIABLES = ("namespace", "job", "pod", "provider", "operation")


def substitute_grafana(expr: str) -> str:
    """Grafana's variables as a query with every variable on "All" over 1m windows would see them."""
    expr = (expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
            .replace("$__interval", "1m").replace("$__range", "1m"))
    for name in DASHBOARD_VARIABLES:
        expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
    return expr


def load_script(path: Path) -> ModuleType:
    """Import a generator script by path (scripts/ and deploy/ are not packages)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
