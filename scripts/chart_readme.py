"""Write each chart's README.md from its Chart.yaml and the comments of its values.yaml.

A key documented with a `# --` comment right above it gets a row (key, type, default, description);
the `#` lines that follow the `# --` one continue the description. Its default is the whole value, so
the keys under a documented map need no comment of their own. Every value must be documented, by
itself or by a map above it: an undocumented one is an error. The README's opening comes from
Chart.yaml (description, versions, links) and the comment block at the top of values.yaml.

    python scripts/chart_readme.py            # rewrite charts/*/README.md
    python scripts/chart_readme.py --check    # exit 1 when a README is stale (the tests do the same)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-/]*)\s*:(?:\s+(?P<rest>.*))?$")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    type: str
    default: str
    description: str


class UndocumentedError(ValueError):
    """Some values have no `# --` description, neither their own nor a map's above them."""


def _scan(text: str) -> tuple[list[str], dict[str, str]]:
    """The comment lines before the first key, and the `# --` descriptions by dotted key path."""
    header: list[str] = []
    described: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    block_indent: int | None = None  # inside a block list or scalar of the key at this indent
    seen_key = False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if block_indent is not None:
            # Inside the value: deeper lines, and list items at the key's own indent (YAML allows that).
            if not stripped or indent > block_indent or stripped.startswith("- "):
                continue
            block_indent = None
        if not stripped:
            pending = None
            seen_key = seen_key or bool(header)  # the header is the first comment block only
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if not seen_key and not stripped.startswith("# --"):
                header.append(body)
            if stripped.startswith("# --"):
                pending = [stripped[4:].strip()]
            elif pending is not None:
                pending.append(body)
            continue
        m = _KEY.match(line)
        if not m:
            raise ValueError(f"can't read values line: {line!r}")
        seen_key = True
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group("key")])
        if pending is not None:
            described[path] = " ".join(p for p in pending if p)
            pending = None
        rest = (m.group("rest") or "").split(" #")[0].strip()
        if not rest:
            stack.append((indent, m.group("key")))
            # A block list's items are part of this key's value, not keys of their own.
            block_indent = None if _next_is_map(lines[i + 1:]) else indent
        elif rest in ("|", "|-", ">", ">-"):
            block_indent = indent
    return header, described


def _next_is_map(following: list[str]) -> bool:
    """Whether the first content line of `following` is a mapping key (not a list item)."""
    for nxt in following:
        s = nxt.strip()
        if s and not s.startswith("#"):
            return not s.startswith("- ")
    return True


def _lookup(values: Any, path: str) -> Any:
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def _leaves(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [leaf for k, v in values.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def _cell(text: str, code: bool = False) -> str:
    """Text for a table cell: pipes escaped; outside code spans, < and > too (not HTML tags)."""
    text = text.replace("|", "\\|")
    if code:
        return text
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def rows(values_file: Path) -> tuple[list[str], list[Row]]:
    """The header comment and one row per documented key, in file order."""
    text = values_file.read_text()
    header, described = _scan(text)
    values = yaml.safe_load(text) or {}
    out = []
    for path, description in described.items():
        value = _lookup(values, path)
        if value is _MISSING:
            raise ValueError(f"{values_file}: documented key {path} not found in the values")
        default = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
        out.append(Row(path, _type(value), default, description))
    undocumented = [leaf for leaf in _leaves(values)
                    if not any(leaf == d or leaf.startswith(f"{d}.") for d in described)]
    if undocumented:
        raise UndocumentedError(f"{values_file}: no `# --` description for {', '.join(undocumented)}")
    return header, out


def render(chart: Path) -> str:
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    header, table = rows(chart / "values.yaml")
    name = meta["name"]
    links = yaml.safe_load(meta.get("annotations", {}).get("artifacthub.io/links", "") or "[]")
    out = [f"# {name}", "", " ".join(meta["description"].split()), ""]
    license_ = meta.get("annotations", {}).get("artifacthub.io/license", "see the repository")
    out += [f"**Chart version** {meta['version']} · **App version** {meta['appVersion']} · "
            f"**Kubernetes** `{meta['kubeVersion']}` · **License** {license_}", ""]
    if links or meta.get("home"):
        out += ["## Links", ""]
        if meta.get("home"):
            out.append(f"- Home: <{meta['home']}>")
        out += [f"- {link['name']}: <{link['url']}>" for link in links]
        out += [f"- Source: <{s}>" for s in meta.get("sources", [])]
        out.append("")
    out += ["## Installing", "", "From a clone of the repository:", "", "```sh",
            f"helm upgrade --install RELEASE charts/{name} --namespace NAMESPACE -f my-values.yaml",
            "```", ""]
    out += ["## Values", ""]
    if header:
        out += [" ".join(h for h in header if h), ""]
    out += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    out += [f"| `{r.key}` | {r.type} | `{_cell(r.default, code=True)}` | {_cell(r.description)} |"
            for r in table]
    out += ["", "_Generated by `scripts/chart_readme.py` from `Chart.yaml` and the comments of "
                "`values.yaml`: edit those, then run `python scripts/chart_readme.py`._", ""]
    return "\n".join(out)


def charts() -> list[Path]:
    return sorted(p.parent for p in CHARTS.glob("*/Chart.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a README is stale")
    args = parser.parse_args(argv)
    stale = []
    for chart in charts():
        readme = chart / "README.md"
        text = render(chart)
        if args.check:
            if not readme.is_file() or readme.read_text() != text:
                stale.append(str(readme.relative_to(ROOT)))
        else:
            readme.write_text(text)
            sys.stdout.write(f"wrote {readme.relative_to(ROOT)}\n")
    if stale:
        sys.stderr.write(f"stale: {', '.join(stale)}: run python scripts/chart_readme.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
