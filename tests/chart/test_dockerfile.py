"""Structural lint of the Dockerfile (no Docker engine here): what makes the image safe to run."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.helm_chart import CHART

ROOT = CHART.parents[1]


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _one(name: str) -> str:
    found = [a for i, a in _instructions() if i == name]
    assert len(found) == 1, f"expected one {name}, got {found}"
    return found[0]


def test_multi_stage_on_python_slim() -> None:
    """Wheels are built with `pip wheel .` in a first stage; the final stage is python:3.11-slim too."""
    ins = _instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert len(froms) >= 2, froms
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    images = [args.get(f.split()[0].strip("${}"), f.split()[0]) for f in froms]
    assert all(img == "python:3.11-slim" for img in images), images
    assert re.search(r"\bAS\s+build\b", froms[0], re.I)
    starts = [n for n, (i, _) in enumerate(ins) if i == "FROM"]
    build_runs = [a for i, a in ins[starts[0]:starts[1]] if i == "RUN"]
    assert any(re.search(r"pip wheel\b.*\s\.(\s|$)", r) for r in build_runs), build_runs
    final_runs = [a for i, a in ins[starts[-1]:] if i in ("RUN", "COPY")]
    assert any("from=build" in r.lower() or "--from=build" in r.lower() for r in final_runs)
    assert any("--no-index" in r for r in final_runs), "the runtime stage installs only the built wheels"


def test_user_is_numeric_and_not_root() -> None:
    """USER is a numeric uid(:gid), not 0, so runAsNonRoot can verify it."""
    user = _one("USER")
    assert re.fullmatch(r"[0-9]+(:[0-9]+)?", user), user
    assert int(user.split(":")[0]) != 0


def test_entrypoint_is_exec_form() -> None:
    """Exec form: the sidecar is PID 1 and receives SIGTERM itself (no shell in between)."""
    assert json.loads(_one("ENTRYPOINT")) == ["sidecar"]
    assert not [a for i, a in _instructions() if i == "CMD" and not a.startswith("[")]


def test_healthcheck_uses_python_urllib_against_health() -> None:
    """HEALTHCHECK runs Python's urllib against 127.0.0.1:9901/health (no curl in the slim image)."""
    hc = _one("HEALTHCHECK")
    assert "CMD" in hc and "curl" not in hc and "wget" not in hc
    cmd = json.loads(hc[hc.index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"]
    assert "urllib" in cmd[2] and "http://127.0.0.1:9901/health" in cmd[2]
    compile(cmd[2], "<healthcheck>", "exec")


@pytest.mark.parametrize("needed", ["setup.cfg", "pyproject.toml", "README.md", "sidecar/"])
def test_dockerignore_lets_the_package_in(needed: str) -> None:
    """.dockerignore keeps the context small but lets in what `pip wheel .` needs."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines and f"!{needed}" in lines
