"""Generate sidecar-dashboard.json (run: python deploy/grafana/generate_dashboard.py).

The dashboard is code so that its panels stay consistent: every query uses the metric names of
``GET /metrics`` (docs/endpoints.md) and filters ``provider=~"$provider"`` where the metric has that label. A test checks
that the committed JSON equals this script's output and that the chart's copy equals both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "sidecar-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
P = 'provider=~"$provider"'
RI = "$__rate_interval"
SIDECAR_TARGETS = "on (job, instance) sidecar_build_info"

STATE_CODES = ("closed", "disabled", "half_open", "open", "forced_open")  # worst last: max() across pods
STATE_COLOURS = ("green", "blue", "yellow", "red", "dark-red")


def _target(expr: str, legend: str, ref: str) -> dict[str, object]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


class Layout:
    """Places panels left to right on Grafana's 24-column grid, rows top to bottom."""

    def __init__(self) -> None:
        self.panels: list[dict[str, object]] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self._id(),
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def panel(self, kind: str, title: str, description: str, targets: list[tuple[str, str]],
              *, w: int = 12, h: int = 8, unit: str = "short", extra: dict[str, object] | None = None,
              ) -> None:
        if self.x + w > 24:
            self._newline()
        panel: dict[str, object] = {
            "type": kind, "title": title, "description": description, "id": self._id(),
            "datasource": DS, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [_target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
        }
        if extra:
            for key, value in extra.items():
                if isinstance(value, dict) and isinstance(panel.get(key), dict):
                    panel[key] = _merge(panel[key], value)  # type: ignore[arg-type]
                else:
                    panel[key] = value
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _merge(a: dict[str, object], b: dict[str, object]) -> dict[str, object]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v  # type: ignore[arg-type]
    return out


def _state_expr() -> str:
    """One series per provider whose value encodes the breaker's state (worst over pods)."""
    parts = [f'(sidecar_breaker_state{{{P}, state="{s}"}} == 1) * {i}' for i, s in enumerate(STATE_CODES)]
    return "max by (provider) (\n  " + "\n  or ".join(parts) + "\n)"


def build() -> dict[str, object]:
    lay = Layout()
    state_mappings = [{"type": "value", "options": {
        str(i): {"text": s, "color": c, "index": i}
        for i, (s, c) in enumerate(zip(STATE_CODES, STATE_COLOURS, strict=True))}}]

    lay.row("Circuit breakers")
    lay.panel("state-timeline", "Breaker state per provider",
              "Each provider's breaker state over time, from sidecar_breaker_state == 1 "
              "(worst state across pods).",
              [(_state_expr(), "{{provider}}")], w=24, h=8,
              extra={"fieldConfig": {"defaults": {"mappings": state_mappings, "color": {"mode": "thresholds"},
                                                  "thresholds": {"mode": "absolute", "steps": [
                                                      {"color": "green", "value": None}]}}},
                     "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}})
    lay.panel("stat", "Breakers not closed",
              "Number of (pod, provider) breakers currently open, half-open, forced open or disabled.",
              [(f'sum(sidecar_breaker_state{{{P}, state!="closed"}})', "not closed")], w=6, h=6,
              extra={"fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 1}]}}}})
    lay.panel("timeseries", "Breaker transitions",
              "State transitions per provider, from and to state.",
              [(f"sum by (provider, from_state, to_state) "
                f"(increase(sidecar_breaker_transitions_total{{{P}}}[{RI}]))",
                "{{provider}}: {{from_state}} → {{to_state}}")], w=9, h=6)
    lay.panel("timeseries", "Short-circuited requests",
              "Requests answered 503 circuit_open without an attempt, per second.",
              [(f"sum by (provider) (rate(sidecar_short_circuited_total{{{P}}}[{RI}]))", "{{provider}}")],
              w=9, h=6, unit="reqps")

    lay.row("Traffic")
    lay.panel("timeseries", "Request rate by status code",
              "Client requests per second by the status the client got, sidecar errors included.",
              [(f"sum by (code) (rate(sidecar_requests_total{{{P}}}[{RI}]))", "{{code}}")], unit="reqps")
    lay.panel("timeseries", "Request rate by provider",
              "Client requests per second per provider.",
              [(f"sum by (provider) (rate(sidecar_requests_total{{{P}}}[{RI}]))", "{{provider}}")],
              unit="reqps")
    lay.panel("timeseries", "5xx ratio by provider",
              "Share of client requests answered with a 5xx (provider's or sidecar's).",
              [(f'sum by (provider) (rate(sidecar_requests_total{{{P}, code=~"5.."}}[{RI}]))'
                f" / sum by (provider) (rate(sidecar_requests_total{{{P}}}[{RI}]))", "{{provider}}")],
              unit="percentunit")
    lay.panel("timeseries", "In-flight requests",
              "Client requests in flight per provider (sum over pods).",
              [(f"sum by (provider) (sidecar_inflight_requests{{{P}}})", "{{provider}}")])

    lay.row("Retries and attempts")
    lay.panel("timeseries", "Retries", "Retries sent per second.",
              [(f"sum by (provider) (rate(sidecar_retries_total{{{P}}}[{RI}]))", "{{provider}}")],
              w=8, unit="reqps")
    lay.panel("timeseries", "Retry budget exhaustion",
              "Retries refused by the retry budget per second.",
              [(f"sum by (provider) (rate(sidecar_retry_budget_exhausted_total{{{P}}}[{RI}]))",
                "{{provider}}")], w=8, unit="reqps")
    lay.panel("timeseries", "Attempt outcomes",
              "Upstream attempts per second by result (success, failure, timeout, connect_error).",
              [(f"sum by (provider, result) (rate(sidecar_upstream_attempts_total{{{P}}}[{RI}]))",
                "{{provider}} {{result}}")], w=8, unit="reqps")

    lay.row("Latency")
    lay.panel("timeseries", "Request latency p50 / p95 / p99",
              "Client request duration, retries and waits included.",
              [(f"histogram_quantile({q}, sum by (provider, le) "
                f"(rate(sidecar_request_duration_seconds_bucket{{{P}}}[{RI}])))", f"{{{{provider}}}} p{n}")
               for q, n in (("0.5", 50), ("0.95", 95), ("0.99", 99))], unit="s")
    lay.panel("timeseries", "Upstream attempt latency p95",
              "Duration of single upstream attempts to response headers.",
              [(f"histogram_quantile(0.95, sum by (provider, le) "
                f"(rate(sidecar_upstream_attempt_duration_seconds_bucket{{{P}}}[{RI}])))", "{{provider}}")],
              unit="s")

    lay.row("Provider probes")
    lay.panel("state-timeline", "Probe up", "Background health probe result (1 up, 0 down), worst over pods.",
              [(f"min by (provider) (sidecar_probe_up{{{P}}})", "{{provider}}")],
              extra={"fieldConfig": {"defaults": {"mappings": [{"type": "value", "options": {
                  "0": {"text": "down", "color": "red", "index": 0},
                  "1": {"text": "up", "color": "green", "index": 1}}}]}},
                     "options": {"showValue": "never", "mergeValues": True}})
    lay.panel("timeseries", "Probe latency", "Duration of the last health probe, slowest pod.",
              [(f"max by (provider) (sidecar_probe_duration_seconds{{{P}}})", "{{provider}}")], unit="s")

    lay.row("Sidecar process")
    lay.panel("stat", "Sidecar targets up", "Scrape targets whose job matches .*sidecar.* and are up.",
              [('sum(up{job=~".*sidecar.*"})', "up")], w=4, h=8)
    lay.panel("table", "Versions", "Running sidecars per version.",
              [("count by (version) (sidecar_build_info)", "{{version}}")], w=4, h=8,
              extra={"targets": [dict(_target("count by (version) (sidecar_build_info)", "{{version}}", "A"),
                                      format="table", instant=True, range=False)]})
    lay.panel("timeseries", "Resident memory", "Resident memory of each sidecar process.",
              [(f"process_resident_memory_bytes and {SIDECAR_TARGETS}", "{{instance}}")], w=8, h=8,
              unit="bytes")
    lay.panel("timeseries", "CPU", "CPU seconds per second used by each sidecar process.",
              [(f"rate(process_cpu_seconds_total[{RI}]) and {SIDECAR_TARGETS}", "{{instance}}")],
              w=8, h=8, unit="percentunit")
    lay.panel("timeseries", "Open file descriptors", "Open file descriptors of each sidecar process.",
              [(f"process_open_fds and {SIDECAR_TARGETS}", "{{instance}}")], w=24, h=6)

    return {
        "title": "Egress sidecar",
        "uid": "egress-sidecar",
        "description": "Breakers, retries, latency and probes of the egress sidecar.",
        "tags": ["sidecar", "egress", "circuit-breaker"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            {"name": "provider", "label": "Provider", "type": "query", "datasource": DS,
             "definition": "label_values(sidecar_breaker_state, provider)",
             "query": {"query": "label_values(sidecar_breaker_state, provider)", "refId": "provider"},
             "multi": True, "includeAll": True, "allValue": ".*", "current": {},
             "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": []},
        ]},
        "panels": lay.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
