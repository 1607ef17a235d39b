"""values.schema.json guards installs: helm refuses bad values before rendering anything."""

from __future__ import annotations

import json

import pytest

from tests.support.helm_chart import ALL_BRANCHES, CHART, render_fails


@pytest.mark.parametrize("bad", [
    "sidecar.mode=sometimes",
    "sidecar.opsPort=0",
    "sidecar.proxyPort=70000",
    "sidecar.logFormat=xml",
    "sidecar.securityContext=null",
    "image.repository=",
    "secrets.existingSecret=Not_A_Name",
    "secrets.keys.bad-env-name=x",
    "config.providers.health.upstream=https://x",
    "config.unknown_section.x=1",
    "metrics.podMonitor.interval=often",
    "metrics.podMonitor.relabelings[0]=x",
    "bot.replicas=-1",
    "typo_at_top_level=1",
    "sidecar.probes.liveness.periodSeconds=0",
    "sidecar.holdBotUntilReady.timeoutSeconds=0",
    "sidecar.extraVolumes[0].configMap.name=x",
    "sidecar.extraVolumeMounts[0].name=x",
    "image.digest=latest",
    "commonLabels.team=1",
    "ledger.state.mountPath=var/lib/sidecar",
    "ledger.state.sizeLimit=lots",
    "ledger.redis.existingSecret=Not_A_Name",
    "ledger.redis.key=",
    # The alerts and the dashboard moved to the sidecar-monitoring chart: an old values file fails loudly.
    "prometheusRule.enabled=true",
    "dashboard.enabled=true",
])
def test_schema_refuses_bad_value(bad: str) -> None:
    """helm template fails, and says it is the schema that refused."""
    err = render_fails([bad])
    assert "schema" in err.lower(), err


def test_schema_refuses_non_string_env_value() -> None:
    """An env value must be a string (a bare number would be rejected by the API server anyway)."""
    err = render_fails(["sidecar.env[0].name=CB_FAILURE_THRESHOLD", "sidecar.env[0].value=7"])
    assert "/sidecar/env/0/value" in err


def test_schema_refuses_bad_value_on_top_of_ci_values() -> None:
    """The guard also holds on top of a full values file."""
    render_fails(["bot.image.tag="], values=[ALL_BRANCHES])


def test_schema_is_draft7_and_closed() -> None:
    """Every object in the schema that lists properties rejects unknown keys (typos fail loudly)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and not path.endswith("/if"):  # a condition, not a block
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(schema, "")
