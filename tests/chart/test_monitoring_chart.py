"""The sidecar-monitoring chart: the cluster-wide alerts and dashboard, installed once for every bot."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm_chart import (
    ALL_BRANCHES,
    CHART,
    MON_ALL,
    MON_MINIMAL,
    MONITORING,
    ROOT,
    helm,
    is_crd,
    kubernetes_validate,
    load_all_strict,
    maybe,
    notes,
    one,
    render,
    render_fails,
    render_text,
    validate_crd_structure,
)

DEFAULT_DOCS = "https://owner.github.io/sidecar"
ALERTS = ("SidecarBreakerOpen", "SidecarBreakerFlapping", "SidecarHighShortCircuitRatio",
          "SidecarRetryBudgetExhausted", "SidecarProbeDown", "SidecarHighLatencyP99", "SidecarDown",
          "SidecarProviderPaused", "SidecarLedgerErrors", "SidecarUnknownOutcomes")


def _render(values: list[Path] | None = None, sets: list[str] | None = None,
            kube: str = "1.31.0") -> list[dict[str, Any]]:
    return render(values or [], sets or [], kube_version=kube, release="m", chart=MONITORING)


def _rules(values: list[Path] | None = None, sets: list[str] | None = None) -> list[dict[str, Any]]:
    rule = one(_render(values, sets), "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def _by_alert(rules: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rules if r["alert"] == name]


def _promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not on PATH (Debian package `prometheus`)", pytrace=False)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    proc = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", [[], [MON_ALL], [MON_MINIMAL]],
                         ids=["defaults", "all-branches", "minimal"])
def test_helm_lint_passes_strictly(values: list[Path]) -> None:
    """`helm lint --strict` accepts the chart with its defaults and with each CI values file."""
    args = ["lint", "--strict", str(MONITORING)]
    for v in values:
        args += ["-f", str(v)]
    assert "0 chart(s) failed" in helm(*args).stdout


@pytest.mark.parametrize("values", [MON_ALL, MON_MINIMAL], ids=["all-branches", "minimal"])
@pytest.mark.parametrize("kube", ["1.28.0", "1.31.0"])
def test_render_validates(values: Path, kube: str, tmp_path: Path) -> None:
    """The ConfigMap passes kubernetes-validate --strict, the PrometheusRule the shape check and promtool;
    no key is rendered twice."""
    text = render_text([values], kube_version=kube, release="m", chart=MONITORING)
    docs = load_all_strict(text)
    kubernetes_validate(docs, kube, tmp_path)
    for doc in filter(is_crd, docs):
        validate_crd_structure(doc)
    _promtool_check(one(docs, "PrometheusRule")["spec"]["groups"], tmp_path)


def test_all_branches_renders_every_template() -> None:
    """The all-branches values produce every kind of object the chart can make."""
    assert sorted(d["kind"] for d in _render([MON_ALL])) == ["ConfigMap", "PrometheusRule"]
    assert sorted(t.name for t in (MONITORING / "templates").glob("*.yaml")) == [
        "dashboard-configmap.yaml", "prometheusrule.yaml"]


def test_deploy_rule_file_is_the_default_rendering() -> None:
    """deploy/prometheus/sidecar-alerts.yaml is what scripts/render_alerts.py makes of the chart's defaults
    (edit the chart, rerun the script)."""
    spec = importlib.util.spec_from_file_location("render_alerts", ROOT / "scripts" / "render_alerts.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.render() == (ROOT / "deploy" / "prometheus" / "sidecar-alerts.yaml").read_text(), (
        "stale: run python scripts/render_alerts.py")
    deployed = yaml.safe_load((ROOT / "deploy" / "prometheus" / "sidecar-alerts.yaml").read_text())["groups"]
    assert deployed == one(_render(), "PrometheusRule")["spec"]["groups"]


def test_a_bot_release_has_no_cluster_wide_objects() -> None:
    """N bots mean N sidecar releases: none renders alerts or a dashboard, so nothing is duplicated."""
    for release in ("bot-a", "bot-b"):
        docs = render([ALL_BRANCHES], release=release, chart=CHART)
        assert not maybe(docs, "PrometheusRule")
        assert not [d for d in docs if "grafana_dashboard" in d["metadata"].get("labels", {})]


def test_default_rules_per_alert() -> None:
    """Defaults: every alert on, with its `for`, severity and runbook_url on the docs site; no rule labels
    but severity (and provider on the per-provider latency rules)."""
    rules = _rules()
    assert {r["alert"] for r in rules} == set(ALERTS)
    fors = {r["alert"]: r["for"] for r in rules}
    assert fors == {"SidecarBreakerOpen": "1m", "SidecarBreakerFlapping": "5m",
                    "SidecarHighShortCircuitRatio": "5m", "SidecarRetryBudgetExhausted": "5m",
                    "SidecarProbeDown": "5m", "SidecarHighLatencyP99": "10m", "SidecarDown": "5m",
                    "SidecarProviderPaused": "1m", "SidecarLedgerErrors": "5m",
                    "SidecarUnknownOutcomes": "0m"}
    for rule in rules:
        assert rule["annotations"]["runbook_url"] == f"{DEFAULT_DOCS}/runbooks/{rule['alert'].lower()}/"
        assert "runbook" not in rule["annotations"]
        assert set(rule["labels"]) <= {"severity", "provider"}
        assert rule["labels"]["severity"] == ("critical" if rule["alert"] == "SidecarDown" else "warning")


def test_values_shape_every_alert() -> None:
    """Thresholds, windows, `for`, severity, ruleLabels and the runbook base all come from values."""
    rules = _rules([MON_ALL])
    (open_,) = _by_alert(rules, "SidecarBreakerOpen")
    assert open_["for"] == "2m" and open_["labels"] == {"severity": "critical", "team": "bots"}
    (flap,) = _by_alert(rules, "SidecarBreakerFlapping")
    assert "[30m]" in flap["expr"] and flap["expr"].endswith("> 5") and flap["for"] == "10m"
    (short,) = _by_alert(rules, "SidecarHighShortCircuitRatio")
    assert short["expr"].count("[10m]") == 2 and short["expr"].endswith("> 0.8")
    (budget,) = _by_alert(rules, "SidecarRetryBudgetExhausted")
    assert ") > 0.5\nand\n" in budget["expr"] and budget["expr"].endswith(">= 10")
    assert budget["expr"].count("[15m]") == 4 and budget["labels"]["severity"] == "info"
    (probe,) = _by_alert(rules, "SidecarProbeDown")
    assert probe["for"] == "10m"
    (paused,) = _by_alert(rules, "SidecarProviderPaused")
    assert "[15m:30s]" in paused["expr"] and paused["expr"].endswith(">= 0.5")
    assert paused["for"] == "3m" and paused["labels"]["severity"] == "critical"
    (ledger,) = _by_alert(rules, "SidecarLedgerErrors")
    assert "[10m]" in ledger["expr"] and ledger["expr"].endswith("> 2") and ledger["for"] == "2m"
    (unknown,) = _by_alert(rules, "SidecarUnknownOutcomes")
    assert "[1h]" in unknown["expr"] and unknown["expr"].endswith("> 1") and unknown["for"] == "1m"
    for rule in rules:
        assert rule["labels"]["team"] == "bots", "ruleLabels reach every alert"
        assert rule["labels"]["severity"] != "ignored-the-alerts-own-wins", "the alert's severity wins"
        assert rule["annotations"]["runbook_url"].startswith("https://docs.example.com/sidecar/runbooks/")
        assert "//runbooks" not in rule["annotations"]["runbook_url"]


def test_latency_rule_per_provider_plus_a_default() -> None:
    """Each provider override is its own rule; the default rule excludes them; null drops an override."""
    rules = _by_alert(_rules([MON_ALL]), "SidecarHighLatencyP99")
    own = {r["labels"]["provider"]: r["expr"] for r in rules if "provider" in r["labels"]}
    assert set(own) == {"elevenlabs", "file-download", "huggingface", "replicate", "synclabs"}
    assert '{provider="synclabs"}[10m]))) > 45.5' in own["synclabs"]
    assert '{provider="replicate"}[10m]))) > 100' in own["replicate"]
    (default,) = [r for r in rules if "provider" not in r["labels"]]
    others = '{provider!~"elevenlabs|file-download|huggingface|replicate|synclabs"}[10m]))) > 20'
    assert others in default["expr"]
    drop = "prometheusRule.alerts.SidecarHighLatencyP99.providers.replicate=null"
    dropped = _by_alert(_rules(sets=[drop]), "SidecarHighLatencyP99")
    assert {r["labels"].get("provider") for r in dropped} == {"elevenlabs", "file-download", "huggingface",
                                                              None}
    (only,) = _by_alert(_rules([MON_MINIMAL]), "SidecarHighLatencyP99")
    assert "sidecar_request_duration_seconds_bucket[5m]" in only["expr"], "no overrides: no provider matcher"


def test_down_alert_uses_the_target_selectors() -> None:
    """SidecarDown ORs the target selectors for `up == 0`, and fires on absent() only when none matches."""
    (rule,) = _by_alert(_rules([MON_ALL]), "SidecarDown")
    assert rule["expr"].splitlines() == [
        '(up{egress_sidecar_io_injected="true"} or up{job=~".*sidecar.*"} or '
        'up{job="kubernetes-pods", container="sidecar"}) == 0',
        "or",
        '(absent(up{egress_sidecar_io_injected="true"}) and on () absent(up{job=~".*sidecar.*"}) and on () '
        'absent(up{job="kubernetes-pods", container="sidecar"}))']
    (single,) = _by_alert(_rules([MON_MINIMAL]), "SidecarDown")
    assert single["expr"].splitlines() == [
        'up{job="bots-sidecars"} == 0', "or", 'absent(up{job="bots-sidecars"})']


def test_disabled_alerts_and_empty_groups_are_left_out() -> None:
    """An alert with enabled=false is gone; a group left without rules is gone too."""
    rule = one(_render([MON_MINIMAL]), "PrometheusRule")
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert "SidecarBreakerFlapping" not in names and "SidecarProbeDown" not in names
    sets = ["prometheusRule.alerts.SidecarRetryBudgetExhausted.enabled=false"]
    groups = [g["name"] for g in one(_render(sets=sets), "PrometheusRule")["spec"]["groups"]]
    assert groups == ["sidecar.breakers", "sidecar.providers", "sidecar.ledger", "sidecar.availability"]
    ledger_off = [*sets, *(f"prometheusRule.alerts.{a}.enabled=false"
                           for a in ("SidecarLedgerErrors", "SidecarUnknownOutcomes"))]
    groups = [g["name"] for g in one(_render(sets=ledger_off), "PrometheusRule")["spec"]["groups"]]
    assert groups == ["sidecar.breakers", "sidecar.providers", "sidecar.availability"]
    every = [f"prometheusRule.alerts.{a}.enabled=false" for a in ALERTS]
    assert "every alert is disabled" in render_fails(every, chart=MONITORING)


def test_each_object_can_be_switched_off() -> None:
    """prometheusRule.enabled and dashboard.enabled switch their object off."""
    assert [d["kind"] for d in _render(sets=["prometheusRule.enabled=false"])] == ["ConfigMap"]
    assert [d["kind"] for d in _render(sets=["dashboard.enabled=false"])] == ["PrometheusRule"]


def test_rule_object_labels() -> None:
    """additionalLabels (the Prometheus' ruleSelector) and commonLabels are on the PrometheusRule."""
    labels = one(_render([MON_ALL]), "PrometheusRule")["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack" and labels["cost-center"] == "ai"
    assert labels["team"] == "bots", "the object's own labels win over commonLabels"


def test_dashboard_configmap_for_grafanas_sidecar() -> None:
    """The dashboard ConfigMap carries the configured label key and value, namespace and annotations."""
    cm = one(_render([MON_ALL]), "ConfigMap")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard_bots"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["labels"]["cost-center"] == "ai"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Bots"}
    default = one(_render(), "ConfigMap")
    assert default["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "namespace" not in default["metadata"] and "annotations" not in default["metadata"]


def test_dashboard_is_the_generated_json_with_runbooks_on_the_configured_site() -> None:
    """Unchanged with the default base URL; with another one, only the runbook links move."""
    shipped = (MONITORING / "files" / "sidecar-dashboard.json").read_text()
    default = one(_render(), "ConfigMap")["data"]["sidecar-dashboard.json"]
    assert default == shipped.rstrip("\n")
    moved = one(_render([MON_ALL]), "ConfigMap")["data"]["sidecar-dashboard.json"]
    assert DEFAULT_DOCS not in moved
    assert moved == default.replace(f"{DEFAULT_DOCS}/runbooks/", "https://docs.example.com/sidecar/runbooks/")
    dash = json.loads(moved)
    assert dash["uid"] == "egress-sidecar"
    links = [link["url"] for p in dash["panels"] for link in p.get("links", [])]
    assert links and all(u.startswith("https://docs.example.com/sidecar/runbooks/") for u in links)


def test_notes_say_how_to_check_and_warn_without_rule_selector_labels() -> None:
    """The notes name both objects, how to check the rules loaded, and warn without additionalLabels."""
    text = notes(chart=MONITORING)
    assert "PrometheusRule bots/r-sidecar-monitoring" in text
    assert "WARNING: prometheusRule.additionalLabels is empty" in text
    assert "labelled grafana_dashboard: \"1\"" in text
    text = notes(chart=MONITORING, values=[MON_ALL])
    assert "WARNING" not in text
    assert "ConfigMap grafana/ci-monitoring-dashboard" in text
    assert "runbook_url under https://docs.example.com/sidecar/runbooks/" in text


@pytest.mark.parametrize("bad", [
    "prometheusRule.alerts.SidecarHighShortCircuitRatio.threshold=1.5",
    "prometheusRule.alerts.SidecarRetryBudgetExhausted.minRefused=0",
    "prometheusRule.alerts.SidecarBreakerOpen.for=soon",
    "prometheusRule.alerts.SidecarBreakerFlapping.window=15",
    "prometheusRule.alerts.SidecarProbeDown.severity=",
    "prometheusRule.alerts.SidecarHighLatencyP99.providers.Bad_Name=30",
    "prometheusRule.alerts.SidecarHighLatencyP99.providers.replicate=0",
    "prometheusRule.alerts.SidecarDown.targetSelectors[0]=job=sidecar",
    "prometheusRule.alerts.SidecarTypo.enabled=true",
    "prometheusRule.ruleLabels.team=1",
    "runbookBaseUrl=docs.example.com",
    "dashboard.label=not a label",
    "dashboard.namespace=Monitoring",
    "typo_at_top_level=1",
])
def test_schema_refuses_bad_value(bad: str) -> None:
    """helm template fails, and says it is the schema that refused."""
    err = render_fails([bad], chart=MONITORING)
    assert "schema" in err.lower(), err


def test_schema_is_draft7_and_closed() -> None:
    """Every object in the schema that lists properties rejects unknown keys (typos fail loudly)."""
    schema = json.loads((MONITORING / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for k, v in node.items():
                walk(v, f"{path}/{k}")

    walk(schema, "")
