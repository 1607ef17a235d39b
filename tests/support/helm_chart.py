"""Helpers for the chart and deployment tests: the real helm, kubernetes-validate, renders.

Nothing here skips: a missing tool is a failure (``make test`` fetches helm and promtool first).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sidecar"
CI_VALUES = CHART / "ci"
ALL_BRANCHES = CI_VALUES / "all-branches-values.yaml"
CLASSIC = CI_VALUES / "classic-values.yaml"
MONITORING = ROOT / "charts" / "sidecar-monitoring"
MON_ALL = MONITORING / "ci" / "all-branches-values.yaml"
MON_MINIMAL = MONITORING / "ci" / "minimal-values.yaml"
HELM = ROOT / ".tools" / "bin" / "helm"
CRD_GROUPS = ("monitoring.coreos.com",)
SECRET_ENV = (
    "REPLICATE_API_TOKEN", "SUPABASE_URL", "SUPABASE_SERVICE_KEY", "ELEVENLABS_API_KEY",
    "SYNC_LABS_API_KEY", "BFL_API_KEY", "HF_TOKEN", "SIDECAR_ADMIN_TOKEN",
)


def helm_bin() -> str:
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: run scripts/fetch-tools.sh (make test does)", pytrace=False)
    return str(HELM)


def kubernetes_validate_bin() -> str:
    exe = Path(sys.executable).with_name("kubernetes-validate")
    if exe.is_file():
        return str(exe)
    found = shutil.which("kubernetes-validate")
    if not found:
        pytest.fail("kubernetes-validate is not installed (pip install -e '.[test]')", pytrace=False)
    return found


def run(cmd: Sequence[str], *, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a program; on an unexpected exit status fail with its output."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return proc


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([helm_bin(), *args], check=check)


def template_args(values: Iterable[Path | str] = (), sets: Iterable[str] = (),
                  kube_version: str = "1.31.0", release: str = "r", chart: Path = CHART) -> list[str]:
    args = ["template", release, str(chart), "--namespace", "bots", "--kube-version", kube_version]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    return args


@functools.lru_cache(maxsize=64)
def _render_text(values: tuple[str, ...], sets: tuple[str, ...], kube_version: str, release: str,
                 chart: str) -> str:
    return helm(*template_args(values, sets, kube_version, release, Path(chart))).stdout


def render_text(values: Iterable[Path | str] = (), sets: Iterable[str] = (), kube_version: str = "1.31.0",
                release: str = "r", chart: Path = CHART) -> str:
    """`helm template` output (cached: the same render is reused across tests)."""
    return _render_text(tuple(map(str, values)), tuple(sets), kube_version, release, str(chart))


def render(values: Iterable[Path | str] = (), sets: Iterable[str] = (), kube_version: str = "1.31.0",
           release: str = "r", chart: Path = CHART) -> list[dict[str, Any]]:
    """The rendered manifests as dicts."""
    text = render_text(values, sets, kube_version, release, chart)
    return [d for d in yaml.safe_load_all(text) if d]


def render_fails(sets: Iterable[str] = (), values: Iterable[Path | str] = (), chart: Path = CHART) -> str:
    """Render that must fail; returns helm's error output."""
    proc = helm(*template_args(values, sets, chart=chart), check=False)
    assert proc.returncode != 0, f"helm template accepted {list(sets)}:\n{proc.stdout[:2000]}"
    return proc.stderr


def notes(chart: Path = CHART, sets: Iterable[str] = (), values: Iterable[Path | str] = ()) -> str:
    """The release notes (NOTES.txt) as `helm install --dry-run=client` prints them."""
    args = ["install", "r", str(chart), "--namespace", "bots", "--dry-run=client"]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args).stdout
    assert "\nNOTES:\n" in out, out[-2000:]
    return out.split("\nNOTES:\n", 1)[1]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with a key twice (yaml.safe_load keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise AssertionError(f"duplicate keys {sorted(map(str, dupes))} at line {node.start_mark.line + 1}")
    return dict(loader.construct_mapping(node, deep=deep))


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_all_strict(text: str) -> list[dict[str, Any]]:
    """Rendered manifests, refusing duplicate keys (a label rendered twice, say)."""
    return [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d]


def is_crd(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).split("/")[0] in CRD_GROUPS


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def maybe(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_spec(docs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    return one(docs, kind)["spec"]["template"]["spec"]


def pod_meta(docs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, Any]:
    return one(docs, kind)["spec"]["template"]["metadata"]


def sidecar_container(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The sidecar container and whether it runs as a native sidecar (in initContainers)."""
    native = [c for c in spec.get("initContainers") or [] if c["name"] == "sidecar"]
    classic = [c for c in spec.get("containers") or [] if c["name"] == "sidecar"]
    assert len(native) + len(classic) == 1, "the sidecar must appear exactly once in the pod"
    return (native[0], True) if native else (classic[0], False)


def arg_value(container: dict[str, Any], flag: str) -> str:
    args = container["args"]
    assert flag in args, f"{flag} missing from {args}"
    return str(args[args.index(flag) + 1])


def kubernetes_validate(docs: list[dict[str, Any]], kube_version: str, tmp_path: Path) -> None:
    """Validate core (non-CRD) manifests with kubernetes-validate --strict for that version."""
    core = [d for d in docs if not is_crd(d)]
    assert core, "nothing to validate"
    path = tmp_path / f"manifests-{kube_version}.yaml"
    path.write_text(yaml.safe_dump_all(core))
    proc = run([kubernetes_validate_bin(), "--strict", "--kubernetes-version", kube_version, str(path)],
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "ERROR" not in out, out
    passed = out.count("passed for resource")
    assert passed == len(core), f"{passed} of {len(core)} resources reported as passed:\n{out}"


def validate_crd_structure(doc: dict[str, Any]) -> None:
    """kubernetes-validate has no schemas for monitoring.coreos.com: check the shape ourselves."""
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    meta = doc["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}, meta
    assert isinstance(meta["name"], str) and 0 < len(meta["name"]) <= 63
    assert all(isinstance(v, str) for v in meta.get("labels", {}).values())
    spec = doc["spec"]
    if doc["kind"] == "PodMonitor":
        assert set(spec) <= {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel",
                             "podTargetLabels", "sampleLimit"}, spec
        assert spec["selector"]["matchLabels"], "an empty selector would match every pod"
        assert all(isinstance(v, str) for v in spec["selector"]["matchLabels"].values())
        assert spec["podMetricsEndpoints"]
        for ep in spec["podMetricsEndpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
                               "metricRelabelings", "honorLabels"}, ep
            assert isinstance(ep["port"], str) and ep["path"].startswith("/")
    elif doc["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations",
                                     "keep_firing_for"}, rule
                assert ("alert" in rule) != ("record" in rule)
                assert isinstance(rule["expr"], str) and rule["expr"].strip()
                assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
                assert all(isinstance(v, str) for v in rule.get("annotations", {}).values())
    else:
        raise AssertionError(f"unexpected CRD kind {doc['kind']}")
