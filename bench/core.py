"""The pure-core micro-benchmarks (``bench/test_core_bench.py``) as nanoseconds per call.

Run through pytest-benchmark in a child process pinned to the proxy core, so that the figures sit
next to the load figures of the same run and are taken on the same core.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_core(repo: Path, workdir: Path, cpu: int | None) -> dict[str, float] | str:
    """Median ns per call by test name, or why the run failed."""
    out = workdir / "core-bench.json"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(repo / "bench" / "test_core_bench.py"),
        "--benchmark-only",
        f"--benchmark-json={out}",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=repo, timeout=300, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        return f"pytest exit {proc.returncode}: {tail[0]}"
    data = json.loads(out.read_text())
    return {b["name"]: b["stats"]["median"] * 1e9 for b in data["benchmarks"]}
