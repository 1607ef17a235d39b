"""The package keeps its layers: pure policy, self-contained config, no upward imports, no cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

import sidecar

from .support.layers import LAYERS, cycles, graph, parse_imports, scan, violations

SIDECAR = Path(sidecar.__file__).resolve().parent


def test_every_module_keeps_the_layer_rules() -> None:
    """No module of sidecar/ imports across a layer rule (the rules are in tests/support/layers.py)."""
    assert violations(scan(SIDECAR)) == []


def test_the_layers_import_each_other_without_cycles() -> None:
    """The graph of subpackages and root modules has no cycle."""
    assert cycles(graph(scan(SIDECAR))) == []


def test_the_scan_sees_the_real_imports() -> None:
    """The checker is not vacuous: it finds every layer and the imports we know of."""
    modules = scan(SIDECAR)
    assert {name.split(".")[1] for name in modules if name.count(".") >= 2} == set(LAYERS)
    assert "sidecar.config" in modules["sidecar.policy.breaker"].imports
    assert "sidecar.policy.window" in modules["sidecar.policy.breaker"].imports
    assert "aiohttp" in modules["sidecar.upstream.attempts"].imports
    assert "sidecar.config.schema" in modules["sidecar.config.load"].imports  # from . import schema
    edges = graph(modules)
    assert {"policy", "config", "upstream"} <= edges["providers"]


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A throwaway ``sidecar`` tree: every directory gets an __init__.py."""
    root = tmp_path / "sidecar"
    for rel, source in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
        path.write_text(source)
    return root


@pytest.mark.parametrize(("source", "culprit"), [
    ("import aiohttp\n", "aiohttp"),
    ("from prometheus_client import Counter\n", "prometheus_client"),
    ("import asyncio\n", "asyncio"),
    ("def f():\n    import socket\n", "socket"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ssl\n", "ssl"),
    ("import time\n", "time"),
    ("from ..logs import get_logger\n", "sidecar.logs"),
    ("from ..ops.metrics import ProviderMetrics\n", "sidecar.ops.metrics"),
])
def test_a_forbidden_import_in_policy_is_reported(tmp_path: Path, source: str, culprit: str) -> None:
    """A policy module importing I/O, a clock, metrics or a non-policy layer is named with the import."""
    good = "import math\nfrom ..config import x\nfrom .bad import y\n"
    root = _package(tmp_path, {"policy/bad.py": source, "policy/good.py": good, "logs.py": "",
                               "ops/metrics.py": ""})
    found = violations(scan(root))
    assert len(found) == 1 and found[0].startswith(f"sidecar.policy.bad imports {culprit}:")


@pytest.mark.parametrize(("path", "source"), [
    ("config/load.py", "from ..policy import breaker\n"),
    ("config/load.py", "from ..errors import SidecarError\n"),
    ("upstream/attempts.py", "from ..providers.registry import ProviderRegistry\n"),
    ("upstream/attempts.py", "from sidecar.ops import metrics\n"),
    ("state/ledger.py", "from ..web.app import create_app\n"),
    ("errors.py", "from .web.app import create_app\n"),
    ("limits/fallback.py", "from ..fleet.limiter import RedisBackend\n"),
])
def test_a_forbidden_import_between_layers_is_reported(tmp_path: Path, path: str, source: str) -> None:
    """config importing another layer, upstream importing above it, a root module importing a layer."""
    others = {"policy/breaker.py": "", "errors.py": "", "providers/registry.py": "",
              "ops/metrics.py": "", "web/app.py": "", "fleet/limiter.py": ""}
    root = _package(tmp_path, {**others, path: source})
    found = violations(scan(root))
    assert len(found) == 1 and found[0].startswith(f"sidecar.{path[:-3].replace('/', '.')} imports")


def test_an_import_cycle_between_subpackages_is_found(tmp_path: Path) -> None:
    """providers -> ops -> web -> providers is one cycle, even with one edge a lazy import."""
    root = _package(tmp_path, {
        "providers/registry.py": "def start():\n    from ..ops import probes\n",
        "ops/probes.py": "from ..web import app\n",
        "web/app.py": "from ..providers.registry import start\n",
        "policy/breaker.py": "from ..config import x\n",
    })
    assert cycles(graph(scan(root))) == [["ops", "providers", "web"]]


def test_relative_imports_resolve_from_modules_and_packages() -> None:
    """``from ..x import y`` resolves against the module's package, or the package itself in __init__."""
    known = {"sidecar.config.schema", "sidecar.config"}
    assert parse_imports("sidecar.config.load", "from . import schema\n", is_package=False,
                         known=known) == {"sidecar.config.schema"}
    assert parse_imports("sidecar.config", "from .model import X\n", is_package=True,
                         known=known) == {"sidecar.config.model"}
    assert parse_imports("sidecar.ops.health", "from .. import __version__\nimport aiohttp.web\n",
                         is_package=False, known=known) == {"sidecar", "aiohttp"}
