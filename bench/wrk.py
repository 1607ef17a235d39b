"""wrk runs and their machine-readable summary.

wrk's own text output rounds and mixes units; the Lua `done` hook prints one JSON line instead, with
the raw counters (microseconds, bytes) that the report turns into figures.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.configs import POST_BODY, REPLAY_KEY

MARKER = "BENCH_JSON "

LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
""".replace("MARKER", MARKER)


class WrkError(RuntimeError):
    """wrk failed or printed no summary."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run; `errors` counts socket errors, timeouts and non-2xx/3xx answers together."""

    requests: int
    duration_s: float
    bytes: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def mb_per_s(self) -> float:
        """Bytes read (headers included) per second, in MB (10^6)."""
        return self.bytes / self.duration_s / 1e6

    @property
    def error_ratio(self) -> float:
        return self.errors / max(1, self.requests)


_POST = f"""\
wrk.method = "POST"
wrk.body = [[{POST_BODY}]]
wrk.headers["Content-Type"] = "application/json"
"""

# A distinct Idempotency-Key per request: the run's tag (first script argument, so that the c32 and
# c1 runs against one sidecar never share a key), wrk's thread number and a per-thread counter.
_KEYED = """\
local tag, counter, threads = "run", 0, 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
init = function(args)
  tag = args[1] or tag
end
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = string.format("bench:%s:%d:%d", tag, tid or 0, counter)
  return wrk.format(nil, nil, wrk.headers, wrk.body)
end
"""

# Every request repeats one key the harness stored first: the replay path.
_REPLAY = f'wrk.headers["Idempotency-Key"] = "{REPLAY_KEY}"\n'

SCRIPTS = {"get": "", "post": _POST + _KEYED, "replay": _POST + _REPLAY}
"""Request kinds: `get` the plain GET, `post` a POST with a distinct key each, `replay` one key."""


def write_scripts(workdir: Path) -> dict[str, Path]:
    """One Lua file per request kind, each ending with the JSON summary hook."""
    paths = {}
    for kind, head in SCRIPTS.items():
        path = workdir / f"{kind}.lua"
        path.write_text(head + LUA)
        paths[kind] = path
    return paths


def run(
    url: str,
    *,
    connections: int,
    duration: float,
    script: Path,
    cpu: int | None,
    args: Sequence[str] = (),
) -> WrkResult:
    """One wrk thread (its core is shared with the upstream; two would fight over it); `args` go
    to the script's `init`."""
    argv = command(url, connections=connections, duration=duration, script=script, cpu=cpu, args=args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    raw = summary(proc.stdout)
    if raw is not None:
        return _parse(raw)
    raise WrkError(failure(proc.returncode, proc.stdout, proc.stderr))


def command(
    url: str,
    *,
    connections: int,
    duration: float,
    script: Path,
    cpu: int | None,
    timeout: float = 5.0,
    args: Sequence[str] = (),
) -> list[str]:
    """The argv of one `wrk -t1` run pinned to `cpu`; `timeout` must outlast the slowest answer."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        f"{max(1, round(timeout))}s",
        "-s",
        str(script),
        url,
    ]
    if args:
        argv += ["--", *args]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    return argv


def summary(stdout: str) -> dict[str, Any] | None:
    """The JSON line a script's `done` hook printed after `MARKER`, or None when there is none."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            raw: dict[str, Any] = json.loads(line[len(MARKER) :])
            return raw
    return None


def failure(returncode: int | None, stdout: str, stderr: str) -> str:
    """Why a run printed no summary: its exit status and the last line it wrote."""
    detail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    return f"wrk exit {returncode}: {detail[0]}"


def _parse(raw: dict[str, float]) -> WrkResult:
    errors = sum(
        int(raw[key])
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        bytes=int(raw["bytes"]),
        errors=errors,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
    )
