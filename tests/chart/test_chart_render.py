"""The chart rendered by the real helm, validated by kubernetes-validate, and what matters in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm_chart import (
    ALL_BRANCHES,
    CHART,
    CLASSIC,
    SECRET_ENV,
    arg_value,
    helm,
    is_crd,
    kubernetes_validate,
    maybe,
    one,
    pod_meta,
    pod_spec,
    render,
    sidecar_container,
    validate_crd_structure,
)

CASES = [(ALL_BRANCHES, "1.28.0"), (ALL_BRANCHES, "1.31.0"), (CLASSIC, "1.28.0"), (CLASSIC, "1.31.0")]


def _ids(case: tuple[Path, str]) -> str:
    return f"{case[0].stem}-{case[1]}"


@pytest.mark.parametrize("values", [[], [ALL_BRANCHES], [CLASSIC]],
                         ids=["defaults", "all-branches", "classic"])
def test_helm_lint_passes_strictly(values: list[Path]) -> None:
    """`helm lint --strict` accepts the chart with its defaults and with each CI values file."""
    args = ["lint", "--strict", str(CHART)]
    for v in values:
        args += ["-f", str(v)]
    out = helm(*args).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_render_validates_for_kubernetes_version(case: tuple[Path, str], tmp_path: Path) -> None:
    """Core manifests pass kubernetes-validate --strict for the target version; CRDs pass a shape check."""
    values, kube = case
    docs = render([values], kube_version=kube)
    kubernetes_validate(docs, kube, tmp_path)
    for doc in filter(is_crd, docs):
        validate_crd_structure(doc)


def test_all_branches_renders_every_template() -> None:
    """The all-branches values produce every kind of resource the chart can make."""
    kinds = sorted(d["kind"] for d in render([ALL_BRANCHES]))
    assert kinds == ["ConfigMap", "Deployment", "PodMonitor"]
    assert sorted(t.name for t in (CHART / "templates").glob("*.yaml")) == [
        "configmap.yaml", "deployment.yaml", "podmonitor.yaml"]


@pytest.mark.parametrize("kube,native", [
    ("1.28.0", False), ("1.28.9-gke.1000", False), ("1.29.0", True), ("1.29.6-eks-a737599", True),
    ("1.31.0", True), ("1.30.4-gke.1348000", True),
])
def test_native_sidecar_from_1_29_classic_before(kube: str, native: bool) -> None:
    """mode auto: native sidecar on >= 1.29 (vendor suffixes too), an ordinary container before."""
    spec = pod_spec(render([ALL_BRANCHES], kube_version=kube))
    container, is_native = sidecar_container(spec)
    assert is_native is native
    if native:
        assert container["restartPolicy"] == "Always"
        assert "lifecycle" not in container
    else:
        assert "restartPolicy" not in container
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
        assert "initContainers" not in spec


@pytest.mark.parametrize("mode,kube,native", [("native", "1.28.0", True), ("classic", "1.31.0", False)])
def test_mode_forces_a_variant(mode: str, kube: str, native: bool) -> None:
    """sidecar.mode native/classic override the version check."""
    spec = pod_spec(render([ALL_BRANCHES], [f"sidecar.mode={mode}"], kube_version=kube))
    assert sidecar_container(spec)[1] is native


@pytest.mark.parametrize("kube", ["1.28.0", "1.31.0"])
def test_probes_on_ops_port_and_proxy_on_loopback(kube: str) -> None:
    """Probes hit /health/* on the ops port bound to 0.0.0.0; the proxy stays on 127.0.0.1:8080."""
    container, _ = sidecar_container(pod_spec(render([ALL_BRANCHES], kube_version=kube)))
    assert arg_value(container, "--ops-host") == "0.0.0.0"
    assert arg_value(container, "--ops-port") == "9901"
    assert arg_value(container, "--host") == "127.0.0.1"
    assert arg_value(container, "--port") == "8080"
    assert container["ports"] == [{"name": "sidecar-ops", "containerPort": 9901, "protocol": "TCP"}]
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes == {
        "startupProbe": {"path": "/health/live", "port": "sidecar-ops"},
        "livenessProbe": {"path": "/health/live", "port": "sidecar-ops"},
        "readinessProbe": {"path": "/health/ready", "port": "sidecar-ops"},
    }


def test_config_mounted_and_passed() -> None:
    """--config points into the mounted ConfigMap, which holds sidecar.yaml."""
    docs = render([ALL_BRANCHES])
    spec = pod_spec(docs)
    container, _ = sidecar_container(spec)
    path = Path(arg_value(container, "--config"))
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = next(d for d in maybe(docs, "ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"])
    assert path.name in cm["data"]
    yaml.safe_load(cm["data"][path.name])


def test_secret_refs_per_key_are_all_optional() -> None:
    """With an existing Secret every API key is an optional secretKeyRef of that Secret."""
    docs = render(sets=["secrets.existingSecret=keys", "bot.enabled=true"])
    container, _ = sidecar_container(pod_spec(docs))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(refs) == set(SECRET_ENV)
    assert all(r == {"name": "keys", "key": n, "optional": True} for n, r in refs.items())
    assert "envFrom" not in container


def test_secret_envfrom_and_renamed_key() -> None:
    """envFrom loads the whole Secret (optional); a key map entry renames the Secret's key."""
    container, _ = sidecar_container(pod_spec(render([ALL_BRANCHES])))
    assert container["envFrom"] == [{"secretRef": {"name": "bot-api-keys", "optional": True}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "bot-api-keys", "key": "huggingface-token", "optional": True}
    assert env["CB_RECOVERY_TIMEOUT"] == {"name": "CB_RECOVERY_TIMEOUT", "value": "15000"}


def test_no_secret_no_secret_refs() -> None:
    """Without secrets.existingSecret the sidecar references no Secret at all."""
    container, _ = sidecar_container(pod_spec(render(sets=["bot.enabled=true"])))
    assert "envFrom" not in container
    assert not [e for e in container.get("env", []) if "valueFrom" in e]


def _checksum(sets: list[str]) -> str:
    return str(pod_meta(render(sets=["bot.enabled=true", *sets]))["annotations"]["checksum/sidecar-config"])


def test_checksum_annotation_follows_the_config() -> None:
    """The pod's config checksum changes with config values and only with them."""
    base = _checksum([])
    assert base == _checksum([])
    assert len(base) == 64
    assert _checksum(["config.providers.replicate.breaker.failure_threshold=9"]) != base
    assert _checksum(["config.providers.telegram.upstream=https://api.telegram.org"]) != base
    assert _checksum(["bot.replicas=3", "sidecar.opsPort=9911"]) == base


def _config(sets: list[str], values: list[Path] | None = None) -> dict[str, Any]:
    cm = next(d for d in render(values or [], sets) if d["metadata"]["name"].endswith("-config"))
    return dict(yaml.safe_load(cm["data"]["sidecar.yaml"]))


def test_config_values_deep_merge_over_the_default() -> None:
    """Overriding one threshold keeps every other default; a new provider is added; false/0 apply."""
    default = yaml.safe_load((CHART / "files" / "sidecar.yaml").read_text())
    cfg = _config([
        "config.providers.replicate.breaker.failure_threshold=9",
        "config.providers.telegram.upstream=https://api.telegram.org",
        "config.defaults.retry.jitter=false",
        "config.providers.supabase.critical=false",
    ])
    assert cfg["providers"]["replicate"]["breaker"]["failure_threshold"] == 9
    def others(breaker: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in breaker.items() if k != "failure_threshold"}

    replicate = default["providers"]["replicate"]["breaker"]
    assert others(cfg["providers"]["replicate"]["breaker"]) == others(replicate)
    for name, block in default["providers"].items():
        if name not in ("replicate", "supabase"):
            assert cfg["providers"][name] == block, name
    assert cfg["providers"]["telegram"] == {"upstream": "https://api.telegram.org"}
    assert cfg["defaults"]["retry"]["jitter"] is False
    assert cfg["providers"]["supabase"]["critical"] is False


def test_config_replaces_default_when_asked() -> None:
    """configReplacesDefault: the ConfigMap holds exactly `config`."""
    cfg = _config([], [CLASSIC])
    assert set(cfg["providers"]) == {"replicate"}


def test_empty_config_renders_the_default_unchanged() -> None:
    """With no `config` values the ConfigMap is the chart's default file, value for value."""
    assert _config([]) == yaml.safe_load((CHART / "files" / "sidecar.yaml").read_text())


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_restricted_security_context(case: tuple[Path, str]) -> None:
    """The sidecar runs non-root (numeric uid), read-only root with /tmp on an emptyDir, no privileges."""
    values, kube = case
    spec = pod_spec(render([values], kube_version=kube))
    container, _ = sidecar_container(spec)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert container["resources"]["limits"]["memory"]


def test_pod_monitor_when_enabled() -> None:
    """PodMonitor scrapes the ops port's /metrics of the pods it selects; no scrape annotations then."""
    docs = render([ALL_BRANCHES])
    pm = one(docs, "PodMonitor")
    meta = pod_meta(docs)
    assert all(meta["labels"].get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["bots"]}
    assert pm["spec"]["podMetricsEndpoints"] == [{
        "port": "sidecar-ops", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s",
        "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
        "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "process_max_fds", "action": "drop"}],
    }]
    # SidecarDown finds sidecar targets by this target label, or by "sidecar" in the job label.
    assert pm["spec"]["podTargetLabels"] == ["egress-sidecar.io/injected"]
    assert meta["labels"]["egress-sidecar.io/injected"] == "true"
    assert "sidecar" in pm["metadata"]["name"]
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not [k for k in meta["annotations"] if k.startswith("prometheus.io/")]


def test_scrape_annotations_without_pod_monitor() -> None:
    """Without a PodMonitor the pod asks to be scraped on 9901 /metrics."""
    docs = render([CLASSIC])
    assert not maybe(docs, "PodMonitor")
    ann = pod_meta(docs)["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == "9901"
    assert ann["prometheus.io/path"] == "/metrics"


def test_bot_deployment_reaches_the_sidecar_on_loopback() -> None:
    """The example bot gets the sidecar URL and its own /tmp; its pod is restricted too."""
    spec = pod_spec(render([ALL_BRANCHES]))
    bot = next(c for c in spec["containers"] if c["name"] == "bot")
    assert {"name": "EGRESS_URL", "value": "http://127.0.0.1:8080"} in bot["env"]
    assert bot["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["terminationGracePeriodSeconds"] == 45
    assert not maybe(render(), "Deployment"), "bot.enabled defaults to false"
