"""An older sidecar to measure against: its tree at a git revision, in a venv of its own, cached.

The tree is exported with `git archive` (not `git worktree add`, which would register a worktree in
the shared repository's metadata) into `bench/results/baseline/<sha>/src`, and installed with
`pip install -e` into `.../venv`, constrained to the library versions of the interpreter running the
bench: the two sidecars then differ only in their own code, not in aiohttp or uvloop. A stamp file
records what was installed; a second run with the same revision and libraries reuses it in
milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bench.procs import StartError

DEFAULT_REV = "4f8681d"  # the last commit with the flat sidecar/ package


class BaselineError(StartError):
    """The older tree could not be exported or installed; the message says which step failed."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """A ready older sidecar: run `python -m sidecar` with `python`, from `src`."""

    rev: str
    sha: str
    src: Path
    python: Path


def prepare(repo: Path, rev: str, cache_root: Path) -> Baseline:
    """Export and install `rev` under `cache_root`, or reuse what an earlier run left there."""
    sha = _run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"], "resolve").strip()
    dir_ = cache_root / sha[:12]
    src, venv = dir_ / "src", dir_ / "venv"
    python = venv / "bin" / "python"
    constraints = _constraints()
    stamp_text = f"{sha}\n{sys.version}\n{hashlib.sha256(constraints.encode()).hexdigest()}\n"
    stamp = dir_ / "installed"
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_text:
        return _checked(Baseline(rev, sha, src, python))
    shutil.rmtree(dir_, ignore_errors=True)
    src.mkdir(parents=True)
    _export(repo, sha, src)
    (dir_ / "constraints.txt").write_text(constraints)
    _run([sys.executable, "-m", "venv", str(venv)], "venv")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "-c", str(dir_ / "constraints.txt"), "-e", str(src)], "pip install")
    baseline = _checked(Baseline(rev, sha, src, python))
    stamp.write_text(stamp_text)
    return baseline


def _export(repo: Path, sha: str, dest: Path) -> None:
    """The tree of `sha` into `dest`, as `git archive` gives it (tracked files only)."""
    proc = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", sha],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise BaselineError(f"git archive {sha[:12]}: {proc.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")


def _constraints() -> str:
    """`pip freeze` of the running interpreter, editable installs (the sidecar itself) left out."""
    out = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], "pip freeze")
    return "".join(line + "\n" for line in out.splitlines() if "==" in line)


def _checked(baseline: Baseline) -> Baseline:
    """Fail now, not per repeat, unless `python -m sidecar` from `src` imports the older tree."""
    where = _run([str(baseline.python), "-c", "import sidecar; print(sidecar.__file__)"], "import",
                 cwd=baseline.src).strip()
    if not Path(where).resolve().is_relative_to(baseline.src.resolve()):
        raise BaselineError(f"import sidecar found {where}, not the tree in {baseline.src}")
    return baseline


def _run(argv: list[str], step: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    except OSError as exc:
        raise BaselineError(f"{step}: {exc}") from exc
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise BaselineError(f"{step} failed ({proc.returncode}): {tail}")
    return proc.stdout
