"""The alert rules: checked and unit-tested by the real promtool, scoped per bot, with runbook pages."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.support.promql_names import ALERTS, DOCS_URL, ROOT, alert_rules, allowed, metric_names

ALERT_TESTS = ROOT / "tests" / "observability" / "alerts-test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
MKDOCS = ROOT / "mkdocs.yml"
EXPECTED = {"SidecarBreakerOpen", "SidecarBreakerFlapping", "SidecarRetryBudgetExhausted",
            "SidecarHighShortCircuitRatio", "SidecarProbeDown", "SidecarHighLatencyP99", "SidecarDown",
            "SidecarProviderPaused", "SidecarLedgerErrors", "SidecarUnknownOutcomes"}
# The default per-provider latency thresholds (seconds) and the default for every other provider.
LATENCY = {"elevenlabs": 60, "file-download": 60, "huggingface": 90, "replicate": 90}
LATENCY_DEFAULT = 30


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not on PATH (Debian package `prometheus`; scripts/fetch-tools.sh)",
                    pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    """promtool accepts the rule file (its duplicate-rule lint included)."""
    proc = promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in proc.stdout


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


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_scoped_per_bot_and_waits(rule: dict[str, str]) -> None:
    """Every aggregation keeps namespace and job (one job per bot), so one rule set serves every bot,
    and provider (the ledger's errors: backend and op instead); every alert has a `for:`."""
    assert re.fullmatch(r"[0-9]+[smh]", str(rule.get("for", ""))), rule["alert"]
    groupings = re.findall(r"\b(?:sum|min|max|count) by \(([^)]*)\)", rule["expr"])
    if rule["alert"] == "SidecarDown":
        assert not groupings  # `up` per target: namespace, pod, job and instance as scraped
        return
    assert groupings, rule["expr"]
    for grouping in groupings:
        labels = {label.strip() for label in grouping.split(",")}
        what = {"backend", "op"} if rule["alert"] == "SidecarLedgerErrors" else {"provider"}
        assert {"namespace", "job", *what} <= labels, grouping


def test_retry_budget_alert_is_a_ratio_with_a_floor() -> None:
    """SidecarRetryBudgetExhausted compares refused / (refused + sent) with a threshold and needs a
    minimum number of refused retries: one refused retry is no alert."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "SidecarRetryBudgetExhausted"]
    expr = " ".join(rule["expr"].split())
    refused = "sum by (namespace, job, provider) (increase(sidecar_retry_budget_exhausted_total[10m]))"
    sent = "sum by (namespace, job, provider) (increase(sidecar_retries_total[10m]))"
    assert expr == f"( {refused} / ( {refused} + {sent} ) ) > 0.25 and {refused} >= 5"


def test_latency_has_a_rule_per_provider_override_and_a_default_for_the_rest() -> None:
    """One SidecarHighLatencyP99 rule per provider with a threshold of its own, one for all the others."""
    rules = [r for r in alert_rules() if r["alert"] == "SidecarHighLatencyP99"]
    own = {}
    default = []
    for rule in rules:
        m = re.search(r'_bucket\{provider="([a-z0-9_-]+)"\}.*\) > ([0-9.]+)$', rule["expr"])
        if m:
            own[m.group(1)] = float(m.group(2))
            assert rule["labels"]["provider"] == m.group(1)
        else:
            default.append(rule)
    assert own == LATENCY
    (rule,) = default
    excluded = re.search(r'_bucket\{provider!~"([^"]+)"\}', rule["expr"])
    assert excluded and set(excluded.group(1).split("|")) == set(LATENCY)
    assert rule["expr"].endswith(f"> {LATENCY_DEFAULT}")


def test_down_alert_selects_sidecar_targets_whatever_the_scrape_job() -> None:
    """SidecarDown reads `up` of targets with the injected-pod label (PodMonitor and annotation scraping
    alike) or a *sidecar* job, and fires when none of them exists."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "SidecarDown"]
    expr = " ".join(rule["expr"].split())
    injected, job = 'up{egress_sidecar_io_injected="true"}', 'up{job=~".*sidecar.*"}'
    assert expr == f"({injected} or {job}) == 0 or (absent({injected}) and on () absent({job}))"


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
def test_runbook_url_is_a_page_of_the_docs_site(rule: dict[str, dict[str, str]]) -> None:
    """Each alert's runbook_url is <docs site>/runbooks/<alert>/: a page for that alert, in the nav."""
    alert = str(rule["alert"])
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert rule["annotations"]["runbook_url"] == f"{DOCS_URL}/runbooks/{alert.lower()}/"
    assert yaml.safe_load(MKDOCS.read_text())["site_url"].rstrip("/") == DOCS_URL
    page = RUNBOOKS / f"{alert.lower()}.md"
    assert page.is_file(), f"{page} is missing"
    assert page.read_text().splitlines()[0] == f"# {alert}"
    nav = yaml.safe_load(MKDOCS.read_text())["nav"]
    assert f"runbooks/{alert.lower()}.md" in _nav_pages(nav)
