"""What publishing needs outside the chart: the distribution's own name, its licence, the image's install."""

from __future__ import annotations

import configparser
import re

from tests.support.helm_chart import CHART

ROOT = CHART.parents[1]


def _metadata() -> configparser.SectionProxy:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["metadata"]


def test_distribution_has_a_name_of_its_own() -> None:
    """The PyPI name is not `sidecar` (another project's); the import package and script stay `sidecar`."""
    meta = _metadata()
    assert meta["name"] == "egress-sidecar"
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["options.entry_points"]["console_scripts"].strip() == "sidecar = sidecar.__main__:main"
    assert cfg["options.packages.find"]["include"].strip() == "sidecar, sidecar.*"


def test_license_file_matches_the_metadata() -> None:
    """setup.cfg says MIT; LICENSE at the root is the MIT text for the sidecar authors."""
    assert _metadata()["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} the sidecar authors$", text, re.M)
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text


def test_image_installs_the_distribution_by_its_name() -> None:
    """The image's `pip install --no-index` names setup.cfg's distribution (a wrong name finds no wheel)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    installs = [ln for ln in text.splitlines() if "pip install" in ln and "--no-index" in ln]
    assert len(installs) == 1, installs
    words = installs[0].split("&&")[0].split()
    assert words[-1] == _metadata()["name"], installs[0]
