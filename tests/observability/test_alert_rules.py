"""The alert rules, checked and unit-tested by the real promtool, with runbooks that resolve."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from promql_names import ALERTS, ROOT, alert_rules, allowed, metric_names

ALERT_TESTS = ROOT / "tests" / "observability" / "alerts-test.yaml"
README_DOC = ROOT / "README.md"
EXPECTED = {"SidecarBreakerOpen", "SidecarBreakerFlapping", "SidecarRetryBudgetExhausted",
            "SidecarHighShortCircuitRatio", "SidecarProbeDown", "SidecarHighLatencyP99", "SidecarDown"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not on PATH (Debian package `prometheus`; scripts/fetch-tools.sh)",
                    pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    """promtool accepts the rule file."""
    proc = promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(EXPECTED)} rules found" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    """promtool test rules: every alert fires on its failure series and stays quiet otherwise."""
    proc = promtool("test", "rules", str(ALERT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """alerts-test.yaml covers each alert both ways, and the rule file has exactly the expected alerts."""
    assert {r["alert"] for r in alert_rules()} == EXPECTED
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fired == EXPECTED
    assert quiet == EXPECTED


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_spec_metrics(rule: dict[str, str]) -> None:
    """Alert expressions read SPEC section 6 metrics, process_* or up only."""
    names = metric_names(rule["expr"])
    assert names and all(allowed(n) for n in names), sorted(names)


def _github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_runbook_link_resolves_in_deploy_doc(rule: dict[str, dict[str, str]]) -> None:
    """Each alert's runbook is README.md#runbook-<alert>, and the README has that heading."""
    alert = str(rule["alert"])
    assert rule["annotations"]["runbook"] == f"README.md#runbook-{alert.lower()}"
    assert f"runbook-{alert.lower()}" in _github_anchors(README_DOC.read_text())
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    assert rule["labels"]["severity"] in {"warning", "critical"}
