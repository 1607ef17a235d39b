"""Another chart uses this one as a dependency and wires the sidecar in through the named templates."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm_chart import (
    CHART,
    arg_value,
    is_crd,
    kubernetes_validate,
    maybe,
    one,
    render,
    sidecar_container,
    validate_crd_structure,
)

PARENT_CHART = """\
apiVersion: v2
name: mybot
version: 1.0.0
dependencies:
  - name: sidecar
    version: 0.2.0
    repository: file://../sidecar
"""

PARENT_VALUES = """\
sidecar:
  secrets:
    existingSecret: mybot-keys
  metrics:
    podMonitor:
      enabled: true
  config:
    providers:
      replicate:
        breaker: {failure_threshold: 9}
"""

# The same template as README.md ("Use from your own chart").
PARENT_DEPLOYMENT = """\
{{- $sidecar := .Subcharts.sidecar }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-mybot
spec:
  selector:
    matchLabels: {app: mybot}
  template:
    metadata:
      labels:
        app: mybot
        {{- include "sidecar.podLabels" $sidecar | nindent 8 }}
      annotations:
        {{- include "sidecar.podAnnotations" $sidecar | nindent 8 }}
    spec:
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      {{- if include "sidecar.native" $sidecar }}
      initContainers:
        {{- include "sidecar.initContainer" $sidecar | nindent 8 }}
      {{- end }}
      containers:
        {{- if not (include "sidecar.native" $sidecar) }}
        {{- include "sidecar.container" $sidecar | nindent 8 }}
        {{- end }}
        - name: mybot
          image: registry.example.com/mybot:1.0
          env:
            - name: SIDECAR_URL
              value: http://127.0.0.1:8080
      volumes:
        {{- include "sidecar.volumes" $sidecar | nindent 8 }}
"""


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("charts")
    parent = root / "mybot"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(PARENT_CHART)
    (parent / "values.yaml").write_text(PARENT_VALUES)
    (parent / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    # What `helm dependency build` would do for a file:// dependency, without touching any repository.
    shutil.copytree(CHART, parent / "charts" / "sidecar")
    return parent


def _render(parent: Path, kube: str) -> list[dict[str, Any]]:
    return render(kube_version=kube, release="prod", chart=parent)


@pytest.mark.parametrize("kube,native", [("1.28.0", False), ("1.31.0", True)])
def test_parent_chart_gets_the_sidecar_in_its_pod(parent_chart: Path, kube: str, native: bool,
                                                   tmp_path: Path) -> None:
    """The parent's pod carries the right sidecar variant, its volumes and annotations; it all validates."""
    docs = _render(parent_chart, kube)
    kubernetes_validate(docs, kube, tmp_path)
    for doc in filter(is_crd, docs):
        validate_crd_structure(doc)
    dep = next(d for d in maybe(docs, "Deployment") if d["metadata"]["name"] == "prod-mybot")
    spec = dep["spec"]["template"]["spec"]
    container, is_native = sidecar_container(spec)
    assert is_native is native
    assert spec["containers"][0]["name"] == ("mybot" if native else "sidecar")
    assert ("postStart" in container.get("lifecycle", {})) is not native
    assert arg_value(container, "--ops-host") == "0.0.0.0"
    cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "sidecar-config")
    cm = next(d for d in maybe(docs, "ConfigMap") if d["metadata"]["name"] == cm_name)
    cfg = yaml.safe_load(cm["data"]["sidecar.yaml"])
    assert cfg["providers"]["replicate"]["breaker"]["failure_threshold"] == 9
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert refs == {"mybot-keys"}
    meta = dep["spec"]["template"]["metadata"]
    assert len(meta["annotations"]["checksum/sidecar-config"]) == 64
    pm = one(docs, "PodMonitor")
    assert all(meta["labels"].get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
    assert not maybe(docs, "PrometheusRule"), "alerts are cluster-wide: the sidecar-monitoring chart's"
    assert not [d for d in maybe(docs, "Deployment") if d["metadata"]["name"] != "prod-mybot"]


def test_parent_checksum_follows_parent_config_values(parent_chart: Path) -> None:
    """A config change made in the parent's values rolls the parent's pods."""
    base = render(kube_version="1.31.0", release="prod", chart=parent_chart)
    changed = render(["/dev/null"], ["sidecar.config.providers.bfl.breaker.failure_threshold=2"],
                     kube_version="1.31.0", release="prod", chart=parent_chart)

    def checksum(docs: list[dict[str, Any]]) -> str:
        dep = next(d for d in maybe(docs, "Deployment") if d["metadata"]["name"] == "prod-mybot")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/sidecar-config"])

    assert checksum(base) != checksum(changed)
