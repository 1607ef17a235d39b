"""The chart's `config:` value is checked against the sidecar's own configuration schema: the real
helm refuses a typo, a wrong type or an out-of-range value at lint, template and install time, and
names the path; partial overrides of the default configuration stay valid."""

from __future__ import annotations

import pytest

from tests.support.helm_chart import CHART, helm, render

REFUSED = [
    ("config.providers.replicate.breaker.failur_threshold=3",
     "/config/providers/replicate/breaker", "additional properties 'failur_threshold' not allowed"),
    ("config.providers.replicate.breaker.failure_threshold=many",
     "/config/providers/replicate/breaker/failure_threshold", "want integer"),
    ("config.providers.replicate.breaker.failure_threshold=0",
     "/config/providers/replicate/breaker/failure_threshold", "minimum: got 0, want 1"),
    ("config.defaults.breaker.minimum_calls=-1",
     "/config/defaults/breaker/minimum_calls", "minimum: got -1, want 0"),
    ("config.defaults.timeouts.total=2 minutes", "/config/defaults/timeouts/total", "does not match"),
    ("config.providers.file-download.allowed_schemes[0]=ftp",
     "/config/providers/file-download/allowed_schemes/0", "value must be one of 'http', 'https'"),
    # A list replaces the default's whole: each route must be complete.
    ("config.providers.replicate.routes[0].name=x",
     "/config/providers/replicate/routes/0", "missing property 'path'"),
    # helm reports a property name's problem at '' (the name itself is the pointer).
    ("config.providers.metrics.upstream=https://x", "", "invalid propertyName 'metrics'"),
]
COMMANDS = {
    "lint": ("lint", str(CHART)),
    "template": ("template", "r", str(CHART)),
    "install --dry-run": ("install", "r", str(CHART), "--dry-run=client"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("bad", "path", "why"), REFUSED, ids=[case[0] for case in REFUSED])
def test_helm_refuses_a_bad_config_value_naming_its_path(command: str, bad: str, path: str,
                                                         why: str) -> None:
    """helm lint, template and install --dry-run all fail, quoting the value's path and the reason."""
    proc = helm(*COMMANDS[command], "--set", bad, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"at '{path}" in output and why in output, output


def test_a_number_out_of_range_is_refused() -> None:
    """A decimal given as a number (--set-json; --set makes it a string) is range-checked by helm."""
    proc = helm("template", "r", str(CHART), "--set-json",
                "config.defaults.breaker.failure_rate_threshold=1.5", check=False)
    assert proc.returncode != 0
    assert ("at '/config/defaults/breaker/failure_rate_threshold'" in proc.stderr
            and "maximum: got 1.5, want 1" in proc.stderr), proc.stderr


@pytest.mark.parametrize("override", [
    "config.providers.replicate.breaker.failure_threshold=3",
    "config.providers.replicate.auth.prefix=Token ",
    "config.providers.file-download.max_download_size=10MiB",
    "config.defaults.timeouts.total=90000",
    "config.server.access_log=true",
    "config.defaults.breaker.failure_rate_threshold=0.3",  # a string from --set: the loader reads it
    "config.providers.openai.upstream=https://api.openai.com",
    "config.providers.replicate.upstream=${REPLICATE_URL}",
])
def test_partial_overrides_pass_and_reach_the_configmap(override: str) -> None:
    """One key of a block, with the rest coming from the chart's default configuration, renders."""
    docs = render(sets=[override])
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["sidecar.yaml"]
    key, _, value = override.partition("=")
    assert key.rsplit(".", 1)[1] in config and value.strip() in config
