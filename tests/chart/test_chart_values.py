"""The values people expect from kube-prometheus-stack and Bitnami charts, rendered by the real helm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.helm_chart import (
    ALL_BRANCHES,
    CLASSIC,
    load_all_strict,
    maybe,
    notes,
    one,
    pod_meta,
    pod_spec,
    render,
    render_text,
    sidecar_container,
)

DIGEST = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("values,kube", [(ALL_BRANCHES, "1.28.0"), (ALL_BRANCHES, "1.31.0"),
                                         (CLASSIC, "1.28.0")])
def test_no_key_is_rendered_twice(values: Path, kube: str) -> None:
    """commonLabels, an object's own labels and pod labels merge into one map: no duplicate YAML key."""
    load_all_strict(render_text([values], kube_version=kube))


def test_common_labels_on_every_object_and_the_pods() -> None:
    """commonLabels reach every object and the bot's pods; an object's own labels win over them."""
    docs = render([ALL_BRANCHES])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["cost-center"] == "ai", doc["kind"]
        assert labels["app.kubernetes.io/name"] == "sidecar"
    assert {d["metadata"]["labels"]["team"] for d in docs} == {"platform"}
    pm = one(docs, "PodMonitor")
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pod = pod_meta(docs)["labels"]
    assert pod["cost-center"] == "ai"
    assert pod["team"] == "bots", "bot.podLabels win over commonLabels on the pods"
    assert pod["egress-sidecar.io/injected"] == "true"
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert "cost-center" not in selector, "commonLabels never enter the (immutable) selector"


@pytest.mark.parametrize("sets,image", [
    ([], "ghcr.io/owner/sidecar:0.1.0"),
    (["image.tag=2.0.0"], "ghcr.io/owner/sidecar:2.0.0"),
    ([f"image.digest={DIGEST}"], f"ghcr.io/owner/sidecar@{DIGEST}"),
    (["image.tag=2.0.0", f"image.digest={DIGEST}"], f"ghcr.io/owner/sidecar@{DIGEST}"),
])
def test_image_by_tag_or_digest(sets: list[str], image: str) -> None:
    """The digest, when set, replaces the tag; without either the chart's appVersion is the tag."""
    container, _ = sidecar_container(pod_spec(render(sets=["bot.enabled=true", *sets])))
    assert container["image"] == image


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("kube", ["1.28.0", "1.31.0"])
def test_extra_volumes_and_mounts(kube: str) -> None:
    """extraVolumes join the pod's volumes and extraVolumeMounts the sidecar's mounts (a CA bundle)."""
    spec = pod_spec(render([ALL_BRANCHES], kube_version=kube))
    container, _ = sidecar_container(spec)
    assert {"name": "egress-ca", "configMap": {"name": "corporate-ca-bundle"}} in spec["volumes"]
    assert {"name": "egress-ca", "mountPath": "/etc/egress-ca", "readOnly": True} in container["volumeMounts"]
    assert _env(container)["SSL_CERT_FILE"]["value"] == "/etc/egress-ca/ca-bundle.crt"
    bot = next(c for c in spec["containers"] if c["name"] == "bot")
    assert all(m["name"] != "egress-ca" for m in bot["volumeMounts"])


def test_state_directory_for_the_job_ledger() -> None:
    """SIDECAR_STATE_DIR names the mount of an emptyDir (size-limited when asked), writable by the sidecar."""
    for values, path, volume in [
        (ALL_BRANCHES, "/var/lib/egress", {"name": "sidecar-state", "emptyDir": {"sizeLimit": "256Mi"}}),
        (CLASSIC, "/var/lib/sidecar", {"name": "sidecar-state", "emptyDir": {}}),
    ]:
        spec = pod_spec(render([values]))
        container, _ = sidecar_container(spec)
        assert _env(container)["SIDECAR_STATE_DIR"] == {"name": "SIDECAR_STATE_DIR", "value": path}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "sidecar-state")
        assert mount == {"name": "sidecar-state", "mountPath": path}
        assert volume in spec["volumes"]


def test_redis_url_from_an_existing_secret() -> None:
    """ledger.redis.existingSecret gives SIDECAR_REDIS_URL from that Secret's key (required, not optional)."""
    container, _ = sidecar_container(pod_spec(render([ALL_BRANCHES])))
    assert _env(container)["SIDECAR_REDIS_URL"] == {
        "name": "SIDECAR_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "bot-redis", "key": "url"}}}
    container, _ = sidecar_container(pod_spec(render([CLASSIC])))
    assert "SIDECAR_REDIS_URL" not in _env(container)


def test_config_may_carry_a_ledger_section_referencing_the_redis_url() -> None:
    """`config.ledger` passes the schema and reaches the ConfigMap with ${SIDECAR_REDIS_URL} unexpanded."""
    docs = render(sets=["config.ledger.backend=redis", "config.ledger.url=${SIDECAR_REDIS_URL}"])
    cm = next(d for d in maybe(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
    assert "  url: ${SIDECAR_REDIS_URL}\n" in cm["data"]["sidecar.yaml"]


def test_notes_warn_while_the_image_is_the_placeholder() -> None:
    """NOTES.txt warns about the placeholder image, and tells how to check the sidecar on its ops port."""
    text = notes(sets=["bot.enabled=true", "sidecar.opsPort=9911"])
    assert text.startswith("WARNING: image.repository is still the placeholder ghcr.io/owner/sidecar.")
    assert "kubectl -n bots port-forward deployment/r-sidecar-bot 9911:9911" in text
    assert "curl -s http://127.0.0.1:9911/health/detailed" in text
    assert "curl -s http://127.0.0.1:9911/metrics" in text
    assert "sidecar-monitoring chart once per" in text
    text = notes(values=[ALL_BRANCHES])
    assert "placeholder" not in text
    assert "port-forward deployment/ci-bot-bot 9901:9901" in text


def test_notes_without_the_bot_point_at_the_pods_of_the_release() -> None:
    """Without the example bot, the notes find the pods by the sidecar's pod label."""
    text = notes(sets=["image.repository=registry.example.com/sidecar"])
    assert "WARNING: image.repository" not in text
    assert "kubectl -n bots get pods -l egress-sidecar.io/instance=r" in text
    assert "port-forward pod/<one of those pods> 9901:9901" in text
