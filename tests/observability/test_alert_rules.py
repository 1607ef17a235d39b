"""The alert rules, checked and unit-tested by the real promtool, with runbook pages that exist."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from promql_names import ALERTS, ROOT, alert_rules, allowed, metric_names

ALERT_TESTS = ROOT / "tests" / "observability" / "alerts-test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
MKDOCS = ROOT / "mkdocs.yml"
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
    """Alert expressions read the sidecar's documented metrics, process_* or up only."""
    names = metric_names(rule["expr"])
    assert names and all(allowed(n) for n in names), sorted(names)


def _nav_pages(nav: object) -> set[str]:
    """Every page file named in mkdocs.yml's nav, at any depth."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_nav_pages(item) for item in nav))
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(item) for item in nav.values()))
    return set()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_runbook_is_a_page_of_the_docs_site(rule: dict[str, dict[str, str]]) -> None:
    """Each alert's runbook is runbooks/<alert>/ on the docs site: a page for that alert, in the nav."""
    alert = str(rule["alert"])
    assert rule["annotations"]["runbook"] == f"runbooks/{alert.lower()}/"
    page = RUNBOOKS / f"{alert.lower()}.md"
    assert page.is_file(), f"{page} is missing"
    assert page.read_text().splitlines()[0] == f"# {alert}"
    nav = yaml.safe_load(MKDOCS.read_text())["nav"]
    assert f"runbooks/{alert.lower()}.md" in _nav_pages(nav)
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])
