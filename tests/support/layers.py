"""The import layering of the ``sidecar`` package, read from the source with ``ast`` (nothing runs).

Every ``import`` counts, wherever it is: at the top, inside a function, or under ``TYPE_CHECKING``
(a type-only import is still a dependency of the design). A module belongs to a *node*: its
subpackage (``config``, ``policy``, ``upstream``, ``fleet``, ``limits``, ``state``, ``providers``,
``ops``, ``web``), or its own name for the modules at the package root (``errors``, ``headers``,
``logs``, ``__main__``, and ``sidecar`` for the package's ``__init__``).

The rules, as ``violations`` checks them:

- ``policy`` is pure: it imports only ``policy``, ``config`` and the standard library, and not
  ``asyncio``, ``socket``, ``ssl``, ``selectors`` or ``time`` (no I/O, no clock of its own), so
  never aiohttp or prometheus_client either;
- ``config`` imports nothing else of the sidecar;
- the layers below the providers (``upstream``, ``fleet``, ``limits``, ``state``) never import
  ``providers``, ``ops``, ``web`` or ``__main__``;
- the shared root modules (``errors``, ``headers``, ``logs``, ``sidecar``) import no layer;
- ``limits`` (the limiter's seam, the local limiter and the fallback) never imports ``fleet``: the
  fleet's Redis backend implements that seam, and the request path wires the two together;

and ``cycles`` finds every cycle in the graph of nodes.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LAYERS", "Module", "cycles", "graph", "node_of", "parse_imports", "scan", "violations"]

PACKAGE = "sidecar"
LAYERS = ("config", "policy", "upstream", "fleet", "limits", "state", "providers", "ops", "web")
SHARED = frozenset({"sidecar", "errors", "headers", "logs"})
POLICY_MAY_USE = frozenset({"policy", "config"})
POLICY_FORBIDDEN_STDLIB = frozenset({"asyncio", "socket", "ssl", "selectors", "time"})
BELOW_PROVIDERS = frozenset({"upstream", "fleet", "limits", "state"})
ABOVE_THEM = frozenset({"providers", "ops", "web", "__main__"})


@dataclass(frozen=True, slots=True)
class Module:
    name: str  # dotted, e.g. sidecar.policy.breaker
    imports: frozenset[str]  # absolute dotted names: sidecar modules, or top-level external names


def parse_imports(name: str, source: str, *, is_package: bool, known: Iterable[str] = ()) -> frozenset[str]:
    """The modules ``name`` imports. ``from m import x`` counts as ``m.x`` when that is a ``known``
    module (``from . import schema``), else as ``m``; external modules count by top-level name."""
    known = frozenset(known)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            found.update(_absolute(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.module, node.level)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else _absolute(base))
    return frozenset(found)


def _resolve(package: str, module: str | None, level: int) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"relative import beyond the top of {package!r}")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _absolute(name: str) -> str:
    """Sidecar modules keep their full name; anything else is known by its top-level name."""
    return name if name == PACKAGE or name.startswith(PACKAGE + ".") else name.partition(".")[0]


def scan(root: Path) -> dict[str, Module]:
    """Every module under ``root`` (the ``sidecar`` package directory), with what it imports."""
    files = {_module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    known = frozenset(files)
    return {
        name: Module(name, parse_imports(name, path.read_text(encoding="utf-8"),
                                         is_package=path.name == "__init__.py", known=known))
        for name, path in files.items()
    }


def _module_name(root: Path, path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node_of(module: str) -> str | None:
    """The module's node (see the module docstring); None for a module outside the package."""
    if module == PACKAGE:
        return PACKAGE
    if not module.startswith(PACKAGE + "."):
        return None
    return module.split(".")[1]


def violations(modules: Mapping[str, Module]) -> list[str]:
    """One line per import that breaks a layer rule, naming the module and what it imports."""
    found: list[str] = []
    for mod in modules.values():
        here = node_of(mod.name)
        for imported in sorted(mod.imports):
            reason = _rule_broken(here, imported)
            if reason is not None:
                found.append(f"{mod.name} imports {imported}: {reason}")
    return found


def _rule_broken(here: str | None, imported: str) -> str | None:
    there = node_of(imported)
    if there is None:  # outside the package: only policy restricts those
        if here == "policy" and (imported in POLICY_FORBIDDEN_STDLIB
                                 or imported not in sys.stdlib_module_names):
            return "policy is pure (standard library only, no I/O or clock)"
        return None
    if here == there:
        return None
    if here == "policy" and there not in POLICY_MAY_USE:
        return "policy may import only policy and config"
    if here == "config":
        return "config imports nothing else of the sidecar"
    if here in BELOW_PROVIDERS and there in ABOVE_THEM:
        return f"{here} may not depend on {there}"
    if here == "limits" and there == "fleet":
        return "limits is the seam the fleet implements; it may not depend on fleet"
    if here in SHARED and there not in SHARED:
        return f"the shared root module {here} may not depend on the {there} layer"
    return None


def graph(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    """Node -> the other nodes it imports from."""
    edges: dict[str, set[str]] = {}
    for mod in modules.values():
        here = node_of(mod.name)
        assert here is not None
        targets = edges.setdefault(here, set())
        for imported in mod.imports:
            there = node_of(imported)
            if there is not None and there != here:
                targets.add(there)
    return edges


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)
