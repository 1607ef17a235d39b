"""What publishing the charts needs: Artifact Hub metadata, and READMEs generated from values.yaml."""

from __future__ import annotations

import configparser
import functools
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.support.helm_chart import CHART, MONITORING, ROOT

CHARTS = [CHART, MONITORING]


@functools.cache
def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "scripts" / "chart_readme.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_readme_is_the_generated_one(chart: Path) -> None:
    """The checked-in README.md is what scripts/chart_readme.py makes of Chart.yaml and values.yaml now."""
    assert (chart / "README.md").read_text() == _script().render(chart), (
        f"{chart.name}/README.md is stale: run python scripts/chart_readme.py")


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_readme_documents_every_value(chart: Path) -> None:
    """Every leaf of values.yaml is in the table, by its own row or by a documented map above it."""
    _, rows = _script().rows(chart / "values.yaml")
    keys = [r.key for r in rows]
    assert len(keys) == len(set(keys))
    text = (chart / "README.md").read_text()
    assert all(f"| `{k}` |" in text for k in keys)


def _values(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return path


def test_readme_rows_from_comments(tmp_path: Path) -> None:
    """`# --` starts a description, `#` lines continue it; a documented map's keys fold into its default;
    list items and plain comments are no keys; type and default come from the parsed value."""
    path = _values(tmp_path, """\
# The header.
# Second line.

# -- The name.
name: ""
# A plain note, not a description.
image:
  # -- Where the image is,
  # in two lines.
  repository: ghcr.io/x/y
  # -- Pull policy.
  pullPolicy: IfNotPresent
# -- Probe settings.
probes:
  startup: {periodSeconds: 1}
  liveness:
    periodSeconds: 10
# -- Matchers | with a pipe.
selectors:
  - job="a"
  - job="b"
# -- After the list.
ratio: 0.5
""")
    header, rows = _script().rows(path)
    assert header == ["The header.", "Second line."]
    table = {r.key: (r.type, r.default, r.description) for r in rows}
    assert table == {
        "name": ("string", '""', "The name."),
        "image.repository": ("string", '"ghcr.io/x/y"', "Where the image is, in two lines."),
        "image.pullPolicy": ("string", '"IfNotPresent"', "Pull policy."),
        "probes": ("object", '{"startup": {"periodSeconds": 1}, "liveness": {"periodSeconds": 10}}',
                   "Probe settings."),
        "selectors": ("list", '["job=\\"a\\"", "job=\\"b\\""]', "Matchers | with a pipe."),
        "ratio": ("float", "0.5", "After the list."),
    }


def test_readme_refuses_an_undocumented_value(tmp_path: Path) -> None:
    """A value without a description of its own or above it makes the generator fail, naming it."""
    path = _values(tmp_path, "# -- Documented.\na: 1\nb:\n  c: 2\n")
    with pytest.raises(ValueError, match=r"no `# --` description for b\.c"):
        _script().rows(path)


def test_readme_cells_escape_pipes_and_angle_brackets() -> None:
    """Pipes never split a cell; <placeholders> outside code spans are not taken for HTML."""
    cell = _script()._cell
    assert cell("a|b <release> `x|<y>`") == "a\\|b &lt;release&gt; `x\\|<y>`"
    assert cell("<x>|y", code=True) == "<x>\\|y"


def _sidecar_version() -> str:
    m = re.search(r'^__version__ = "([^"]+)"$', (ROOT / "sidecar" / "__init__.py").read_text(), re.M)
    assert m
    return m.group(1)


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_chart_metadata_for_artifact_hub(chart: Path) -> None:
    """home, sources, maintainers, keywords; Artifact Hub's license (setup.cfg's), category, links, changes"""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["appVersion"] == _sidecar_version()
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", meta["version"])
    assert meta["home"].startswith("https://") and meta["sources"]
    assert all(s.startswith("https://") for s in meta["sources"])
    assert meta["maintainers"] and all(m["name"] for m in meta["maintainers"])
    assert len(meta["keywords"]) >= 3
    ann = meta["annotations"]
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert ann["artifacthub.io/license"] == cfg["metadata"]["license"] == "MIT"
    assert ann["artifacthub.io/category"] in {"networking", "monitoring-logging"}
    links = yaml.safe_load(ann["artifacthub.io/links"])
    assert links
    assert all(set(link) == {"name", "url"} and link["url"].startswith("https://") for link in links)
    changes = yaml.safe_load(ann["artifacthub.io/changes"])
    assert changes and all(c["kind"] in {"added", "changed", "deprecated", "removed", "fixed", "security"}
                           and c["description"] for c in changes)


def test_sidecar_chart_lists_its_image() -> None:
    """The image Artifact Hub lists is the values' repository at the chart's appVersion."""
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    images = yaml.safe_load(meta["annotations"]["artifacthub.io/images"])
    assert images == [{"name": "sidecar", "image": f"{values['image']['repository']}:{meta['appVersion']}"}]


def test_library_example_depends_on_the_current_chart_version() -> None:
    """The parent chart of the library test names this chart's version (helm checks the dependency)."""
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    text = (ROOT / "tests" / "chart" / "test_chart_library.py").read_text()
    assert f"    version: {meta['version']}\n" in text


@pytest.mark.parametrize("chart", CHARTS, ids=lambda c: c.name)
def test_deploying_page_has_a_row_for_every_value(chart: Path) -> None:
    """docs/deploying.md's values tables name every documented key (the alerts by name and setting)."""
    page = (ROOT / "docs" / "deploying.md").read_text()
    _, rows = _script().rows(chart / "values.yaml")
    missing = []
    for row in rows:
        parts = row.key.split(".")
        if parts[:2] == ["prometheusRule", "alerts"]:
            alert, setting = parts[2], parts[3]
            line = next((ln for ln in page.splitlines() if ln.startswith(f"| `{alert}` |")), "")
            if setting not in ("enabled", "for", "severity") and f"`{setting}: " not in line:
                missing.append(row.key)
            if not line:
                missing.append(row.key)
        elif f"| `{row.key}` |" not in page:
            missing.append(row.key)
    assert not missing, f"docs/deploying.md has no row for {missing}"
