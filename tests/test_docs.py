"""The documentation keeps up with the code: config keys, error codes, and the README's links resolve."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from sidecar.config import load as config_load
from sidecar.config import schema as config_schema
from sidecar.config.dump import POLICY_KEYS
from sidecar.errors import STATUS

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "configuration.md"
ERROR_TABLES = (ROOT / "README.md", ROOT / "docs" / "behaviour.md")
ERRORS_HEADING = "Errors the sidecar answers itself"

# Each block of the configuration file: the heading of its table in docs/configuration.md, and the
# keys the loader accepts in it.
BLOCKS: dict[str, Iterable[str]] = {
    "Top level": config_load.ROOT_KEYS,
    "`ledger`": config_schema.LEDGER_FIELDS,
    "`server`": config_schema.SERVER_FIELDS,
    "`defaults` and the policy keys of a provider": POLICY_KEYS,
    "`breaker`": config_schema.BREAKER_FIELDS,
    "`retry`": config_schema.RETRY_FIELDS,
    "`timeouts`": config_schema.TIMEOUT_FIELDS,
    "Scalar policy keys": config_schema.POLICY_SCALARS,
    "`providers.<name>`": set(config_load.PROVIDER_KEYS) - set(config_schema.DOWNLOAD_FIELDS),
    "`auth`: one mapping or a list": config_schema.AUTH_FIELDS,
    "`health`": config_schema.HEALTH_FIELDS,
    "`routes`": (*config_schema.ROUTE_FIELDS, *config_load.ROUTE_POLICY_KEYS),
    "`rate_limit`": config_schema.ROUTE_RATE_LIMIT_FIELDS,
    "Download providers (`kind: download`)": config_schema.DOWNLOAD_FIELDS,
}


def _sections(markdown: str) -> dict[str, list[str]]:
    """The lines under each heading (any level), code blocks left out, keyed by the heading text."""
    sections: dict[str, list[str]] = {}
    current, fenced = "", False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"#{1,6} (.*)", line)
        if heading:
            current = heading.group(1).strip()
            sections.setdefault(current, [])
        elif not fenced:
            sections.setdefault(current, []).append(line)
    return sections


def _table_rows(lines: list[str]) -> list[list[str]]:
    """The body rows of the Markdown tables in ``lines``, as lists of stripped cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in lines if line.startswith("|")]
    return [r for r in rows if not all(set(c) <= set("-: ") for c in r)]


def _documented_keys(lines: list[str]) -> set[str]:
    """The keys named in backticks in the first column of the tables (``| `a`, `b` | ... |``)."""
    return {key for row in _table_rows(lines) for key in re.findall(r"`([^`]+)`", row[0])}


@pytest.mark.parametrize("heading", BLOCKS)
def test_every_config_key_has_its_row(heading: str) -> None:
    """Each block's table in docs/configuration.md lists exactly the keys the loader accepts there."""
    sections = _sections(CONFIG_DOC.read_text(encoding="utf-8"))
    assert heading in sections, f"docs/configuration.md has no heading {heading!r}"
    assert _documented_keys(sections[heading]) == set(BLOCKS[heading])


def test_every_environment_override_is_documented() -> None:
    """The Environment section names SIDECAR_CONFIG, each CB_* variable and the upstream override."""
    documented = _documented_keys(_sections(CONFIG_DOC.read_text(encoding="utf-8"))["Environment"])
    expected = {"SIDECAR_CONFIG", "SIDECAR_<PROVIDER>_UPSTREAM", *(v for v, _ in config_load.ENV_BREAKER)}
    assert expected <= documented


@pytest.mark.parametrize("doc", ERROR_TABLES, ids=lambda p: p.name)
def test_error_table_lists_every_code_with_its_status(doc: Path) -> None:
    """The error table of README.md and of docs/behaviour.md has one row per code, with its status."""
    lines = _sections(doc.read_text(encoding="utf-8"))[ERRORS_HEADING]
    rows = {row[1].strip("`"): int(row[0]) for row in _table_rows(lines)[1:]}
    assert rows == STATUS


def _anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub and the docs site both make them for plain headings."""
    return {re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
            for text in _sections(markdown) if text}


def test_readme_links_reach_existing_pages_and_headings() -> None:
    """Every relative link in README.md names a file of the repository, and its #anchor a heading there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(relative) >= 10
    for link in relative:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            assert anchor in _anchors(target.read_text(encoding="utf-8")), link
