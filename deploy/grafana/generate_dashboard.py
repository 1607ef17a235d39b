"""Generate sidecar-dashboard.json (run: python deploy/grafana/generate_dashboard.py).

The dashboard is code so that its panels stay consistent: every query uses the metric names of
``GET /metrics`` (docs/endpoints.md) and is scoped by the template variables: ``namespace``, ``job``
(one per bot), ``pod`` on every selector, ``provider`` and ``operation`` where the metric has that
label. One dashboard serves every bot of a cluster. The script writes deploy/grafana/ and the copy in
the sidecar-monitoring chart; a test checks that both equal its output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "sidecar-dashboard.json"
CHART_COPY = HERE.parents[1] / "charts" / "sidecar-monitoring" / "files" / "sidecar-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
# Where the documentation site is published by default; the chart swaps it for its runbookBaseUrl.
DOCS = "https://owner.github.io/sidecar"
SCOPE = 'namespace=~"$namespace", job=~"$job", pod=~"$pod"'   # every selector
P = f'{SCOPE}, provider=~"$provider"'                         # + provider-labelled metrics
PO = f'{P}, operation=~"$operation"'                           # + per-operation metrics
RI = "$__rate_interval"
SIDECAR_TARGETS = f"on (job, instance) sidecar_build_info{{{SCOPE}}}"

STATE_CODES = ("closed", "disabled", "half_open", "open", "forced_open")  # worst last: max() across pods
STATE_COLOURS = ("green", "blue", "yellow", "red", "dark-red")


def _target(expr: str, legend: str, ref: str) -> dict[str, object]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def runbook(alert: str) -> list[dict[str, object]]:
    """Panel links to the runbook of the alert that watches what the panel shows."""
    return [{"title": f"Runbook: {alert}", "url": f"{DOCS}/runbooks/{alert.lower()}/", "targetBlank": True}]


def _variable(name: str, label: str, metric: str, *, all_value: str | None = ".*") -> dict[str, object]:
    query = f"label_values({metric}, {name})"
    var: dict[str, object] = {
        "name": name, "label": label, "type": "query", "datasource": DS, "definition": query,
        "query": {"query": query, "refId": name}, "multi": True, "includeAll": True, "current": {},
        "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": []}
    if all_value is not None:
        var["allValue"] = all_value
    return var


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
              alert: str | None = None) -> None:
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
        if alert:
            panel["links"] = runbook(alert)
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
    """One series per bot and provider whose value encodes the breaker's state (worst over pods)."""
    parts = [f'(sidecar_breaker_state{{{P}, state="{s}"}} == 1) * {i}' for i, s in enumerate(STATE_CODES)]
    return "max by (job, provider) (\n  " + "\n  or ".join(parts) + "\n)"


