"""Local health checks for ``/health/detailed``: a writable temp dir with room, and memory headroom.

Both are cheap, synchronous file operations; ``LocalChecks`` runs them in a worker thread and keeps
the result for a few seconds so that a scraper hammering ``/health/detailed`` costs nothing.
Paths are parameters so tests point them at files of their own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CGROUP_V1_LIMIT",
    "CGROUP_V2_LIMIT",
    "LocalChecks",
    "filesystem_check",
    "memory_check",
    "memory_limit",
    "read_rss",
]

MiB = 1024 * 1024
MIN_FREE_BYTES = 10 * MiB
MAX_MEMORY_RATIO = 0.9
CGROUP_V2_LIMIT = "/sys/fs/cgroup/memory.max"
CGROUP_V1_LIMIT = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
# cgroup v1 says "no limit" with a page-rounded 2**63-1; anything this large is no limit.
_NO_LIMIT = 1 << 60

Check = dict[str, object]


def filesystem_check(directory: str | None = None, min_free: int = MIN_FREE_BYTES) -> Check:
    """The temp dir accepts a small file (created, then deleted) and has ``min_free`` bytes free."""
    path = directory or tempfile.gettempdir()
    result: Check = {"ok": False, "path": path, "writable": False, "free_bytes": None,
                     "min_free_bytes": min_free, "error": None}
    try:
        probe = Path(path) / f".sidecar-health-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"ok")
        probe.unlink()
        result["writable"] = True
        free = shutil.disk_usage(path).free
        result["free_bytes"] = free
    except OSError as err:
        result["error"] = f"{type(err).__name__}: {err.strerror or err}"
        return result
    if free < min_free:
        result["error"] = "low_disk_space"
        return result
    result["ok"] = True
    return result


def read_rss(status_path: str = "/proc/self/status") -> int | None:
    """Resident set size in bytes from ``VmRSS`` (None where /proc is not available)."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    value, _, unit = line.split(":", 1)[1].strip().partition(" ")
                    return int(value) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        return None
    return None


def memory_limit(v2_path: str = CGROUP_V2_LIMIT, v1_path: str = CGROUP_V1_LIMIT) -> int | None:
    """The container's memory limit in bytes from cgroup v2, else v1; None when unlimited."""
    for path in (v2_path, v1_path):
        try:
            with open(path, encoding="ascii") as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw == "max":
            return None
        try:
            limit = int(raw)
        except ValueError:
            continue
        return None if limit <= 0 or limit >= _NO_LIMIT else limit
    return None


def memory_check(
    status_path: str = "/proc/self/status",
    v2_path: str = CGROUP_V2_LIMIT,
    v1_path: str = CGROUP_V1_LIMIT,
    max_ratio: float = MAX_MEMORY_RATIO,
) -> Check:
    """RSS against the cgroup limit: fails above ``max_ratio``; passes when either is unknown."""
    rss = read_rss(status_path)
    limit = memory_limit(v2_path, v1_path)
    ratio = round(rss / limit, 4) if rss is not None and limit else None
    ok = ratio is None or ratio <= max_ratio
    return {"ok": ok, "rss_bytes": rss, "limit_bytes": limit, "usage_ratio": ratio,
            "max_ratio": max_ratio, "error": None if ok else "memory_near_limit"}


class LocalChecks:
    """Runs both checks off the event loop, at most once per ``ttl`` seconds of ``clock``."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ttl: float = 2.0,
        filesystem: Callable[[], Check] = filesystem_check,
        memory: Callable[[], Check] = memory_check,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.filesystem = filesystem
        self.memory = memory
        self._cached: dict[str, Check] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def run(self) -> dict[str, Check]:
        async with self._lock:  # concurrent callers share one run instead of each starting a thread
            now = self.clock()
            if self._cached is None or now - self._at >= self.ttl:
                self._cached = await asyncio.to_thread(self._run_sync)
                self._at = now
            return self._cached

    def invalidate(self) -> None:
        self._cached = None

    def _run_sync(self) -> dict[str, Check]:
        return {"filesystem": self.filesystem(), "memory": self.memory()}