def build() -> dict[str, object]:
    lay = Layout()
    state_mappings = [{"type": "value", "options": {
        str(i): {"text": s, "color": c, "index": i}
        for i, (s, c) in enumerate(zip(STATE_CODES, STATE_COLOURS, strict=True))}}]

    lay.row("Circuit breakers")
    lay.panel("state-timeline", "Breaker state per bot and provider",
              "Each bot's breaker state per provider over time, from sidecar_breaker_state == 1 "
              "(worst state across the bot's pods).",
              [(_state_expr(), "{{job}} · {{provider}}")], w=24, h=8, alert="SidecarBreakerOpen",
              extra={"fieldConfig": {"defaults": {"mappings": state_mappings, "color": {"mode": "thresholds"},
                                                  "thresholds": {"mode": "absolute", "steps": [
                                                      {"color": "green", "value": None}]}}},
                     "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}})
    lay.panel("stat", "Breakers not closed",
              "Number of (pod, provider) breakers currently open, half-open, forced open or disabled.",
              [(f'sum(sidecar_breaker_state{{{P}, state!="closed"}})', "not closed")], w=6, h=6,
              alert="SidecarBreakerOpen",
              extra={"fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 1}]}}}})
    lay.panel("timeseries", "Breaker transitions",
              "State transitions per provider, from and to state.",
              [(f"sum by (provider, from_state, to_state) "
                f"(increase(sidecar_breaker_transitions_total{{{P}}}[{RI}]))",
                "{{provider}}: {{from_state}} → {{to_state}}")], w=9, h=6, alert="SidecarBreakerFlapping")
    lay.panel("timeseries", "Short-circuited requests",
              "Requests answered 503 circuit_open without an attempt, per second.",
              [(f"sum by (provider) (rate(sidecar_short_circuited_total{{{P}}}[{RI}]))", "{{provider}}")],
              w=9, h=6, unit="reqps", alert="SidecarHighShortCircuitRatio")
    lay.panel("timeseries", "Failure rate against the breaker's threshold",
              "Failures / calls in each breaker's window (worst pod) beside the failure_rate_threshold "
              "that opens it; the rate rule applies once the window holds minimum_calls calls "
              "(sidecar_breaker_window_calls, sidecar_breaker_minimum_calls).",
              [(f"max by (provider) (sidecar_breaker_failure_rate{{{P}}})", "{{provider}} failure rate"),
               (f"max by (provider) (sidecar_breaker_failure_rate_threshold{{{P}}})",
                "{{provider}} threshold")],
              w=24, h=7, unit="percentunit", alert="SidecarBreakerOpen",
              extra={"fieldConfig": {"overrides": [{
                  "matcher": {"id": "byRegexp", "options": ".* threshold"},
                  "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
              }]}})

    lay.row("Traffic")
    lay.panel("timeseries", "Request rate by status code and source",
              "Client requests per second by the status the client got and who answered: source=sidecar "
              "for the sidecar's own errors (X-Sidecar-Error: circuit_open, provider_overloaded …), "
              "source=provider for the provider's answers.",
              [(f"sum by (code, source) (rate(sidecar_requests_total{{{PO}}}[{RI}]))",
                "{{code}} {{source}}")], unit="reqps")
    lay.panel("timeseries", "Request rate by bot and provider",
              "Client requests per second per bot and provider.",
              [(f"sum by (job, provider) (rate(sidecar_requests_total{{{PO}}}[{RI}]))",
                "{{job}} · {{provider}}")], unit="reqps")
    lay.panel("timeseries", "5xx ratio by provider and source",
              "Share of client requests answered with a 5xx, split by who answered: the provider's own "
              "5xx, or the sidecar's (circuit_open, provider_overloaded, upstream_unreachable …).",
              [(f'sum by (provider, source) (rate(sidecar_requests_total{{{PO}, code=~"5.."}}[{RI}]))'
                f" / ignoring (source) group_left"
                f" sum by (provider) (rate(sidecar_requests_total{{{PO}}}[{RI}]))",
                "{{provider}} ({{source}})")],
              unit="percentunit")
    lay.panel("timeseries", "In-flight requests",
              "Client requests in flight per provider (sum over pods).",
              [(f"sum by (provider) (sidecar_inflight_requests{{{P}}})", "{{provider}}")])

    lay.row("Connections and bulkhead")
    lay.panel("timeseries", "Connections to providers",
              "Open connections of the sidecars' pools per provider (sum over pods): answering a request "
              "(in_use) or kept for reuse (idle), beside the limit (max_concurrent, else 256 per pod).",
              [(f"sum by (provider, state) (sidecar_upstream_connections{{{P}}})", "{{provider}} {{state}}"),
               (f"sum by (provider) (sidecar_upstream_connection_limit{{{P}}})", "{{provider}} limit")],
              w=8)
    lay.panel("timeseries", "Callers waiting for a connection",
              "Requests queued because a pool is at its limit (sum over pods); above 0 for long, the "
              "limit is too low for the traffic.",
              [(f"sum by (provider) (sidecar_upstream_connection_waiters{{{P}}})", "{{provider}}")], w=8)
    lay.panel("timeseries", "Bulkhead rejections",
              "Requests answered 503 provider_overloaded because max_concurrent requests were in flight, "
              "per second.",
              [(f"sum by (provider) (rate(sidecar_bulkhead_rejected_total{{{P}}}[{RI}]))", "{{provider}}")],
              w=8, unit="reqps")

    lay.row("Rate limits")
    lay.panel("timeseries", "Rate-limit rejections",
              "Requests answered 429 rate_limited per second, by why no place was free in time: the "
              "provider's rate or concurrency budget, or a pause after the provider's own 429.",
              [(f"sum by (provider, reason) (rate(sidecar_rate_limited_total{{{P}}}[{RI}]))",
                "{{provider}} {{reason}}")], w=8, unit="reqps", alert="SidecarProviderPaused")
    lay.panel("timeseries", "Rate-limit wait p95",
              "How long requests waited for their place under the provider's limits (refused ones "
              "included), 95th percentile.",
              [(f"histogram_quantile(0.95, sum by (provider, le) "
                f"(rate(sidecar_rate_limit_wait_seconds_bucket{{{P}}}[{RI}])))", "{{provider}}")],
              w=8, unit="s")
    lay.panel("timeseries", "Provider pauses",
              "Seconds left of each provider's pause after its own 429 (the longest over pods; 0 when "
              "not paused).",
              [(f"max by (provider) (clamp_min(sidecar_provider_paused_until_seconds{{{P}}} - time(), 0))",
                "{{provider}}")], w=8, unit="s", alert="SidecarProviderPaused")

    lay.row("Job ledger")
    lay.panel("timeseries", "Paid-job requests by ledger result",
              "Requests on creates_job routes per second by what the job ledger did: first (forwarded "
              "once), replayed, coalesced, in_flight (409), reused (422), unknown (an outcome became "
              "unknown), reconciled, released, unprotected (forwarded without the ledger).",
              [(f"sum by (provider, result) (rate(sidecar_idempotency_total{{{P}}}[{RI}]))",
                "{{provider}} {{result}}")], w=8, unit="reqps", alert="SidecarUnknownOutcomes")
    lay.panel("timeseries", "Ledger latency p99",
              "Duration of job ledger operations (claim, settle, get …) by backend, 99th percentile.",
              [(f"histogram_quantile(0.99, sum by (backend, op, le) "
                f"(rate(sidecar_ledger_duration_seconds_bucket{{{SCOPE}}}[{RI}])))", "{{backend}} {{op}}")],
              w=8, unit="s", alert="SidecarLedgerErrors")
    lay.panel("timeseries", "Ledger errors",
              "Job ledger operations that failed per second, by backend and operation: paid creates go "
              "unprotected (on_unavailable: forward) or are refused meanwhile.",
              [(f"sum by (backend, op) (rate(sidecar_ledger_errors_total{{{SCOPE}}}[{RI}]))",
                "{{backend}} {{op}}")], w=8, unit="ops", alert="SidecarLedgerErrors")

    lay.row("Retries and attempts")
    lay.panel("timeseries", "Retries", "Retries sent per second.",
              [(f"sum by (provider) (rate(sidecar_retries_total{{{P}}}[{RI}]))", "{{provider}}")],
              w=8, unit="reqps")
    refused = f"sum by (provider) (rate(sidecar_retry_budget_exhausted_total{{{P}}}[{RI}]))"
    sent = f"sum by (provider) (rate(sidecar_retries_total{{{P}}}[{RI}]))"
    lay.panel("timeseries", "Retries refused by the budget",
              "Share of the retries the sidecars wanted to send (sent + refused) that the retry budget "
              "refused; SidecarRetryBudgetExhausted watches this share.",
              [(f"{refused}\n  /\n({refused} + {sent})", "{{provider}}")], w=8, unit="percentunit",
              alert="SidecarRetryBudgetExhausted")
    lay.panel("timeseries", "Attempt outcomes",
              "Upstream attempts per second by result (success, failure, timeout, connect_error).",
              [(f"sum by (provider, result) (rate(sidecar_upstream_attempts_total{{{P}}}[{RI}]))",
                "{{provider}} {{result}}")], w=8, unit="reqps")

    lay.row("Latency")
    lay.panel("timeseries", "Request latency p50 / p95 / p99",
              "Client request duration, retries and waits included.",
              [(f"histogram_quantile({q}, sum by (provider, le) "
                f"(rate(sidecar_request_duration_seconds_bucket{{{PO}}}[{RI}])))", f"{{{{provider}}}} p{n}")
               for q, n in (("0.5", 50), ("0.95", 95), ("0.99", 99))],
              unit="s", alert="SidecarHighLatencyP99")
    lay.panel("timeseries", "Upstream attempt latency p95",
              "Duration of single upstream attempts to response headers.",
              [(f"histogram_quantile(0.95, sum by (provider, le) "
                f"(rate(sidecar_upstream_attempt_duration_seconds_bucket{{{P}}}[{RI}])))", "{{provider}}")],
              unit="s")

    lay.row("Provider probes")
    lay.panel("state-timeline", "Probe up",
              "Background health probe result (1 up, 0 down) per bot and provider, worst over the "
              "bot's pods.",
              [(f"min by (job, provider) (sidecar_probe_up{{{P}}})", "{{job}} · {{provider}}")],
              alert="SidecarProbeDown",
              extra={"fieldConfig": {"defaults": {"mappings": [{"type": "value", "options": {
                  "0": {"text": "down", "color": "red", "index": 0},
                  "1": {"text": "up", "color": "green", "index": 1}}}]}},
                     "options": {"showValue": "never", "mergeValues": True}})
    lay.panel("timeseries", "Probe latency", "Duration of the last health probe, slowest pod.",
              [(f"max by (provider) (sidecar_probe_duration_seconds{{{P}}})", "{{provider}}")], unit="s",
              alert="SidecarProbeDown")

    lay.row("Sidecar process")
    lay.panel("stat", "Sidecar targets up",
              "Scrape targets of the selected bots that are up, per bot (job): the targets that exported "
              "sidecar_build_info within the last hour, so a sidecar that went down still counts as 0.",
              [(f"sum by (job) (up{{{SCOPE}}} and on (job, instance) "
                f"max_over_time(sidecar_build_info{{{SCOPE}}}[1h]))", "{{job}}")], w=4, h=8,
              alert="SidecarDown")
    lay.panel("table", "Versions", "Running sidecars per version.",
              [(f"count by (version) (sidecar_build_info{{{SCOPE}}})", "{{version}}")], w=4, h=8,
              extra={"targets": [dict(_target(f"count by (version) (sidecar_build_info{{{SCOPE}}})",
                                              "{{version}}", "A"),
                                      format="table", instant=True, range=False)]})
    lay.panel("timeseries", "Resident memory", "Resident memory of each sidecar process.",
              [(f"process_resident_memory_bytes{{{SCOPE}}} and {SIDECAR_TARGETS}", "{{pod}} {{instance}}")],
              w=8, h=8, unit="bytes")
    lay.panel("timeseries", "CPU", "CPU seconds per second used by each sidecar process.",
              [(f"rate(process_cpu_seconds_total{{{SCOPE}}}[{RI}]) and {SIDECAR_TARGETS}",
                "{{pod}} {{instance}}")],
              w=8, h=8, unit="percentunit")
    lay.panel("timeseries", "Open file descriptors", "Open file descriptors of each sidecar process.",
              [(f"process_open_fds{{{SCOPE}}} and {SIDECAR_TARGETS}", "{{pod}} {{instance}}")], w=24, h=6)

    scope = 'namespace=~"$namespace", job=~"$job", pod=~"$pod"'
    return {
        "title": "Egress sidecar",
        "uid": "egress-sidecar",
        "description": "Breakers, retries, latency and probes of the egress sidecar, for every bot of the "
                       "cluster: pick namespaces, bots (scrape jobs) and pods above.",
        "tags": ["sidecar", "egress", "circuit-breaker"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [{"title": "Runbooks", "type": "link", "url": f"{DOCS}/runbooks/", "targetBlank": True,
                   "icon": "doc", "tooltip": "One page per alert", "asDropdown": False, "includeVars": False,
                   "keepTime": False, "tags": []}],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            _variable("namespace", "Namespace", "sidecar_build_info"),
            # No custom "All" value: All expands to the sidecar jobs found, so `up{job=~"$job"}` never
            # reaches another application's targets.
            _variable("job", "Bot", 'sidecar_build_info{namespace=~"$namespace"}', all_value=None),
            _variable("pod", "Pod", 'sidecar_build_info{namespace=~"$namespace", job=~"$job"}'),
            _variable("provider", "Provider", f"sidecar_breaker_state{{{scope}}}"),
            _variable("operation", "Operation", f'sidecar_requests_total{{{scope}, provider=~"$provider"}}'),
        ]},
        "panels": lay.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    text = render()
    for out in (OUT, CHART_COPY):
        out.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {out}\n")
